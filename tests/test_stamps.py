"""Tests of the training-set generators (galaxy stamps, defect patches) and k-space rendering."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from tilecat.bits import DEFECT_CLASSES, bit
from tilecat.errors import ConfigError
from tilecat.simulate.config import load_sim_config
from tilecat.simulate.kspace import KGrid
from tilecat.simulate.patches import make_defect_patches
from tilecat.simulate.stamps import STAMP_CLASSES, class_plan, heldout_config, make_galaxy_stamps

xr = pytest.importorskip("xarray")


@pytest.fixture(scope="module")
def cfg():
    return load_sim_config(None)


@pytest.fixture(scope="module")
def stamps_a(tmp_path_factory, cfg):
    out = tmp_path_factory.mktemp("st") / "a.zarr"
    make_galaxy_stamps(cfg, out, 42, seed=5, size=32)
    return out


def _s(values) -> np.ndarray:
    """Strings read back from Zarr (numpy StringDType) as a plain str array."""
    return np.array([str(v) for v in values])


def _files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file()}


def test_stamp_shapes_dtypes_and_labels(stamps_a):
    ds = xr.open_zarr(stamps_a, consolidated=False)
    assert ds["stamps"].shape == (42, 4, 32, 32)
    assert ds["stamps"].dtype == np.float32
    assert ds["sigma"].shape == (42, 4) and ds["psf_fwhm"].shape == (42, 4)
    assert list(ds["band"].values) == ["g", "r", "i", "z"]
    for name in ("kind", "redshift", "mag_r", "r50", "sersic_n", "q", "e1", "e2", "t_class",
                 "edge_on", "spiral_arms", "spin", "bar", "bulge_size", "merger", "roundness",
                 "snr"):
        assert name in ds, name
        assert ds[name].dims == ("object",)
    x = ds["stamps"].values
    assert np.isfinite(x).all()
    assert (ds["sigma"].values > 0).all()
    # arcsinh(F/sigma): sky pixels ~ N(0, 1)-like, the centre bright for galaxies
    gal = ~np.isin(_s(ds["kind"].values), ["star", "artifact"])
    centre = x[gal][:, 1, 14:18, 14:18].mean()
    edge = np.median(np.abs(x[gal][:, 1, :3, :]))
    assert centre > 1.0 and 0.3 < edge < 1.5
    t = _s(ds["t_class"].values)
    k = _s(ds["kind"].values)
    assert set(t[k == "elliptical"]) == {"smooth"}
    assert set(t[np.isin(k, ["star", "artifact"])]) == {"artifact"}
    assert (ds["r50"].values[gal] > 0).all()
    assert ds.attrs["heldout"] is False and ds.attrs["seed"] == 5
    assert ds.attrs["bands"] == ["g", "r", "i", "z"]


def test_stamps_record_psf_beta(tmp_path, cfg, stamps_a):
    """Every stamp records its bands' Moffat beta; StampSet reads it (None for old sets)."""
    from tilecat.morphology.dataset import load_stamp_sets, load_stamps
    from tilecat.simulate.stamps import GROUP

    ds = xr.open_zarr(stamps_a, consolidated=False)
    beta = ds["psf_beta"].values
    assert ds["psf_beta"].dims == ("object", "band") and beta.shape == (42, 4)
    assert ds["psf_beta"].attrs["units"] == "dimensionless"
    lo, hi = cfg["conditions"]["psf_beta"]
    assert ((beta >= lo - 1e-6) & (beta <= hi + 1e-6)).all()
    assert len(np.unique(beta)) > 4  # drawn per band and per group of conditions
    # stamps of one group share their conditions (like the objects of one tile)
    np.testing.assert_array_equal(beta[1:GROUP], np.broadcast_to(beta[0], (GROUP - 1, 4)))
    assert not np.array_equal(beta[0], beta[GROUP])
    ss = load_stamps(stamps_a)
    np.testing.assert_allclose(ss.psf_beta, beta)
    np.testing.assert_allclose(ss.subset(np.array([3, 20])).psf_beta, beta[[3, 20]])
    # a set simulated before psf_beta was recorded: None, and None when concatenated
    old = tmp_path / "old.zarr"
    xr.open_zarr(stamps_a, consolidated=False).drop_vars("psf_beta").to_zarr(
        old, zarr_format=3, consolidated=False)
    assert load_stamps(old).psf_beta is None and load_stamps(old).psf_fwhm is not None
    both = load_stamp_sets([stamps_a, stamps_a])
    np.testing.assert_allclose(both.psf_beta, np.concatenate([beta, beta]))
    assert load_stamp_sets([stamps_a, old]).psf_beta is None


