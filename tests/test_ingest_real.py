"""Ingest on real survey files (tests/data, see its README.md for provenance).

Legacy Survey DR6 (tile-compressed .fits.fz, invvar), SDSS g/r/i (.fits.bz2, no
weight: estimated invvar), DECam community pipeline (ooi/oow/ood with DQ codes).
For each: the store's shapes, dtypes and native byte order, values equal to astropy's
read, DQ remapped to tilecat bits, attributes.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from astropy.io import fits
from astropy.wcs import WCS

from tilecat.bits import bit
from tilecat.config import validate_config
from tilecat.ingest import run_ingest
from tilecat.store import open_tile, read_attrs

pytestmark = pytest.mark.realdata

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
LS = DATA / "legacysurvey_dr6"
SDSS = DATA / "sdss_ngc6976"
DECAM = DATA / "decam_cp"
DECAM_TILE = "181104_072440"


def load_test_config(name: str, tmp_path: Path, **overrides: dict) -> dict:
    """A tests/data/ingest_*.yaml config with absolute paths and results in tmp_path."""
    cfg = yaml.safe_load((DATA / f"ingest_{name}.yaml").read_text())
    for ref in cfg["survey"]["files"].values():
        ref["pattern"] = str(ROOT / ref["pattern"])
    cfg["tiles"] = str(ROOT / cfg["tiles"])
    cfg["results"] = str(tmp_path / "results")
    for key, value in overrides.items():
        cfg.setdefault(key, {}).update(value)
    return validate_config(cfg)


def native(dtype: np.dtype) -> bool:
    return dtype.byteorder in ("=", "|") or dtype.byteorder == (
        "<" if np.little_endian else ">")


def check_layout(store: Path, bands: list[str], shape: tuple[int, int]) -> None:
    ds = open_tile(store)
    assert list(ds["band"].values) == bands
    for name, dtype in (("image", np.float32), ("invvar", np.float32), ("dq", np.uint16)):
        arr = ds[name]
        assert arr.dims == ("band", "y", "x")
        assert arr.shape == (len(bands), *shape)
        assert arr.dtype == dtype
        assert native(arr.values.dtype)
        meta = json.loads((store / name / "zarr.json").read_text())
        assert meta["zarr_format"] == 3
        codecs = {c["name"]: c.get("configuration", {}) for c in meta["codecs"]}
        assert codecs["bytes"].get("endian", "little") == "little"
        assert codecs["blosc"]["cname"] == "zstd" and codecs["blosc"]["shuffle"] == "bitshuffle"
        assert meta["chunk_grid"]["configuration"]["chunk_shape"][0] == 1


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ls_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("ls")
    cfg = load_test_config("legacysurvey", tmp)
    return run_ingest(cfg, "0959p805"), cfg


def test_legacysurvey_fz_values_equal_astropy(ls_store: tuple[Path, dict]) -> None:
    store, _ = ls_store
    check_layout(store, ["g"], (3600, 3600))
    ds = open_tile(store)
    image = fits.getdata(LS / "legacysurvey-0959p805-image-g.fits.fz", 1)
    invvar = fits.getdata(LS / "legacysurvey-0959p805-invvar-g.fits.fz", 1)
    got_image = ds["image"].values[0]
    got_invvar = ds["invvar"].values[0]
    np.testing.assert_array_equal(got_image, image)
    np.testing.assert_array_equal(got_invvar, invvar)
    # nodata exactly where invvar == 0 (88% of this brick is outside the footprint)
    dq = ds["dq"].values[0]
    nodata = (dq & bit("nodata")) != 0
    np.testing.assert_array_equal(nodata, invvar == 0)
    assert 0.85 < nodata.mean() < 0.9
    assert not (dq & ~np.uint16(bit("nodata"))).any()  # no DQ plane: no other bits


def test_legacysurvey_attrs(ls_store: tuple[Path, dict]) -> None:
    store, cfg = ls_store
    attrs = read_attrs(store)
    assert attrs["tile"] == "0959p805"
    assert attrs["bands"] == ["g"]
    assert attrs["zeropoints"] == {"g": 22.5}
    assert attrs["pixel_scale"] == 0.262
    assert attrs["flux_unit"] == "nanomaggy"
    assert attrs["invvar_source"] == {"g": "invvar"}
    hdr = fits.getheader(LS / "legacysurvey-0959p805-image-g.fits.fz", 1)
    x, y = np.array([0.0, 1799.5, 3599.0]), np.array([0.0, 1799.5, 3599.0])
    np.testing.assert_allclose(WCS(attrs["wcs"]).pixel_to_world_values(x, y),
                               WCS(hdr).pixel_to_world_values(x, y), rtol=0, atol=1e-10)
    prov = attrs["provenance"]
    assert prov["tilecat_version"]
    assert len(prov["config_hash"]) == 64
    files = {Path(i["path"]).name: i["sha256"] for i in prov["inputs"]}
    names = [f"legacysurvey-0959p805-{k}-g.fits.fz" for k in ("image", "invvar")]
    assert files == {n: sha256(LS / n) for n in names}


def test_sdss_bz2_bands_from_pattern_and_estimated_invvar(tmp_path: Path) -> None:
    cfg = load_test_config("sdss", tmp_path)
    store = run_ingest(cfg, "ngc6976")
    check_layout(store, ["g", "r", "i"], (496, 682))
    ds = open_tile(store)
    attrs = read_attrs(store)
    raw = {b: fits.getdata(SDSS / f"reprojected_sdss_{b}.fits.bz2") for b in "gri"}
    for k, b in enumerate("gri"):
        # every header says FILTER='g': the band is the one of the file pattern
        np.testing.assert_array_equal(ds["image"].values[k], raw[b])
    assert not np.array_equal(raw["g"], raw["r"])
    assert attrs["invvar_source"] == {"g": "estimated", "r": "estimated", "i": "estimated"}
    for k, b in enumerate("gri"):
        sigma = attrs["noise_sigma_estimated"][b]
        assert 0 < sigma < 0.1 * np.std(raw[b])  # background noise, not the galaxy's spread
        iv = ds["invvar"].values[k]
        np.testing.assert_allclose(iv, np.float32(1.0 / sigma**2), rtol=1e-6)
    # the r band is noisier than g in nanomaggy (SDSS): the estimate sees it
    assert attrs["noise_sigma_estimated"]["r"] > attrs["noise_sigma_estimated"]["g"]
    assert (ds["dq"].values == 0).all()
    assert attrs["wcs_pixel_scale"] == pytest.approx(1.1877, rel=1e-3)


def test_decam_cp_codes_mapped_to_tilecat_bits(tmp_path: Path) -> None:
    cfg = load_test_config("decam", tmp_path)
    store = run_ingest(cfg, DECAM_TILE)
    check_layout(store, ["g"], (100, 101))
    ds = open_tile(store)
    stem = f"c4d_{DECAM_TILE}_{{}}_g_ls9.S4.fits"
    image = fits.getdata(DECAM / stem.format("ooi"), 1)
    invvar = fits.getdata(DECAM / stem.format("oow"), 1)
    codes = fits.getdata(DECAM / stem.format("ood"), 1)
    assert image.dtype.byteorder == ">"  # FITS on disk is big-endian
    np.testing.assert_array_equal(ds["image"].values[0], image)
    np.testing.assert_array_equal(ds["invvar"].values[0], invvar)
    dq = ds["dq"].values[0]
    nodata = np.where(invvar == 0, bit("nodata"), 0)
    expected = np.select(
        [codes == 0, codes == 1, codes == 3, codes == 4],
        [0, bit("bad"), bit("saturated"), bit("bleed")], default=-1,
    )
    assert (expected >= 0).all()
    np.testing.assert_array_equal(dq, expected | nodata)
    # the saturated star: its core is flagged saturated, its trail bleed
    assert ((dq & bit("saturated")) != 0).sum() == (codes == 3).sum() > 500
    assert ((dq & bit("bleed")) != 0).sum() == (codes == 4).sum() > 500
    assert np.median(image[codes == 3]) > 40000
    attrs = read_attrs(store)
    # DECam CP: FWHM card in pixels ("Median FWHM in pixels") -> arcsec
    fwhm_pix = fits.getheader(DECAM / stem.format("ooi"), 1)["FWHM"]
    assert attrs["psf_fwhm"]["g"] == pytest.approx(fwhm_pix * 0.262)
    assert attrs["files"]["g"]["dq_remap"]["map"]["3"] == "saturated"
    # TPV distortion survives the round trip through the attributes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w0 = WCS(fits.getheader(DECAM / stem.format("ooi"), 1))
    x, y = np.array([0.0, 50.0, 100.0]), np.array([0.0, 40.0, 99.0])
    np.testing.assert_allclose(WCS(attrs["wcs"]).pixel_to_world_values(x, y),
                               w0.pixel_to_world_values(x, y), rtol=0, atol=1e-10)


def test_decam_rerun_is_byte_identical_and_schedulers_agree(tmp_path: Path) -> None:
    def tree(store: Path) -> dict[str, str]:
        return {str(p.relative_to(store)): sha256(p) for p in sorted(store.rglob("*"))
                if p.is_file()}

    cfg = load_test_config("decam", tmp_path / "a")
    first = tree(run_ingest(cfg, DECAM_TILE))
    second = tree(run_ingest(cfg, DECAM_TILE))  # over the existing store
    assert first == second and len(first) > 5
    cfg_sync = load_test_config("decam", tmp_path / "b", dask={"scheduler": "synchronous"})
    sync = tree(run_ingest(cfg_sync, DECAM_TILE))
    # the config hash differs (scheduler), so compare everything but the group attrs
    assert {k: v for k, v in sync.items() if k != "zarr.json"} == {
        k: v for k, v in first.items() if k != "zarr.json"}


def test_cli_ingest(tmp_path: Path) -> None:
    from tilecat.cli import main

    cfg = load_test_config("decam", tmp_path)
    path = tmp_path / "decam.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["ingest", DECAM_TILE, "--config", str(path)]) == 0
    store = tmp_path / "results" / "tiles" / DECAM_TILE / "tile.zarr"
    assert zarr.open_group(store, mode="r").attrs["tile"] == DECAM_TILE
    assert main(["ingest", "a/b", "--config", str(path), "--index", "0"]) == 2
