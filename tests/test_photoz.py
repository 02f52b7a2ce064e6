"""Tests of tilecat.photoz: bin grid, PDF summaries, RAIL metrics, kNN baseline, photometry."""

from __future__ import annotations

import numpy as np
import pytest

from tilecat.errors import ModelError
from tilecat.photoz.grid import ZGrid
from tilecat.photoz.knn import KNNPhotoZ, select_k
from tilecat.photoz.metrics import crps, pdf_metrics, pit, point_metrics
from tilecat.photoz.photometry import (aperture_flux, aperture_noise, aperture_weights,
                                       colour_features, luptitude)
from tilecat.photoz.summary import cdf_at, normalise, pdf_summary, quantile

GRID = ZGrid(0.0, 1.5, 60)


def _random_pdfs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = GRID.centres
    mu = rng.uniform(0.05, 1.4, (n, 1))
    sd = rng.uniform(0.01, 0.3, (n, 1))
    p = np.exp(-0.5 * ((c - mu) / sd) ** 2) + 0.3 * rng.random((n, 1)) * np.exp(
        -0.5 * ((c - rng.uniform(0, 1.5, (n, 1))) / 0.05) ** 2)
    return p / p.sum(1, keepdims=True)


# ---------------------------------------------------------------- grid
def test_grid_edges_and_two_hot_mean():
    assert GRID.edges[0] == 0.0 and GRID.edges[-1] == 1.5 and GRID.width == pytest.approx(0.025)
    np.testing.assert_allclose(GRID.centres[:2], [0.0125, 0.0375])
    z = np.array([0.0125, 0.02, 0.5, 1.4875, 0.001, 1.6])
    t = GRID.two_hot(z)
    assert t.shape == (6, 60) and np.all(t >= 0)
    np.testing.assert_allclose(t.sum(1), 1.0, atol=1e-6)
    mean = t @ GRID.centres
    np.testing.assert_allclose(mean[:4], z[:4], atol=1e-6)  # exact inside the centres' range
    assert mean[4] == pytest.approx(GRID.centres[0]) and mean[5] == pytest.approx(GRID.centres[-1])
    assert ZGrid.from_meta(GRID.to_meta()) == GRID
    with pytest.raises(ModelError):
        ZGrid(1.0, 0.5, 10)


# ---------------------------------------------------------------- summaries
def test_summary_of_one_bin_pdf_by_hand():
    p = np.zeros((1, 60))
    p[0, 20] = 1.0  # bin [0.5, 0.525)
    s = pdf_summary(p, GRID)
    assert s["z_mean"][0] == pytest.approx(0.5125)
    assert s["z_median"][0] == pytest.approx(0.5125)
    assert s["z_mode"][0] == pytest.approx(0.5125)
    assert s["z_std"][0] == pytest.approx(0.025 / np.sqrt(12))
    assert s["z_odds"][0] == pytest.approx(1.0)


def test_summary_two_bins_by_hand():
    p = np.zeros((1, 60))
    p[0, 10] = 0.25  # [0.25, 0.275)
    p[0, 30] = 0.75  # [0.75, 0.775)
    s = pdf_summary(p, GRID)
    assert s["z_mean"][0] == pytest.approx(0.25 * 0.2625 + 0.75 * 0.7625)
    # CDF reaches 0.5 one third into bin 30
    assert s["z_median"][0] == pytest.approx(0.75 + 0.025 / 3)
    assert s["z_mode"][0] == pytest.approx(0.7625)
    var = 0.25 * (0.2625 - s["z_mean"][0]) ** 2 + 0.75 * (0.7625 - s["z_mean"][0]) ** 2
    assert s["z_std"][0] == pytest.approx(np.sqrt(var + 0.025**2 / 12))
    assert s["z_odds"][0] == pytest.approx(0.75)  # window +-0.106 excludes bin 10


def test_summaries_consistent_with_pdf():
    p = _random_pdfs(200)
    s = pdf_summary(p, GRID)
    np.testing.assert_allclose(cdf_at(p, GRID, s["z_median"]), 0.5, atol=1e-9)
    np.testing.assert_allclose(s["z_mean"], p @ GRID.centres, atol=1e-12)
    assert np.all(p[np.arange(200), np.floor(s["z_mode"] / GRID.width).astype(int)]
                  == p.max(1))
    assert np.all((s["z_odds"] >= 0) & (s["z_odds"] <= 1) & (s["z_std"] > 0))
    q = np.random.default_rng(1).random(200)
    np.testing.assert_allclose(cdf_at(p, GRID, quantile(p, GRID, q)), q, atol=1e-9)
    assert np.all(cdf_at(p, GRID, -1.0) == 0) and np.allclose(cdf_at(p, GRID, 2.0), 1)


def test_normalise_clips_and_rescales():
    p = normalise(np.array([[1.0, -1.0, 3.0], [0.0, 0.0, 0.0], [np.nan, 1.0, 1.0]]))
    np.testing.assert_allclose(p, [[0.25, 0, 0.75], [1 / 3] * 3, [0, 0.5, 0.5]])