def test_structure_sample_beta_range_and_heldout_block(tmp_path):
    """config/stamps/structure.yaml: wider Moffat family in training, the held-out block
    (and so the benchmark's held-out set) of morphology-bars.yaml."""
    root = Path(__file__).resolve().parents[1] / "config" / "stamps"
    scfg = load_sim_config(root / "structure.yaml")
    bars = load_sim_config(root / "morphology-bars.yaml")
    assert scfg["stamps"] == bars["stamps"]
    assert scfg["population"] == bars["population"]
    lo, hi = scfg["conditions"]["psf_beta"]
    hlo, hhi = scfg["stamps"]["heldout"]["psf_beta"]
    assert lo <= hlo and hhi <= hi and lo < bars["conditions"]["psf_beta"][0]
    out = tmp_path / "s.zarr"
    make_galaxy_stamps(scfg, out, 20, seed=2, size=32)
    ds = xr.open_zarr(out, consolidated=False)
    assert ds.attrs["recipe"]["psf_beta_range"] == [lo, hi]
    assert (ds["psf_beta"].values >= lo - 1e-6).all()
    assert heldout_config(scfg)["conditions"] == heldout_config(bars)["conditions"]


def test_label_balance(stamps_a):
    ds = xr.open_zarr(stamps_a, consolidated=False)
    k = _s(ds["kind"].values)
    k = np.where(np.isin(k, ["star", "artifact"]), "artifact", k)
    _, counts = np.unique(k, return_counts=True)
    assert len(counts) == len(STAMP_CLASSES)
    assert counts.max() - counts.min() <= 1
    freq = ds.attrs["class_frequencies"]
    assert set(freq) == set(STAMP_CLASSES)
    spins = _s(ds["spin"].values)[k == "spiral"]
    assert abs(int((spins == "S").sum()) - int((spins == "Z").sum())) <= 1


def test_class_plan_balanced_and_spins():
    cls, spins = class_plan(701, seed=3)
    counts = np.bincount(cls, minlength=len(STAMP_CLASSES))
    assert counts.max() - counts.min() <= 1
    sp = spins[cls == STAMP_CLASSES.index("spiral")]
    assert abs(int((sp == "S").sum()) - int((sp == "Z").sum())) <= 1
    assert not np.array_equal(class_plan(701, seed=4)[0], cls)


def test_stamps_deterministic(tmp_path, cfg, stamps_a):
    b = tmp_path / "b.zarr"
    make_galaxy_stamps(cfg, b, 42, seed=5, size=32)
    fa, fb = _files(stamps_a), _files(b)
    assert fa.keys() == fb.keys()
    assert all(fa[k] == fb[k] for k in fa), [k for k in fa if fa[k] != fb[k]]


def test_heldout_differs_in_conditions(tmp_path, cfg, stamps_a):
    h = tmp_path / "h.zarr"
    make_galaxy_stamps(cfg, h, 21, seed=6, size=32, heldout=True)
    a = xr.open_zarr(stamps_a, consolidated=False)
    b = xr.open_zarr(h, consolidated=False)
    assert b.attrs["heldout"] is True
    # PSF ranges do not overlap and the noise is higher (shallower depth)
    for j, band in enumerate(a["band"].values):
        lo, hi = cfg["conditions"]["psf_fwhm"][str(band)]
        assert (a["psf_fwhm"].values[:, j] <= hi + 1e-6).all()
        assert (b["psf_fwhm"].values[:, j] >= hi - 1e-6).all()
        dlo = cfg["conditions"]["depth"][str(band)][0]
        assert (b["depth"].values[:, j] <= dlo + 1e-4).all()
        assert (a["depth"].values[:, j] >= dlo - 1e-4).all()
    hc = heldout_config(cfg)
    assert hc["conditions"]["depth"]["r"][1] <= cfg["conditions"]["depth"]["r"][0]


def test_bad_arguments(tmp_path, cfg):
    with pytest.raises(ConfigError):
        make_galaxy_stamps(cfg, tmp_path / "x.zarr", 0, seed=1)
    with pytest.raises(ConfigError):
        make_galaxy_stamps(cfg, tmp_path / "x.zarr", 5, seed=1, size=33)
    assert not (tmp_path / "x.zarr").exists()


def test_kgrid_matches_galsim():
    galsim = pytest.importorskip("galsim")
    g = KGrid(128, 0.262)
    obj = galsim.Sersic(n=2.5, half_light_radius=0.8).shear(q=0.6, beta=0.4 * galsim.radians)
    arms = galsim.Add([galsim.Gaussian(sigma=0.15, flux=1.0).shift(np.cos(t) * t / 3,
                                                                    np.sin(t) * t / 3)
                       for t in np.linspace(0.5, 8, 30)]).transform(1, 0, 0, 0.7).withFlux(1.0)
    psf = galsim.Moffat(beta=3.0, fwhm=1.1)
    # knots of sigma < 1 pixel are sampled on the pixel grid: a few per cent locally
    for prof, tol in ((obj, 1e-3), (arms, 3e-2)):
        mine = g.to_images(g.kimage(prof)[None], np.array([[2.0]]), g.psf_k(1.1, 3.0)[None],
                           crop=64)[0]
        ref = galsim.Convolve(prof.withFlux(2.0), psf).drawImage(
            nx=64, ny=64, scale=0.262, method="no_pixel", offset=(0.5, 0.5)).array
        assert abs(mine.sum() - ref.sum()) < 1e-3 * ref.sum()
        assert np.abs(mine - ref).max() < tol * ref.max()


