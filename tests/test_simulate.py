"""Tests of the survey simulator (tilecat.simulate, SIM-A part): small tiles, few objects."""

from __future__ import annotations

import dataclasses
import filecmp
from pathlib import Path

import numpy as np
import pytest

galsim = pytest.importorskip("galsim")
sep = pytest.importorskip("sep")

from astropy.io import fits  # noqa: E402
from astropy.wcs import WCS  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from tilecat.errors import ConfigError  # noqa: E402
from tilecat.simulate.config import load_sim_config  # noqa: E402
from tilecat.simulate.galaxies import build_galaxy, shape_truth, spiral_arm_knots  # noqa: E402
from tilecat.simulate.population import GalaxySpec, draw_galaxies, labels  # noqa: E402
from tilecat.simulate.survey import simulate_survey  # noqa: E402
from tilecat.simulate.tile import render_tile  # noqa: E402

NO_DEFECTS = {
    "cosmic_ray_per_mpix": 0.0, "hot_pixel_per_mpix": 0.0, "hot_column_per_tile": 0.0,
    "dead_pixel_per_mpix": 0.0, "dead_column_per_tile": 0.0, "trail_per_tile": 0.0,
    "persistence_per_tile": 0.0,
}


def small_cfg(**over):
    """256 x 256 demo-survey tiles with few objects."""
    base = {"survey": {"tile_size": 256}, "population": {"galaxy_density": 10.0},
            "stars": {"density": 3.0, "bright_per_tile": 0.5}}
    for k, v in over.items():
        base.setdefault(k, {})
        if isinstance(v, dict):
            base[k].update(v)
        else:
            base[k] = v
    return load_sim_config(None, overrides=base)