# ---------------------------------------------------------------- metrics
def test_point_metrics_by_hand():
    zt = np.zeros(10)
    zp = np.array([0.0, 0.01, -0.01, 0.02, -0.02, 0.03, 0.2, -0.3, 0.05, 0.0])
    m = point_metrics(zp, zt)
    assert m["bias"] == pytest.approx(np.median(zp))  # 0.005
    dev = np.abs(zp - 0.005)
    assert m["sigma_nmad"] == pytest.approx(1.4826 * np.median(dev))
    q75, q25 = np.percentile(zp, [75, 25])
    assert m["sigma_iqr"] == pytest.approx((q75 - q25) / 1.349)
    assert m["outlier_frac_015"] == pytest.approx(0.2)  # 0.2 and -0.3
    cut = max(0.06, 3 * m["sigma_iqr"])
    assert m["outlier_frac_rail"] == pytest.approx(np.mean(np.abs(zp) > cut))
    # (1 + z) scaling
    m2 = point_metrics(np.array([1.28, 1.32]), np.array([1.0, 1.0]))
    assert m2["outlier_frac_015"] == pytest.approx(0.5)  # dz = 0.14 and 0.16
    assert point_metrics(np.array([]), np.array([]))["n"] == 0


def test_crps_by_hand():
    p = np.zeros((3, 60))
    p[:, 20] = 1.0  # uniform on [0.5, 0.525)
    zt = np.array([0.5125, 1.0, 0.5])
    c = crps(p, GRID, zt)
    w = 0.025
    assert c[0] == pytest.approx(w / 12)  # true z at the centre of a uniform
    assert c[1] == pytest.approx(0.025 / 3 + (1.0 - 0.525))  # int F^2 over the bin + the gap
    assert c[2] == pytest.approx(w / 3)  # at the lower edge: integral of (1 - u)^2
    # outside the grid
    assert crps(p[:1], GRID, np.array([2.0]))[0] == pytest.approx(0.025 / 3 + 2.0 - 0.525)


def test_pit_of_calibrated_pdfs_is_uniform():
    rng = np.random.default_rng(3)
    n = 3000
    mu = rng.uniform(0.3, 1.2, n)
    sd = 0.05
    c = GRID.centres
    p = np.exp(-0.5 * ((c - mu[:, None]) / sd) ** 2)
    p /= p.sum(1, keepdims=True)
    z_cal = mu + sd * rng.normal(size=n)  # truths drawn from the PDFs
    m = pdf_metrics(p, GRID, z_cal)
    assert m["pit_ks"] < 0.04 and abs(sum(m["pit_hist"]) - 1) < 1e-4
    m_bad = pdf_metrics(p, GRID, mu + 3 * sd * rng.normal(size=n))  # PDFs 3x too narrow
    assert m_bad["pit_ks"] > 0.15 and m_bad["crps"] > m["crps"]
    v = pit(p[:1], GRID, np.array([mu[0]]))
    assert v[0] == pytest.approx(0.5, abs=0.05)


# ---------------------------------------------------------------- kNN
def test_knn_by_hand():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]])
    z = np.array([0.1, 0.2, 0.3, 0.9])
    knn = KNNPhotoZ(n_neighbors=1).fit(x, z)
    np.testing.assert_allclose(knn.predict(x), z)
    zp = KNNPhotoZ(n_neighbors=2, weights="uniform").fit(x, z).predict(np.array([[0.9, 0.0]]))
    assert zp[0] == pytest.approx(0.15)  # mean of (1, 0) and (0, 0) after standardising
    assert np.isnan(knn.predict(np.array([[np.nan, 0.0]]))[0])


def test_knn_on_real_sdss_colours():
    """kNN on real SDSS MGS ugriz (package data) reaches the published ~0.02 scatter."""
    from importlib import resources

    path = resources.files("tilecat").joinpath("data", "sdss_mgs.tsv")
    tab = np.genfromtxt(str(path), names=True, delimiter="\t")
    mags = np.stack([tab[b] for b in "ugriz"], 1)
    x = np.column_stack([mags[:, 2], -np.diff(mags, axis=1)])
    z = tab["zs"]
    ok = np.isfinite(x).all(1) & (mags < 30).all(1)
    x, z = x[ok], z[ok]
    tr, te = slice(0, 4000), slice(4000, None)
    k, scores = select_k(x[tr][:3000], z[tr][:3000], x[tr][3000:], z[tr][3000:])
    m = point_metrics(KNNPhotoZ(k).fit(x[tr], z[tr]).predict(x[te]), z[te])
    assert m["sigma_nmad"] < 0.025 and m["outlier_frac_015"] < 0.01 and abs(m["bias"]) < 0.005
    assert k in scores