def test_defect_patches(tmp_path, cfg):
    out = tmp_path / "p.zarr"
    make_defect_patches(cfg, out, 14, seed=2, size=64)
    ds = xr.open_zarr(out, consolidated=False)
    assert ds["flux"].shape == (14, 64, 64) and ds["flux"].dtype == np.float32
    assert ds["invvar"].dtype == np.float32
    assert ds["dq"].dtype == np.uint16 and ds["truth"].dtype == np.uint16
    for k in ("psf_fwhm", "pixscale", "sky_sigma"):
        assert ds[k].shape == (14,)
    dq = ds["dq"].values
    allowed = bit("bad") | bit("saturated") | bit("nodata")
    assert not (dq & ~np.uint16(allowed)).any()  # evaluation hygiene
    truth = ds["truth"].values
    assert (truth != 0).any()
    pt = ds.attrs["P_T"]
    assert set(pt) == set(DEFECT_CLASSES) | {"clean"}
    assert pt["clean"] < 1.0
    np.testing.assert_allclose(pt["cosmic_ray"],
                               np.count_nonzero(truth & bit("cosmic_ray")) / truth.size,
                               rtol=1e-5)
    foci = _s(ds["focus"].values)
    assert len(set(foci)) == 7  # every focus, oversampling the rare classes
    # deterministic
    out2 = tmp_path / "p2.zarr"
    make_defect_patches(cfg, out2, 14, seed=2, size=64)
    assert _files(out) == _files(out2)


def test_cli_function(tmp_path):
    from tilecat.simulate.cli import simulate_stamps_main

    args = argparse.Namespace(out=str(tmp_path / "c.zarr"), kind="galaxy", config=None,
                              number=7, seed=1, heldout=False, workers=1)
    simulate_stamps_main(args)
    ds = xr.open_zarr(tmp_path / "c.zarr", consolidated=False)
    assert ds["stamps"].shape == (7, 4, 64, 64)
    args.number = 0
    with pytest.raises(ConfigError):
        simulate_stamps_main(args)


def test_workers_do_not_change_output(tmp_path, cfg):
    one, two = tmp_path / "w1.zarr", tmp_path / "w2.zarr"
    make_galaxy_stamps(cfg, one, 140, seed=9, size=32, workers=1)
    make_galaxy_stamps(cfg, two, 140, seed=9, size=32, workers=2)
    assert _files(one) == _files(two)


def test_morphology_sample_selection_and_heldout_block(tmp_path):
    """The Galaxy-Zoo-like sample config: bright, resolved centrals; its own held-out PSFs."""
    root = Path(__file__).resolve().parents[1]
    mcfg = load_sim_config(root / "config" / "stamps" / "morphology.yaml")
    sel = mcfg["stamps"]
    out = tmp_path / "m.zarr"
    make_galaxy_stamps(mcfg, out, 28, seed=3, size=32)
    ds = xr.open_zarr(out, consolidated=False)
    kind = _s(ds["kind"].values)
    gal = (kind != "artifact") & (kind != "star")
    mag_r = ds["mag_r"].values
    assert gal.sum() >= 20
    assert (mag_r[gal] < sel["central_mag_limit"]).all()
    star = kind == "star"
    lo, hi = sel["star_mag_range"]
    assert ((mag_r[star] >= lo - 1e-6) & (mag_r[star] <= hi + 1e-6)).all()
    assert ds.attrs["recipe"]["selection"]["central_r50_min"] == sel["central_r50_min"]
    # the measured r50 of the centrals is mostly above the selection's size
    assert np.median(ds["r50"].values[gal]) > sel["central_r50_min"]
    h = heldout_config(mcfg)["conditions"]
    assert h["psf_beta"] == sel["heldout"]["psf_beta"]
    assert h["psf_fwhm"]["r"] == sel["heldout"]["psf_fwhm"]["r"]
    # the default demo settings are untouched by the stamps section
    assert load_sim_config(None)["stamps"]["central_mag_limit"] is None


def test_stamps_section_validation():
    with pytest.raises(ConfigError, match="stamps.central_r50_min"):
        load_sim_config(None, overrides={"stamps": {"central_r50_min": -1}})
    with pytest.raises(ConfigError, match="stamps.heldout.seeing"):
        load_sim_config(None, overrides={"stamps": {"heldout": {"seeing": [1, 2]}}})
    with pytest.raises(ConfigError, match="stamps.heldout.psf_fwhm.r"):
        load_sim_config(None, overrides={"stamps": {"heldout": {"psf_fwhm": {"r": [2, 1]}}}})
