"""Tests of tilecat.latent: VAE, noise model, outlier score, SSIM, anomalies, similar, head."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from test_photoz_fixtures import BANDS, infer_config, write_cutouts, write_stamp_store  # noqa: E402

from tilecat.errors import InputError  # noqa: E402
from tilecat.infer import run_infer  # noqa: E402
from tilecat.latent.anomalies import KINDS, inject  # noqa: E402
from tilecat.latent.model import LatentModule, build, core_disc  # noqa: E402
from tilecat.latent.noise import asinh_variance, chi2_per_pixel, nll_per_stamp  # noqa: E402
from tilecat.latent.outlier import (  # noqa: E402
    chi2_score,
    combined_score,
    fit_gaussian,
    fit_standardisation,
    gaussian_to_card,
    mahalanobis,
)
from tilecat.latent.similar import similar  # noqa: E402
from tilecat.latent.ssim import ssim, ssim_stamps  # noqa: E402
from tilecat.models import save_model  # noqa: E402
from tilecat.survey import tile_paths  # noqa: E402

SIZE = 32
ARCH = {"n_latent": 40, "enc_widths": [8, 16, 16], "enc_kernels": [5, 3, 3],
        "dec_widths": [16, 8, 8]}


def _card(n_latent: int = 40) -> dict:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n_latent, n_latent)) * 0.1
    return {"name": "vae", "version": "0", "arch": ARCH,
            "input": {"bands": BANDS, "stamp_size": SIZE, "pixel_scale": 0.262},
            "latent_distribution": gaussian_to_card(np.zeros(n_latent),
                                                    np.eye(n_latent) + a @ a.T)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("vae")
    save_model(build(_card()), _card(), d)
    return d


# ---------------------------------------------------------------- noise, VAE
def test_noise_model_limits():
    x = torch.tensor([0.0, np.arcsinh(1e4)])
    v = asinh_variance(x, eps=0.05)
    assert float(v[0]) == pytest.approx(1.0)
    assert float(v[1]) == pytest.approx(0.05**2, rel=1e-3)
    x = torch.zeros(2, 1, 4, 4)
    r = torch.ones(2, 1, 4, 4)
    torch.testing.assert_close(chi2_per_pixel(x, r), torch.ones(2))


def test_flux_likelihood_unbiased_on_noise():
    rng = np.random.default_rng(0)
    # sky: flux N(0, 1) about a zero model -> chi^2 per pixel 1 (flux), ~2.2 (asinh at x)
    x = torch.from_numpy(np.arcsinh(rng.normal(size=(4, 4, 64, 64)))).float()
    zero = torch.zeros_like(x)
    assert float(chi2_per_pixel(x, zero, likelihood="flux").mean()) == pytest.approx(1.0, abs=0.03)
    assert float(chi2_per_pixel(x, zero, likelihood="asinh").mean()) > 1.8
    # a faint pixel (true S/N 2): the flux NLL of a constant model is least at the truth
    s = 2.0 + rng.normal(size=(1, 1, 200, 200))
    xs = torch.from_numpy(np.arcsinh(s)).float()
    grid = np.linspace(1.0, 3.0, 41)
    nll = [float(nll_per_stamp(xs, torch.full_like(xs, float(np.arcsinh(m))))[0]) for m in grid]
    assert abs(grid[int(np.argmin(nll))] - 2.0) <= 0.1
    # chi^2 with the fractional floor: 10% error on a bright pixel -> (0.1 / eps)^2
    b = torch.full((1, 1, 2, 2), float(np.arcsinh(1e4)))
    r = torch.full_like(b, float(np.arcsinh(1.1e4)))
    assert float(chi2_per_pixel(b, r, 0.05, "flux")[0]) == pytest.approx(
        (0.1e4) ** 2 / (1 + (0.05 * 1.1e4) ** 2), rel=1e-3)
    # an unmodelled bright pixel: the chi^2 counts it against the background noise, the
    # training loss at most (relative error / eps)^2 (floor at the observed flux)
    z = torch.zeros_like(b)
    assert float(chi2_per_pixel(b, z, 0.05, "flux")[0]) == pytest.approx(1e8, rel=1e-3)
    assert float(nll_per_stamp(b, z, 0.05, "flux")[0]) == pytest.approx(
        0.5 * 4 * 1e8 / (1 + (0.05 * 1e4) ** 2), rel=1e-3)
    # "flux_model" (variance at the model, with its log term): on the sky = 0.5 sum s^2
    torch.testing.assert_close(nll_per_stamp(x, zero, 0.05, "flux_model"),
                               0.5 * (torch.sinh(x) ** 2).flatten(1).sum(1))
    with pytest.raises(ValueError):
        chi2_per_pixel(b, r, likelihood="poisson")
    with pytest.raises(ValueError):
        nll_per_stamp(b, r, likelihood="poisson")


def test_encoding_deterministic_and_batch_invariant():
    torch.manual_seed(2)
    m = build(_card()).eval()
    x = torch.randn(6, 4, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        a, b, c = m(x), m(x), m(x[:2])
    assert a["latent"].shape == (6, 40) and a["recon_chi2"].shape == (6,)
    assert torch.equal(a["latent"], b["latent"]) and torch.equal(a["recon_chi2"], b["recon_chi2"])
    assert torch.equal(a["latent"][:2], c["latent"])
    assert torch.equal(a["recon_chi2"][:2], c["recon_chi2"])


def test_core_chi2_is_the_central_disc_mean():
    torch.manual_seed(3)
    vae = build(_card()).vae.eval()
    disc = core_disc(SIZE, 5.0)
    # pixel (16, 16) is the centre; radius 5: the 69 pixel centres with dy^2 + dx^2 < 25
    assert disc[SIZE // 2, SIZE // 2] == 1 and int(disc.sum()) == 69
    yy, xx = np.mgrid[:SIZE, :SIZE]
    want = ((yy - SIZE // 2) ** 2 + (xx - SIZE // 2) ** 2 < 25).astype(np.float32)
    np.testing.assert_array_equal(disc.numpy(), want)
    m = LatentModule(vae, 0.05, "flux", core_radius=5.0).eval()
    x = torch.randn(3, 4, SIZE, SIZE)
    with torch.inference_mode():
        out = m(x)
        r = vae.decode(vae.encode(x)[0])
    from tilecat.latent.noise import chi2_map

    c = chi2_map(x, r, 0.05, "flux").numpy()
    np.testing.assert_allclose(out["recon_chi2"].numpy(), c.reshape(3, -1).mean(1), rtol=1e-5)
    np.testing.assert_allclose(out["recon_chi2_core"].numpy(),
                               c[:, :, want > 0].reshape(3, -1).mean(1), rtol=1e-5)
    # light added outside the disc leaves the core chi^2 alone, inside it raises it
    y = x.clone()
    y[:, 1, 0, 0] += 200.0
    with torch.inference_mode():
        far = m(y)
    assert float((far["recon_chi2"] - out["recon_chi2"]).min()) > 0
    z = x.clone()
    z[:, 1, SIZE // 2, SIZE // 2 + 2] += 200.0
    with torch.inference_mode():
        near = m(z)
    assert float((near["recon_chi2_core"] - out["recon_chi2_core"]).min()) > 0
    # a card without a core radius gives no core output (earlier cards)
    with torch.inference_mode():
        assert "recon_chi2_core" not in build(_card()).eval()(x)


# ---------------------------------------------------------------- outlier score
def test_chi2_score_by_hand():
    from scipy.stats import norm

    st = fit_standardisation(np.ones(3), np.exp([0.4, 0.5, 0.6]), core_radius_px=16)
    assert st["score"] == "chi2_core" and st["chi2_statistic"] == "recon_chi2_core"
    assert st["core_radius_px"] == 16.0 and st["log_chi2_median"] == pytest.approx(0.5)
    exact = {"log_chi2_median": 0.5, "log_chi2_sd": 0.2, "score": "chi2_core"}
    got = chi2_score(np.exp([0.5, 0.5 + 0.6, 0.5 - 0.6, 80.0]), exact)
    np.testing.assert_allclose(got[:3], -np.log10(norm.sf([0.0, 3.0, -3.0])), rtol=1e-9)
    assert np.isfinite(got[3]) and got[3] > got[1]


def test_mahalanobis_by_hand():
    lat = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(mahalanobis(lat, np.zeros(2), np.eye(2)), [5.0, 0.0, 1.0])
    np.testing.assert_allclose(mahalanobis(lat, np.array([1.0, 0.0]), np.diag([4.0, 16.0])),
                               [np.sqrt(1 + 1), 0.5, 0.0])
    z = np.random.default_rng(0).normal(size=(5000, 3)) * [1, 2, 3] + [1, 0, -1]
    mean, cov = fit_gaussian(z)
    np.testing.assert_allclose(mean, [1, 0, -1], atol=0.1)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), [1, 2, 3], rtol=0.05)
    d = mahalanobis(z, mean, cov)
    assert np.mean(d**2) == pytest.approx(3.0, rel=0.05)  # chi^2 with 3 dof
    # a row's score does not depend on the other rows
    assert mahalanobis(z[:1], mean, cov)[0] == d[0]


def test_combined_score_by_hand():
    rng = np.random.default_rng(3)
    d = np.exp(rng.normal(2.0, 0.1, 4000))
    c = np.exp(rng.normal(0.5, 0.2, 4000))
    st = fit_standardisation(d, c)
    assert st["log_distance_median"] == pytest.approx(2.0, abs=0.01)
    assert st["log_distance_sd"] == pytest.approx(0.1, rel=0.05)
    assert st["log_chi2_sd"] == pytest.approx(0.2, rel=0.05)
    exact = {"log_distance_median": 2.0, "log_distance_sd": 0.1,
             "log_chi2_median": 0.5, "log_chi2_sd": 0.2}
    # at both medians: p = 0.5 each, X = 4 ln 2, P = exp(-X/2)(1 + X/2)
    x = 4 * np.log(2)
    want = -np.log10(np.exp(-x / 2) * (1 + x / 2))
    got = combined_score(np.array([np.exp(2.0)]), np.array([np.exp(0.5)]), exact)
    assert got[0] == pytest.approx(want, rel=1e-9)
    # 3 sigma above in chi^2 only, median distance
    from scipy.stats import chi2, norm

    p = norm.sf(3.0)
    want3 = -np.log10(chi2.sf(-2 * (np.log(0.5) + np.log(p)), 4))
    got3 = combined_score(np.array([np.exp(2.0)]), np.array([np.exp(0.5 + 0.6)]), exact)
    assert got3[0] == pytest.approx(want3, rel=1e-6)
    # monotone in each input, finite for extreme anomalies, row-independent
    s = combined_score(np.exp([2.0, 2.3, 2.3, 50.0]), np.exp([0.5, 0.5, 1.5, 80.0]), exact)
    assert s[0] < s[1] < s[2] < s[3] and np.isfinite(s[3])
    assert combined_score(np.exp([2.3]), np.exp([1.5]), exact)[0] == s[2]


# ---------------------------------------------------------------- SSIM
def test_ssim_hand_cases():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(32, 32))
    assert ssim(a, a, 8.0) == pytest.approx(1.0)
    # constant images: SSIM = (2 a b + C1) / (a^2 + b^2 + C1) (the variance terms cancel)
    L = 10.0
    c1 = (0.01 * L) ** 2
    val = ssim(np.full((20, 20), 2.0), np.full((20, 20), 3.0), L)
    assert val == pytest.approx((2 * 2 * 3 + c1) / (4 + 9 + c1))
    # noise vs its smooth version is far from 1
    assert ssim(a, np.zeros_like(a), 8.0) < 0.1
    with pytest.raises(ValueError):
        ssim(a, a[:10], 1.0)


def test_ssim_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 40))
    b = a + 0.5 * rng.normal(size=(40, 40))
    ref = skm.structural_similarity(a, b, data_range=6.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    assert ssim(a, b, 6.0) == pytest.approx(ref, abs=1e-6)
    x = np.stack([a, b])[None]
    assert ssim_stamps(x, x)[0] == pytest.approx(1.0)


# ---------------------------------------------------------------- anomalies
def test_anomalies_add_light_deterministically():
    from test_photoz_fixtures import blob_stamps

    d = blob_stamps(6, SIZE, seed=3)
    x, s = d["stamps"], d["sigma"]
    for kind in KINDS:
        y1 = inject(x, s, kind, seed=1, pool=x, pool_sigma=s)
        y2 = inject(x, s, kind, seed=1, pool=x, pool_sigma=s)
        assert np.array_equal(y1, y2) and y1.dtype == np.float32
        added = np.sinh(y1.astype(float)) - np.sinh(x.astype(float))
        assert np.all(added.reshape(6, -1).sum(1) > 5.0), kind  # light was added
        if kind == "blend3":  # footprints of two galaxies (with their noise) only
            assert np.mean(added == 0) > 0.3, kind
        else:
            assert np.all(added > -1e-3), kind  # only light added
    with pytest.raises(ValueError):
        inject(x, s, "unicorn", 0)


# ---------------------------------------------------------------- similar
def _latent_table(path, n=30, dim=40):
    rng = np.random.default_rng(4)
    lat = rng.normal(size=(n, dim)).astype(np.float32)
    ids = np.arange(1_000_001, 1_000_001 + n, dtype=np.int64)
    t = pa.table({"object_id": ids,
                  "latent": pa.FixedSizeListArray.from_arrays(pa.array(lat.ravel()), dim),
                  "ra": np.linspace(10, 11, n)})
    pq.write_table(t, path)
    return ids, lat


def test_similar_nearest_first(tmp_path):
    ids, lat = _latent_table(tmp_path / "c.parquet")
    out = similar(tmp_path / "c.parquet", int(ids[7]), k=5)
    assert out.column_names == ["rank", "object_id", "distance", "ra"]
    got = out["object_id"].to_numpy()
    d = np.linalg.norm(lat - lat[7], axis=1)
    assert got[0] == ids[7] and out["distance"].to_numpy()[0] == 0.0
    assert got.tolist() == ids[np.argsort(d, kind="stable")[:5]].tolist()
    assert np.all(np.diff(out["distance"].to_numpy()) >= 0)
    assert out["rank"].to_numpy().tolist() == [0, 1, 2, 3, 4]
    assert similar(tmp_path / "c.parquet", int(ids[0]), k=100).num_rows == 30
    with pytest.raises(InputError, match="not in the catalog"):
        similar(tmp_path / "c.parquet", 5, k=3)
    pq.write_table(pa.table({"object_id": ids}), tmp_path / "nolat.parquet")
    with pytest.raises(InputError, match="latent"):
        similar(tmp_path / "nolat.parquet", int(ids[0]))


# ---------------------------------------------------------------- head in the engine
def test_engine_writes_latent_columns(tmp_path, model_dir):
    tables = []
    for bs in (1, 64):
        cfg = infer_config(tmp_path / f"b{bs}", ["latent"], {"latent": str(model_dir)}, bs)
        ids = write_cutouts(cfg, "t0", 15, SIZE)
        run_infer(cfg, "t0")
        tables.append(pq.read_table(tile_paths(cfg, "t0")["infer"]))
    t = tables[0]
    assert t.equals(tables[1])
    assert t.column_names == ["object_id", "latent", "latent_outlier_score",
                              "latent_mahalanobis", "recon_chi2"]
    assert t.schema.field("latent").type == pa.list_(pa.float32(), 40)
    assert t.schema.field("latent_outlier_score").type == pa.float32()
    assert t.schema.field("recon_chi2").type == pa.float32()
    assert t["object_id"].to_numpy().tolist() == sorted(ids.tolist())
    lat = np.array(t["latent"].to_pylist(), np.float32)
    card = _card()
    want = mahalanobis(lat, np.array(card["latent_distribution"]["mean"]),
                       np.array(card["latent_distribution"]["cov"]))
    np.testing.assert_allclose(t["latent_outlier_score"].to_numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(t["latent_mahalanobis"].to_numpy(), want, rtol=1e-5)
    assert np.all(t["recon_chi2"].to_numpy() > 0)
    # similar() reads infer.parquet directly
    out = similar(tile_paths(cfg, "t0")["infer"], int(ids[3]), k=4)
    assert out["object_id"].to_numpy()[0] == ids[3] and "recon_chi2" in out.column_names


@pytest.mark.parametrize("kind", ["combined", "chi2_core"])
def test_head_score_from_card(tmp_path, kind):
    from tilecat.latent.head import HEAD, SCORE_DESCRIPTIONS

    torch.manual_seed(0)
    standard = {"log_distance_median": 1.5, "log_distance_sd": 0.3,
                "log_chi2_median": 0.1, "log_chi2_sd": 0.2}
    if kind == "chi2_core":
        standard.update(score="chi2_core", chi2_statistic="recon_chi2_core", core_radius_px=6.0)
    card = {**_card(), "outlier_standardisation": standard}
    card["arch"] = {**ARCH, "likelihood": "flux"}
    save_model(build(card), card, tmp_path / "m")
    lh = HEAD.load({"infer": {"model_dirs": {"latent": str(tmp_path / "m")}}},
                   torch.device("cpu"))
    assert lh.module.likelihood == "flux"
    assert [c.description for c in lh.columns if c.name == "latent_outlier_score"] == [
        SCORE_DESCRIPTIONS[kind]]
    x = torch.randn(5, 4, SIZE, SIZE)
    with torch.inference_mode():
        raw = {k: v.numpy() for k, v in lh.module(x).items()}
    assert ("recon_chi2_core" in raw) == (kind == "chi2_core")
    out = HEAD.postprocess(raw, lh)
    d = mahalanobis(raw["latent"], lh.extra["mean"], lh.extra["cov"])
    want = (combined_score(d, raw["recon_chi2"], standard) if kind == "combined"
            else chi2_score(raw["recon_chi2_core"], standard))
    np.testing.assert_allclose(out["latent_outlier_score"], want, rtol=1e-6)
    np.testing.assert_allclose(out["latent_mahalanobis"], d, rtol=1e-6)
    assert out["latent_outlier_score"].dtype == np.float32


def test_train_vae_smoke(tmp_path):
    from tilecat.latent.train import train_vae
    from tilecat.models import load_model

    store = write_stamp_store(tmp_path / "s.zarr", 96, SIZE, seed=6, n_artifacts=5)
    card = train_vae(store, tmp_path / "m", epochs=2, batch_size=32, threads=1,
                     arch=ARCH, kl_warmup=1.0, log=lambda s: None)
    assert card["training"]["data"]["n_galaxies"] == 96
    ld = card["latent_distribution"]
    assert len(ld["mean"]) == 40 and np.array(ld["cov"]).shape == (40, 40)
    m = card["evaluation"]["metrics"]
    assert -1 <= m["ssim_vs_noisy_mean"] <= 1 and m["recon_chi2_median"] > 0
    assert set(card["outlier_standardisation"]) >= {"log_distance_median", "log_chi2_sd"}
    assert card["outlier_standardisation"]["score"] == "chi2_core"
    assert card["outlier_standardisation"]["core_radius_px"] == 16.0
    assert card["arch"]["likelihood"] == "flux" and len(card["kl_per_latent_validation"]) == 40
    module, _ = load_model(tmp_path / "m", build)
    assert module.vae.n_latent == 40 and module.likelihood == "flux"
    # warm start from the first model
    card2 = train_vae(store, tmp_path / "m2", epochs=1, batch_size=32, threads=1,
                      init=tmp_path / "m", kl_warmup=0.0, log=lambda s: None)
    assert card2["training"]["init"]["sha256"] == card["sha256"]
    assert card2["arch"] == card["arch"]
