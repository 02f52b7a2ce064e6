"""Detect stage vs SExtractor on a real image (ESO NTT/EMMI, tests/data/ntt_emmi).

The reference catalogue was made with SExtractor's default extraction settings
except DEBLEND_MINCONT 1.0 (deblending off), PHOT_AUTOPARAMS 2.5, 0.0 and
MASK_TYPE NONE (see tests/data/README.md). X_IMAGE/Y_IMAGE are 1-based.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.realdata

DATA = Path(__file__).parent / "data" / "ntt_emmi"


def _fits(name: str) -> np.ndarray:
    import warnings

    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)  # ESO-LOG cards
        with fits.open(DATA / name) as hdul:
            return np.asarray(hdul[0].data, dtype=np.float32)


def _image() -> np.ndarray:
    return _fits("image.fits")


def _reference() -> dict[str, np.ndarray]:
    cat = np.loadtxt(DATA / "image.cat")
    return {"x": cat[:, 1] - 1.0, "y": cat[:, 2] - 1.0, "flux_auto": cat[:, 15]}


def _match(ref: dict, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference objects brighter than the median FLUX_AUTO; nearest detection each."""
    bright = ref["flux_auto"] > np.median(ref["flux_auto"])
    d = np.hypot(ref["x"][bright][:, None] - x[None], ref["y"][bright][:, None] - y[None])
    return bright, d.argmin(axis=1), d.min(axis=1)


def _extract(deblend_cont: float, sextractor_apertures: bool):
    from tilecat.detect.background import estimate_background
    from tilecat.detect.extract import extract_sources
    from tilecat.detect.photometry import auto_apertures, auto_flux

    data = _image()
    bkg = estimate_background(data, None, back_size=64, back_filtersize=3)
    sub = data - bkg.back
    ext = extract_sources(sub, bkg.globalrms, thresh=1.5, minarea=5, deblend_nthresh=32,
                          deblend_cont=deblend_cont)
    if sextractor_apertures:  # PHOT_AUTOPARAMS 2.5, 0.0; MASK_TYPE NONE
        aper = auto_apertures(sub, ext.objects, ext.segmap, min_kron_radius=0.0,
                              mask_neighbours=False)
        flux, _, _ = auto_flux(sub, aper, err=bkg.globalrms)
    else:  # tilecat's defaults
        aper = auto_apertures(sub, ext.objects, ext.segmap)
        flux, _, _ = auto_flux(sub, aper, err=bkg.globalrms, segmap=ext.segmap)
    return ext.objects, flux, bkg


def test_background_matches_sextractor() -> None:
    """The background and its rms equal SExtractor's (BACK_SIZE 64, BACK_FILTERSIZE 3)."""
    bkg = _extract(1.0, True)[2]
    np.testing.assert_allclose(bkg.back, _fits("back.fits"), rtol=1e-5)
    np.testing.assert_allclose(bkg.rms, _fits("rms.fits"), rtol=1e-4)


def test_same_settings_as_sextractor() -> None:
    obj, flux, _ = _extract(deblend_cont=1.0, sextractor_apertures=True)
    ref = _reference()
    bright, j, d = _match(ref, obj["x"], obj["y"])
    found = d < 1.0
    assert found.mean() >= 0.95, f"found {found.sum()} of {found.size}"
    ratio = flux[j[found]] / ref["flux_auto"][bright][found]
    assert abs(np.median(ratio) - 1.0) < 0.05
    # with identical settings the match is in fact exact
    assert np.median(d[found]) < 0.01
    assert np.median(np.abs(ratio - 1.0)) < 0.001


def test_tilecat_defaults_vs_sextractor() -> None:
    """tilecat's defaults (deblending 0.005, neighbour masking, PHOT_AUTOPARAMS 2.5, 3.5).

    sep splits 4 of SExtractor's bright, undeblended objects into two; every other
    bright object is found, with the same AUTO flux to a few per cent.
    """
    obj, flux, _ = _extract(deblend_cont=0.005, sextractor_apertures=False)
    ref = _reference()
    bright, j, d = _match(ref, obj["x"], obj["y"])
    found = d < 1.0
    assert found.mean() >= 0.85, f"found {found.sum()} of {found.size}"
    unblended = (obj["flag"][j] & 1) == 0
    ratio = flux[j[found & unblended]] / ref["flux_auto"][bright][found & unblended]
    assert abs(np.median(ratio) - 1.0) < 0.05


def test_run_detect_on_real_image(tmp_path: Path) -> None:
    """The whole stage on the NTT image as a one-band tile store."""
    import pyarrow.parquet as pq
    import xarray as xr

    from tilecat.config import validate_config
    from tilecat.detect import run_detect
    from tilecat.store import write_arrays, write_group
    from tilecat.survey import tile_paths

    data = _image()
    cfg = validate_config({
        "survey": {"name": "ntt", "bands": ["R"], "pixel_scale": 0.27,
                   "flux_unit": "adu", "zeropoints": {"R": 25.0},
                   "files": {"image": {"pattern": "unused/{tile}.fits"}}},
        "tiles": str(tmp_path / "tiles.tsv"),
        "results": str(tmp_path / "results"),
        "detect": {"deblend_cont": 1.0},
    })
    store = tile_paths(cfg, "ntt")["store"]
    wcs = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0, "CRVAL2": -30.0,
           "CRPIX1": 128.5, "CRPIX2": 128.5, "CDELT1": -0.27 / 3600, "CDELT2": 0.27 / 3600}
    write_group(store, {"wcs": wcs})
    rms = 65.4617
    dims = ("band", "y", "x")
    write_arrays(store, {
        "image": xr.DataArray(data[None], dims=dims, coords={"band": np.array(["R"], object)}),
        "invvar": xr.DataArray(np.full((1, 256, 256), 1 / rms**2, np.float32), dims=dims),
        "dq": xr.DataArray(np.zeros((1, 256, 256), np.uint16), dims=dims),
    })
    run_detect(cfg, "ntt", 3)
    t = pq.read_table(tile_paths(cfg, "ntt")["sources"]).to_pandas()
    ref = _reference()
    bright, j, d = _match(ref, t["x"].to_numpy(), t["y"].to_numpy())
    found = d < 1.0
    assert found.mean() >= 0.95
    ratio = t["flux_R"].to_numpy()[j[found]] / ref["flux_auto"][bright][found]
    assert abs(np.median(ratio) - 1.0) < 0.05
    assert t["object_id"].iloc[0] == 3_000_001