@pytest.fixture(scope="module")
def survey3(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim3")
    cfg = small_cfg(tiles=3, seed=11)
    simulate_survey(cfg, out)
    return cfg, out


def _tile_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_survey_layout(survey3):
    cfg, out = survey3
    from tilecat.config import validate_config
    from tilecat.tiles import read_manifest
    import yaml

    tiles = read_manifest(out / "tiles.tsv")
    assert [t.id for t in tiles] == ["sim0000", "sim0001", "sim0002"]
    assert [t.index for t in tiles] == [0, 1, 2]
    header = (out / "tiles.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["tile", "index", "ra", "dec", "seed"]
    doc = yaml.safe_load((out / "survey.yaml").read_text())
    assert doc["simulation"]["seed"] == 11
    config = {"survey": doc["survey"], "tiles": str(out / "tiles.tsv"), "results": "r"}
    validate_config(config)  # usable as a tilecat survey section
    files = _tile_files(out / "sim0001")
    assert files == sorted([f"sim0001-{b}.fits.fz" for b in "griz"]
                           + ["truth.parquet", "truth-defects.fits.fz"])
    with fits.open(out / "sim0001" / "sim0001-r.fits.fz") as h:
        assert [x.name for x in h] == ["PRIMARY", "IMAGE", "INVVAR", "DQ"]
        assert h["IMAGE"].data.dtype == np.float32
        assert h["INVVAR"].data.dtype == np.float32
        assert h["DQ"].data.dtype == np.uint16
        for key in ("BAND", "FILTER", "PIXSCALE", "ZPT", "MAGZERO", "BUNIT", "GAIN", "SKYLEVEL",
                    "RDNOISE", "PSFFWHM", "PSFBETA", "SEED", "SIMVER", "TILEID"):
            assert key in h["IMAGE"].header, key
        assert h["IMAGE"].header["BAND"] == "r"
        assert h["IMAGE"].header["ZPT"] == 22.5


def test_truth_schema_and_labels(survey3):
    cfg, out = survey3
    tab = pq.read_table(out / "sim0000" / "truth.parquet")
    meta = tab.schema.metadata
    assert b"tilecat.units" in meta and b"tilecat.descriptions" in meta
    df = tab.to_pandas()
    for col in ("id", "ra", "dec", "x", "y", "is_star", "kind", "redshift", "r50", "sersic_n",
                "bulge_to_total", "q", "e1", "e2", "pa_deg", "t_class", "edge_on",
                "spiral_arms", "spin", "bar", "bulge_size", "merger", "roundness",
                "population") + tuple(f"{p}_{b}" for p in ("flux", "mag") for b in "griz"):
        assert col in df.columns, col
    assert df["id"].is_monotonic_increasing and df["id"].is_unique
    assert set(df["t_class"]) <= {"smooth", "featured", "artifact"}
    assert set(df["spin"]) <= {"S", "Z", "none"}
    stars = df[df.is_star]
    assert (stars.t_class == "artifact").all() and (stars.redshift == 0).all()
    gal = df[~df.is_star]
    assert (gal.spin != "none").eq(gal.kind == "spiral").all()
    assert (gal.r50 > 0).all()


def test_same_seed_byte_identical(tmp_path):
    cfg = small_cfg(tiles=1, seed=5)
    simulate_survey(cfg, tmp_path / "a")
    simulate_survey(cfg, tmp_path / "b")
    names = _tile_files(tmp_path / "a" / "sim0000")
    assert names == _tile_files(tmp_path / "b" / "sim0000")
    for name in names:
        assert filecmp.cmp(tmp_path / "a" / "sim0000" / name, tmp_path / "b" / "sim0000" / name,
                           shallow=False), name
    assert filecmp.cmp(tmp_path / "a" / "tiles.tsv", tmp_path / "b" / "tiles.tsv", shallow=False)
    ya = (tmp_path / "a" / "survey.yaml").read_text().replace(str(tmp_path / "a"), "D")
    yb = (tmp_path / "b" / "survey.yaml").read_text().replace(str(tmp_path / "b"), "D")
    assert ya == yb
    # a different seed changes the pixels
    simulate_survey(small_cfg(tiles=1, seed=6), tmp_path / "c")
    assert not filecmp.cmp(tmp_path / "a" / "sim0000" / "sim0000-r.fits.fz",
                           tmp_path / "c" / "sim0000" / "sim0000-r.fits.fz", shallow=False)


def test_tile_independence(survey3, tmp_path):
    cfg, out = survey3
    # tile 0 of a one-tile survey == tile 0 of the three-tile survey
    simulate_survey(small_cfg(tiles=1, seed=11), tmp_path / "one")
    # tile 1 regenerated alone (--only) == tile 1 of the full run
    simulate_survey(cfg, tmp_path / "only", only="sim0001")
    assert _tile_files(tmp_path / "only") == ["sim0001", "survey.yaml", "tiles.tsv"]
    for sub, tile in (("one", "sim0000"), ("only", "sim0001")):
        for name in _tile_files(out / tile):
            assert filecmp.cmp(out / tile / name, tmp_path / sub / tile / name,
                               shallow=False), (sub, name)


def test_workers_give_same_files(survey3, tmp_path):
    cfg, out = survey3
    simulate_survey(cfg, tmp_path / "pool", workers=2)
    for tile in ("sim0000", "sim0002"):
        for name in _tile_files(out / tile):
            assert filecmp.cmp(out / tile / name, tmp_path / "pool" / tile / name, shallow=False)


def test_wcs_maps_truth_radec_to_xy(survey3):
    cfg, out = survey3
    df = pq.read_table(out / "sim0002" / "truth.parquet").to_pandas()
    for band in ("g", "z"):
        hdr = fits.getheader(out / "sim0002" / f"sim0002-{band}.fits.fz", "IMAGE")
        x, y = WCS(hdr).all_world2pix(df.ra.values, df.dec.values, 0)
        np.testing.assert_allclose(x, df.x.values, atol=1e-6)
        np.testing.assert_allclose(y, df.y.values, atol=1e-6)
        # north up, east left
        assert hdr["CRVAL2"] == pytest.approx(df.dec.mean(), abs=0.05)
    ra0, _ = WCS(hdr).all_pix2world([0, 10], [0, 0], 0)
    assert ra0[1] < ra0[0]


def test_truth_defect_masks_per_band(survey3):
    cfg, out = survey3
    with fits.open(out / "sim0000" / "truth-defects.fits.fz") as h:
        names = [x.name for x in h[1:]]
        assert names == [f"DEFECTS_{b.upper()}" for b in "griz"] or names == [
            f"DEFECTS_{b}" for b in "griz"]
        for x in h[1:]:
            assert x.data.dtype == np.uint16 and x.data.shape == (256, 256)
            assert x.data.max() < (1 << 7)  # only DEFECT_CLASSES bits


@pytest.fixture(scope="module")
def clean_tile():
    """A tile without defects or no-data, with noiseless model."""
    cfg = small_cfg(seed=3, survey={"tile_size": 320},
                    population={"galaxy_density": 8.0, "clustering": 0.0},
                    stars={"density": 15.0, "mag_range": [17.0, 21.0], "bright_per_tile": 0},
                    conditions={"nodata_strip_prob": 0.0}, defects=NO_DEFECTS)
    return cfg, render_tile(cfg, 0, keep_noiseless=True)


def test_background_pull_unit_width(clean_tile, tmp_path):
    cfg, res = clean_tile
    from tilecat.simulate.writer import write_tile

    write_tile(res, tmp_path, cfg)
    for band in res.bands:
        c = res.conditions[band]
        nl = res.noiseless[band]
        with fits.open(tmp_path / res.tile / f"{res.tile}-{band}.fits.fz") as h:
            img = h["IMAGE"].data.astype(float)  # includes RICE quantisation
            iv = h["INVVAR"].data.astype(float)
        bg = (nl < 0.1 * c.sky_sigma) & (iv > 0)
        assert bg.sum() > 20000
        pull = (img - nl) * np.sqrt(iv)
        assert abs(np.std(pull[bg]) - 1.0) < 0.05, (band, np.std(pull[bg]))
        assert abs(np.mean(pull[bg])) < 0.05
        # the inverse variance is that of sky + read noise in the background
        assert np.median(1 / np.sqrt(iv[bg])) == pytest.approx(c.sky_sigma, rel=0.01)


def _moffat_outside(r_pix: float, c) -> float:
    """Fraction of a Moffat's flux outside radius ``r_pix``."""
    alpha = c.psf_fwhm_pix / (2 * np.sqrt(2 ** (1 / c.psf_beta) - 1))
    return float((1 + (r_pix / alpha) ** 2) ** (1 - c.psf_beta))


def test_star_aperture_fluxes_match_truth(clean_tile):
    cfg, res = clean_tile
    import pandas as pd

    df = pd.DataFrame(res.truth)
    xy = df[["x", "y"]].to_numpy()
    d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    n_checked = 0
    for band in ("g", "r", "z"):
        c = res.conditions[band]
        rad = 4.0 * c.psf_fwhm_pix
        err = 1 / np.sqrt(res.invvar[band].astype(float))
        f, fe, _ = sep.sum_circle(res.image[band].astype(float), df.x.values, df.y.values,
                                  rad, err=err)
        ny, nx = res.image[band].shape
        ok = (df.is_star & (d.min(1) > rad + 4 * c.psf_fwhm_pix) & (df.x > rad) & (df.y > rad)
              & (df.x < nx - rad) & (df.y < ny - rad) & (df[f"flux_{band}"] / fe > 20)).to_numpy()
        true = df[f"flux_{band}"].to_numpy()
        # 4 FWHM holds >= 99% of a Moffat with beta >= 2.5
        resid = (f[ok] - true[ok] * (1 - _moffat_outside(rad, c))) / np.hypot(fe[ok], 0.003 * true[ok])
        assert np.all(np.abs(resid) < 4), resid
        n_checked += ok.sum()
    assert n_checked >= 3


def test_galaxy_aperture_fluxes_match_truth():
    cfg = small_cfg(seed=4, survey={"tile_size": 384}, population={"clustering": 0.0},
                    stars={"density": 0.0, "bright_per_tile": 0},
                    conditions={"nodata_strip_prob": 0.0}, defects=NO_DEFECTS)
    specs = [s for s in draw_galaxies(40, np.random.default_rng(2), cfg)
             if s.kind in ("elliptical", "spiral", "irregular", "lenticular")][:6]
    for s in specs:  # bright: r = 19
        s.flux = s.flux * 10 ** (-0.4 * (19.0 - (22.5 - 2.5 * np.log10(s.flux[2]))))
    res = render_tile(cfg, 0, galaxies=specs)
    import pandas as pd

    df = pd.DataFrame(res.truth)
    xy = df[["x", "y"]].to_numpy()
    d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    c = res.conditions["r"]
    rad = np.minimum(5 * df.r50.to_numpy() / 0.262 + 3 * c.psf_fwhm_pix, 60)
    err = 1 / np.sqrt(res.invvar["r"].astype(float))
    f, fe, _ = sep.sum_circle(res.image["r"].astype(float), df.x.values, df.y.values, rad,
                              err=err)
    ok = (d.min(1) > 2 * rad + 5) & (df.x > rad) & (df.y > rad) & (df.x < 384 - rad) & (
        df.y < 384 - rad)
    assert ok.sum() >= 2
    ratio = f[ok] / df.flux_r.to_numpy()[ok]
    tol = 4 * fe[ok] / df.flux_r.to_numpy()[ok] + 0.02  # noise + light beyond the aperture
    assert np.all(np.abs(ratio - 1) < tol), ratio


def _spiral_spec(spin: str) -> GalaxySpec:
    flux = np.full(6, 500.0)
    return GalaxySpec(
        kind="spiral", population="parametric", redshift=0.05, flux=flux,
        parts={"bulge": ("E", 0.2), "arms": ("Im", 0.3), "bar": ("E", 0.1), "disk": ("Sbc", 0.4)},
        r50_disk=2.0, r50_bulge=0.4, n_bulge=4.0, inclination=30.0, q=0.87, bulge_q=0.9,
        phi=35.0, spin=spin, pitch=18.0, bar="strong", bar_length=1.5, bar_q=0.3,
        bar_angle=60.0, seed=1234)


def _draw(spec: GalaxySpec) -> np.ndarray:
    model = build_galaxy(spec)
    psf = galsim.Moffat(beta=3.0, fwhm=0.8)
    return galsim.Convolve(model.profile("r"), psf).drawImage(
        nx=81, ny=81, scale=0.2, method="no_pixel").array


def test_mirrored_spiral_has_other_spin():
    z_img = _draw(_spiral_spec("Z"))
    s_img = _draw(_spiral_spec("S"))
    peak = z_img.max()
    # the S spiral is the Z spiral mirrored through the vertical axis (x -> -x)
    np.testing.assert_allclose(s_img, z_img[:, ::-1], atol=2e-4 * peak)
    # ... and a spiral is not its own mirror image
    assert np.abs(z_img - z_img[:, ::-1]).max() > 0.05 * peak
    # labels and shape truth flip with the mirror
    assert labels(_spiral_spec("Z"))["spin"] == "Z"
    assert labels(_spiral_spec("S"))["spin"] == "S"
    tz, ts = shape_truth(_spiral_spec("Z")), shape_truth(_spiral_spec("S"))
    assert ts["pa_deg"] == pytest.approx((-tz["pa_deg"]) % 180)
    assert ts["e2"] == pytest.approx(-tz["e2"]) and ts["e1"] == pytest.approx(tz["e1"])


def test_z_arms_wind_counter_clockwise_outward():
    knots = spiral_arm_knots(2.0, 20.0, np.random.default_rng(0), per_arm=40)
    for arm in np.split(knots, 2):
        r = np.hypot(arm[:, 0], arm[:, 1])
        th = np.unwrap(np.arctan2(arm[:, 1], arm[:, 0]))
        assert np.corrcoef(r, th)[0, 1] > 0.9  # position angle grows with radius


def test_populations():
    cfg_e = small_cfg()
    emp = draw_galaxies(200, np.random.default_rng(1), cfg_e)
    assert max(s.redshift for s in emp) <= 0.35  # SDSS main sample
    cfg_p = small_cfg(population={"kind": "parametric", "mag_limit": 25.0})
    par = draw_galaxies(300, np.random.default_rng(1), cfg_p)
    zs = np.array([s.redshift for s in par])
    assert zs.max() > 0.9 and zs.max() <= 1.5
    mags = 22.5 - 2.5 * np.log10([s.flux[2] + (s.companion.flux[2] if s.companion else 0)
                                  for s in par])
    assert mags.max() < 25.0 + 0.3 and np.median(mags) > 22
    kinds = {s.kind for s in emp + par}
    assert kinds == {"elliptical", "lenticular", "spiral", "edgeon", "irregular", "merger"}
    # redder galaxies at higher redshift (real colour-redshift relation)
    gr = np.array([-2.5 * np.log10(s.flux[1] / s.flux[2]) for s in emp])
    ze = np.array([s.redshift for s in emp])
    assert np.corrcoef(ze, gr)[0, 1] > 0.2


def test_config_allows_other_surveys():
    cfg = load_sim_config(None, overrides={"survey": {
        "tile_size": 2048, "pixel_scale": 0.2, "bands": ["u", "g", "r", "i", "z", "y"]}})
    assert cfg["survey"]["tile_size"] == 2048
    assert load_sim_config(None, overrides={"survey": {"tile_size": [512, 1024]}})


@pytest.mark.parametrize("text, match", [
    ("survey: {bands: [g, r, w]}\n", "unknown band 'w'"),
    ("conditions: {psf_fwhm: {r: [-1.0, 1.2]}}\n", "psf_fwhm.r"),
    ("population: {catalog: /nonexistent/sdss.tsv}\n", "does not exist"),
    ("survey: {colour: red}\n", "unknown key 'survey.colour'"),
    ("population: {kind: magic}\n", "population.kind"),
    ("conditions: {depth: {q: [24, 25]}}\n", "unknown band"),
    ("defects: {meteor_per_tile: 1}\n", "meteor_per_tile"),
])
def test_bad_config_raises(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_sim_config(p)


def test_cli_reports_config_error(tmp_path, capsys):
    from tilecat.cli import main

    p = tmp_path / "bad.yaml"
    p.write_text("survey: {bands: [g, x]}\n")
    assert main(["simulate", "--out", str(tmp_path / "o"), "--config", str(p)]) == 2
    assert "unknown band 'x'" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "o"), "--config",
                 str(tmp_path / "missing.yaml")]) == 2
    assert main(["simulate", "--out", str(tmp_path / "o"), "--only", "sim0009",
                 "--tiles", "2"]) == 2