# ---------------------------------------------------------------- photometry
def test_aperture_weights_area_and_flux():
    w = aperture_weights(32, [2.0, 5.0])
    assert w.shape == (2, 32, 32)
    np.testing.assert_allclose(w.sum((1, 2)), np.pi * np.array([4.0, 25.0]), rtol=0.02)
    assert w[0, 16, 16] == 1.0 and w[0, 16, 19] == 0.0  # centred on pixel (16, 16)
    x = np.full((1, 2, 32, 32), np.arcsinh(0.5), np.float32)  # F / sigma = 0.5 everywhere
    sigma = np.array([[2.0, 4.0]])
    f = aperture_flux(x, sigma, w)
    np.testing.assert_allclose(f[0, :, 1], w[1].sum() * 0.5 * np.array([2.0, 4.0]), rtol=1e-5)
    np.testing.assert_allclose(aperture_noise(sigma, w)[0, 0],
                               2.0 * np.sqrt((w ** 2).sum((1, 2))))


def test_luptitude_matches_magnitude_when_bright():
    assert luptitude(np.array([100.0]), np.array([0.01]))[0] == pytest.approx(
        22.5 - 2.5 * np.log10(100.0), abs=1e-6)
    assert np.isfinite(luptitude(np.array([-1.0, 0.0]), np.array([0.1, 0.1]))).all()


def test_colour_features_recover_blob_colours():
    from test_photoz_fixtures import blob_stamps

    d = blob_stamps(30, 32, seed=2)
    f, names = colour_features(d["stamps"], d["sigma"], ["g", "r", "i", "z"], radius=8.0)
    assert names == ["mag_r", "g-r", "r-i", "i-z"]
    true = np.column_stack([d["mags"][:, 0] - d["mags"][:, 1], d["mags"][:, 1] - d["mags"][:, 2]])
    # same profile in every band: aperture colours equal total colours up to noise
    assert np.median(np.abs(f[:, 1:3] - true)) < 0.05


def test_auto_photometry_of_blobs():
    from test_photoz_fixtures import blob_stamps

    from tilecat.photoz.catalogphot import auto_photometry, catalog_features

    d = blob_stamps(12, 48, seed=4)
    flux, err = auto_photometry(d["stamps"], d["sigma"].astype(np.float64))
    true = 10 ** (-0.4 * (d["mags"] - 22.5))
    assert np.all(err > 0)
    # Kron apertures hold ~95 % of a Gaussian's light
    ratio = np.median(flux / true)
    assert 0.85 < ratio < 1.05
    f, names = catalog_features(flux, err, ["g", "r", "i", "z"])
    assert names[0] == "mag_r" and np.median(np.abs(f[:, 1] - (d["mags"][:, 0] - d["mags"][:, 1]))
                                              ) < 0.05


# ---------------------------------------------------------------- catalog vs truth
def test_match_sky_one_to_one():
    from tilecat.photoz.match import match_sky

    t_ra = np.array([10.0, 10.001, 10.01])
    t_dec = np.array([0.0, 0.0, 0.0])
    ra = np.array([10.0 + 0.2 / 3600, 10.0 + 0.5 / 3600, 10.001, 10.02])
    dec = np.zeros(4)
    idx, sep, ok = match_sky(ra, dec, t_ra, t_dec, max_sep=1.0)
    assert idx.tolist() == [0, 0, 1, -1]
    assert ok.tolist() == [True, False, True, False]  # second is not the nearest to truth 0
    assert sep[0] == pytest.approx(0.2, abs=1e-3)


def test_score_catalog(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tilecat.parquetmeta import with_metadata
    from tilecat.photoz.grid import META_KEY
    from tilecat.photoz.match import score_catalog

    rng = np.random.default_rng(0)
    n = 300
    ra, dec = rng.uniform(150, 150.1, n), rng.uniform(2, 2.1, n)
    z = rng.uniform(0.1, 1.2, n)
    truth = pa.table({"ra": ra, "dec": dec, "redshift": z, "is_star": np.arange(n) < 10,
                      "mag_r": rng.uniform(18, 24, n)})
    pq.write_table(truth, tmp_path / "truth.parquet")
    zp = z + 0.02 * (1 + z) * rng.normal(size=n)
    pdf = np.exp(-0.5 * ((GRID.centres - zp[:, None]) / (0.02 * (1 + zp[:, None]))) ** 2)
    pdf /= pdf.sum(1, keepdims=True)
    cat = pa.table({"ra": ra + 0.1 / 3600, "dec": dec, "z_median": zp.astype(np.float32),
                    "z_pdf": pa.array(list(pdf.astype(np.float16)), pa.list_(pa.float16()))})
    cat = with_metadata(cat, {}, {}, {META_KEY: GRID.to_meta()})
    pq.write_table(cat, tmp_path / "cat.parquet")
    m = score_catalog(tmp_path / "cat.parquet", [tmp_path / "truth.parquet"])
    assert m["n_matched"] == n - 10  # stars dropped
    assert m["sigma_nmad"] == pytest.approx(0.02, rel=0.15)
    assert m["pit_ks"] < 0.1 and m["crps"] > 0
    assert sum(r["n"] for r in m["by_mag"]) == n - 10


def test_json_safe():
    from tilecat.photoz.metrics import json_safe

    out = json_safe({"a": float("nan"), "b": [np.float32(1.5), np.inf], "c": np.int64(3)})
    assert out == {"a": None, "b": [1.5, None], "c": 3}
