"""Ingest on bad input: each a clear tilecat error naming tile, file and problem, and no
partial output (no tile.zarr, or the previous complete one untouched).

Small synthetic FITS tiles are written in tmp_path.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from tilecat.bits import bit
from tilecat.config import load_config
from tilecat.errors import ConfigError, InputError, TileIdError
from tilecat.ingest import run_ingest
from tilecat.store import open_tile, read_attrs

TILE = "t0001"
BANDS = ["g", "r"]
SHAPE = (80, 96)  # (ny, nx)


def make_wcs(shift_pix: float = 0.0) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [SHAPE[1] / 2 + shift_pix, SHAPE[0] / 2]
    w.wcs.cd = np.array([[-0.262, 0.0], [0.0, 0.262]]) / 3600
    return w


def write_band(
    root: Path, band: str, *, image: np.ndarray | None = None, weight: np.ndarray | None = None,
    dq: np.ndarray | None = None, wcs: WCS | None = None, suffix: str = ".fits",
) -> None:
    """Three single-HDU files (image, weight, dq) of one band; the image HDU is named SCI."""
    rng = np.random.default_rng(abs(hash(band)) % 2**32)
    header = (wcs or make_wcs()).to_header()
    header["SEEING"] = (1.1, "arcsec")
    img = image if image is not None else rng.normal(0, 1, SHAPE).astype(np.float32)
    wt = weight if weight is not None else np.ones(SHAPE, np.float32)
    q = dq if dq is not None else np.zeros(SHAPE, np.int16)
    hdus = {
        "image": fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, header, name="SCI")]),
        "weight": fits.HDUList([fits.PrimaryHDU(wt, header)]),
        "dq": fits.HDUList([fits.PrimaryHDU(q, header)]),
    }
    for role, hdul in hdus.items():
        path = root / f"{TILE}-{role}-{band}{suffix}"
        if suffix.endswith(".gz"):
            raw = root / f"{TILE}-{role}-{band}.raw.fits"
            hdul.writeto(raw, overwrite=True)
            path.write_bytes(gzip.compress(raw.read_bytes(), mtime=0))
            raw.unlink()
        else:
            hdul.writeto(path, overwrite=True)


def make_tile(root: Path, suffix: str = ".fits") -> None:
    root.mkdir(parents=True, exist_ok=True)
    for b in BANDS:
        write_band(root, b, suffix=suffix)


def config(root: Path, weight_kind: str = "invvar", suffix: str = ".fits",
           image_hdu: Any = "SCI", **extra: Any) -> dict:
    cfg = {
        "survey": {
            "name": "synth", "bands": BANDS, "pixel_scale": 0.262,
            "zeropoints": {b: 22.5 for b in BANDS},
            "files": {
                "image": {"pattern": str(root / f"{{tile}}-image-{{band}}{suffix}"),
                          "hdu": image_hdu},
                "weight": {"pattern": str(root / f"{{tile}}-weight-{{band}}{suffix}"),
                           "kind": weight_kind},
                "dq": {"pattern": str(root / f"{{tile}}-dq-{{band}}{suffix}"), "kind": "bits"},
            },
        },
        "tiles": str(root / "tiles.tsv"),
        "results": str(root / "results"),
        "ingest": {"chunk": 64},
    }
    for key, value in extra.items():
        cfg.setdefault(key, {}).update(value)
    return cfg


def store_of(root: Path) -> Path:
    return root / "results" / "tiles" / TILE / "tile.zarr"


def snapshot(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


def assert_error(root: Path, cfg: dict, path: Path, *words: str,
                 kind: type[Exception] = InputError) -> Exception:
    """run_ingest raises ``kind`` naming the tile, ``path`` and ``words``; no store left."""
    with pytest.raises(kind) as info:
        run_ingest(cfg, TILE)
    msg = str(info.value)
    assert TILE in msg
    assert str(path) in msg
    for w in words:
        assert w in msg, (w, msg)
    assert not store_of(root).exists()
    leftovers = [p for p in (root / "results").rglob("*")] if (root / "results").exists() else []
    assert leftovers == [], leftovers
    return info.value


@pytest.fixture
def tile(tmp_path: Path) -> Path:
    make_tile(tmp_path)
    return tmp_path


def test_good_tile_ingests(tile: Path) -> None:
    store = run_ingest(config(tile), TILE)
    ds = open_tile(store)
    assert ds["image"].shape == (2, *SHAPE)
    for k, b in enumerate(BANDS):
        np.testing.assert_array_equal(
            ds["image"].values[k], fits.getdata(tile / f"{TILE}-image-{b}.fits", "SCI"))
    assert read_attrs(store)["psf_fwhm"] == {"g": 1.1, "r": 1.1}
    inputs = read_attrs(run_ingest(config(tile), TILE, checksums=False))["provenance"]["inputs"]
    assert len(inputs) == 6 and all(i["sha256"] is None for i in inputs)


def test_missing_band_file(tile: Path) -> None:
    path = tile / f"{TILE}-image-r.fits"
    path.unlink()
    assert_error(tile, config(tile), path, "does not exist", "band r")


@pytest.mark.parametrize("suffix", [".fits", ".fits.gz"])
def test_truncated_fits(tmp_path: Path, suffix: str) -> None:
    make_tile(tmp_path, suffix)
    path = tmp_path / f"{TILE}-weight-r{suffix}"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])
    assert_error(tmp_path, config(tmp_path, suffix=suffix), path, "truncated")


def test_not_a_fits_file(tile: Path) -> None:
    path = tile / f"{TILE}-dq-g.fits"
    path.write_text("this is not a FITS file\n" * 200)
    assert_error(tile, config(tile), path, "not a readable FITS file")


@pytest.mark.parametrize("hdu,words", [
    ("NOPE", ("no HDU named 'NOPE'", "0:PRIMARY", "1:SCI")),
    (5, ("HDU index 5 out of range", "2 HDU")),
    (0, ("holds no image data",)),
])
def test_wrong_hdu(tile: Path, hdu: Any, words: tuple[str, ...]) -> None:
    assert_error(tile, config(tile, image_hdu=hdu), tile / f"{TILE}-image-g.fits", *words)


def test_image_weight_shape_mismatch(tile: Path) -> None:
    write_band(tile, "r", weight=np.ones((SHAPE[0], SHAPE[1] - 1), np.float32))
    path = tile / f"{TILE}-weight-r.fits"
    assert_error(tile, config(tile), path, "shape (80, 95)", "(80, 96)", "weight")


def test_bands_on_different_grids(tile: Path) -> None:
    write_band(tile, "r", wcs=make_wcs(shift_pix=0.5))
    exc = assert_error(tile, config(tile), tile / f"{TILE}-image-r.fits",
                       "not on the pixel grid", "wcs_tolerance_pix")
    assert str(tile / f"{TILE}-image-g.fits") in str(exc)  # names both band files
    # within the tolerance it is accepted
    cfg = config(tile)
    cfg["survey"]["wcs_tolerance_pix"] = 0.6
    assert run_ingest(cfg, TILE).exists()


def test_bands_with_different_shapes(tile: Path) -> None:
    bad = np.zeros((SHAPE[0] + 1, SHAPE[1]), np.float32)
    write_band(tile, "r", image=bad, weight=np.ones(bad.shape, np.float32),
               dq=np.zeros(bad.shape, np.int16))
    exc = assert_error(tile, config(tile), tile / f"{TILE}-image-r.fits", "one pixel grid")
    assert str(tile / f"{TILE}-image-g.fits") in str(exc)


def test_nonfinite_pixels_become_nodata(tile: Path) -> None:
    img = np.random.default_rng(1).normal(0, 1, SHAPE).astype(np.float32)
    img[3, 4], img[70, 90], img[10, :] = np.nan, np.inf, -np.inf
    write_band(tile, "g", image=img)
    store = run_ingest(config(tile), TILE)
    ds = open_tile(store)
    bad = ~np.isfinite(img)
    image, invvar, dq = (ds[n].values[0] for n in ("image", "invvar", "dq"))
    assert np.isfinite(image).all()
    assert (image[bad] == 0).all() and (invvar[bad] == 0).all()
    np.testing.assert_array_equal((dq & bit("nodata")) != 0, bad)
    np.testing.assert_array_equal(image[~bad], img[~bad])
    attrs = read_attrs(store)
    assert attrs["nonfinite_pixels"] == {"g": int(bad.sum()), "r": 0}
    assert attrs["nodata_fraction"]["g"] == pytest.approx(bad.mean(), abs=1e-6)


def test_all_zero_weight(tile: Path) -> None:
    write_band(tile, "r", weight=np.zeros(SHAPE, np.float32))
    assert_error(tile, config(tile), tile / f"{TILE}-weight-r.fits", "zero", "band r")


def test_all_zero_weight_keeps_previous_store(tile: Path) -> None:
    store = run_ingest(config(tile), TILE)
    before = snapshot(store)
    write_band(tile, "r", weight=np.zeros(SHAPE, np.float32))
    with pytest.raises(InputError, match="zero"):
        run_ingest(config(tile), TILE)
    assert snapshot(store) == before
    assert sorted(p.name for p in store.parent.iterdir()) == ["tile.zarr"]  # no temp dirs


def test_negative_variance(tile: Path) -> None:
    var = np.ones(SHAPE, np.float32)
    var[50, 7] = -2.0
    write_band(tile, "g", weight=var)
    path = tile / f"{TILE}-weight-g.fits"
    assert_error(tile, config(tile, weight_kind="variance"), path, "negative variance",
                 "-2", "rows 0:64")


def test_negative_variance_keeps_previous_store(tile: Path) -> None:
    store = run_ingest(config(tile, weight_kind="variance"), TILE)
    before = snapshot(store)
    var = np.ones(SHAPE, np.float32)
    var[-1, -1] = -1.0
    write_band(tile, "r", weight=var)
    with pytest.raises(InputError, match="negative variance"):
        run_ingest(config(tile, weight_kind="variance"), TILE)
    assert snapshot(store) == before


def test_variance_converted(tile: Path) -> None:
    var = np.full(SHAPE, 4.0, np.float32)
    var[0, 0] = 0.0
    write_band(tile, "g", weight=var)
    ds = open_tile(run_ingest(config(tile, weight_kind="variance"), TILE))
    invvar = ds["invvar"].values[0]
    assert invvar[0, 0] == 0 and ds["dq"].values[0, 0, 0] & bit("nodata")
    assert (invvar.ravel()[1:] == np.float32(0.25)).all()


@pytest.mark.parametrize("suffix", [".fits", ".fits.gz"])
def test_big_endian_and_scaled_input_stored_native(tmp_path: Path, suffix: str) -> None:
    tmp_path.mkdir(exist_ok=True)
    rng = np.random.default_rng(5)
    img = rng.normal(100, 5, SHAPE).astype(">f8")  # float64, big-endian in memory too
    dq = rng.integers(0, 2, SHAPE).astype(">u2") * np.uint16(bit("cosmic_ray") | 0x8000)
    for b in BANDS:
        write_band(tmp_path, b, image=img, weight=np.full(SHAPE, 2, ">i2"), dq=dq,
                   suffix=suffix)  # uint16 DQ is stored as int16 + BZERO=32768
    ds = open_tile(run_ingest(config(tmp_path, suffix=suffix), TILE))
    for name in ("image", "invvar", "dq"):
        assert ds[name].values.dtype.isnative
    np.testing.assert_array_equal(ds["image"].values[1], img.astype(np.float32))
    assert (ds["invvar"].values == 2).all()
    np.testing.assert_array_equal(ds["dq"].values[0], dq)


def test_tile_id_with_path_separator(tile: Path) -> None:
    for bad in ("../t0001", "a/b", "t0001/..", ""):
        with pytest.raises(TileIdError, match="invalid tile id"):
            run_ingest(config(tile), bad)
    assert not (tile / "results").exists()


def test_config_unknown_key_and_wrong_type(tile: Path) -> None:
    import yaml

    cfg = config(tile)
    cfg["ingest"]["chunks"] = 128
    with pytest.raises(ConfigError, match="ingest.*unknown key.*chunks"):
        run_ingest(cfg, TILE)
    cfg = config(tile)
    cfg["ingest"]["chunk"] = "big"
    with pytest.raises(ConfigError, match="'ingest.chunk'.*'big'"):
        run_ingest(cfg, TILE)
    path = tile / "bad.yaml"
    cfg = config(tile)
    cfg["survey"]["pixel_scale"] = "0.262 arcsec"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="'survey.pixel_scale'"):
        load_config(path)
    assert not (tile / "results").exists()


def test_dq_map_naming_unknown_bit(tile: Path) -> None:
    cfg = config(tile)
    cfg["survey"]["files"]["dq"].update(kind="codes", map={3: "saturated", 4: "bleeding"})
    with pytest.raises(ConfigError, match=r"'survey.files.dq.map.4'.*'bleeding'"):
        run_ingest(cfg, TILE)
    cfg["survey"]["files"]["dq"].update(kind="bitmask", map={70: "saturated"})
    with pytest.raises(ConfigError, match="outside 0..63"):
        run_ingest(cfg, TILE)


def test_dq_codes_and_bitmask(tile: Path) -> None:
    q = np.zeros(SHAPE, np.int16)
    q[0, :3] = [3, 4, 7]  # 7 is not in the map -> bad
    q[1, :2] = [0b101, 0b10]
    write_band(tile, "g", dq=q)
    cfg = config(tile)
    cfg["survey"]["files"]["dq"].update(kind="codes", map={3: "saturated", 4: "bleed"})
    dq = open_tile(run_ingest(cfg, TILE))["dq"].values[0]
    assert list(dq[0, :4]) == [bit("saturated"), bit("bleed"), bit("bad"), 0]
    cfg["survey"]["files"]["dq"].update(kind="bitmask", map={0: "hot", 2: "trail"})
    dq = open_tile(run_ingest(cfg, TILE))["dq"].values[0]
    assert list(dq[1, :3]) == [bit("hot") | bit("trail"), 0, 0]  # bit 1 is not mapped


def test_error_raised_in_distributed_worker(tile: Path) -> None:
    """A block error inside a worker process comes back as the same InputError."""
    var = np.ones(SHAPE, np.float32)
    var[5, 5] = -1.0
    write_band(tile, "r", weight=var)
    cfg = config(tile, weight_kind="variance", dask={"scheduler": "local", "workers": 1})
    assert_error(tile, cfg, tile / f"{TILE}-weight-r.fits", "negative variance")


def test_distributed_scheduler_needs_address(tile: Path) -> None:
    cfg = config(tile, dask={"scheduler": "distributed"})
    with pytest.raises(ConfigError, match="'dask.address'"):
        run_ingest(cfg, TILE)
    assert not store_of(tile).exists()


def test_distributed_scheduler_at_address(tile: Path) -> None:
    """``distributed`` connects to a running scheduler and leaves it running."""
    from distributed import LocalCluster

    reference = open_tile(run_ingest(config(tile), TILE))["dq"].values
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:
        cfg = config(tile, dask={"scheduler": "distributed",
                                 "address": cluster.scheduler_address})
        cfg["results"] = str(tile / "results-distributed")
        store = run_ingest(cfg, TILE)
        assert cluster.status.name == "running"
    np.testing.assert_array_equal(open_tile(store)["dq"].values, reference)


def test_rerun_with_other_bands_replaces_store(tile: Path) -> None:
    store = run_ingest(config(tile), TILE)
    (store / "segmap").mkdir()  # an array of a later stage
    assert run_ingest(config(tile), TILE) == store
    assert (store / "segmap").exists()  # same layout: updated in place
    cfg = config(tile)
    cfg["survey"]["bands"] = ["r"]
    run_ingest(cfg, TILE)
    assert list(open_tile(store)["band"].values) == ["r"]
    assert open_tile(store)["image"].shape == (1, *SHAPE)
    assert not (store / "segmap").exists()
