"""The detect stage: background, detection, deblending, photometry, flags, cutouts.

``run_detect(config, tile, tile_index)`` reads ``tile.zarr`` and writes

* ``segmap(y, x) int32`` into ``tile.zarr`` (0 = sky, k = source number k),
* ``sources.parquet`` (:mod:`tilecat.detect.sources`),
* ``cutouts.zarr`` (:mod:`tilecat.detect.cutouts`), whose attribute ``psf`` holds the
  Moffat PSF measured per band on the tile's stars (:mod:`tilecat.detect.psf`).

Source number k (1-based, sources ordered by y then x) gives
``object_id = tile_index * 1_000_000 + k``. All three outputs are built under
temporary names and renamed into place only once everything has succeeded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sep

from ..errors import InputError
from ..tiles import OBJECTS_PER_TILE, validate_tile_id
from .background import SOURCE_MASK_GROW_ARCSEC, estimate_background, source_mask
from .coords import pixel_to_sky, wcs_from_attrs
from .detimage import detection_image
from .extract import extract_sources
from .footprint import footprint_stats, near_edge, touching_neighbours
from .inputs import TileData, load_tile
from .photometry import (
    ab_magnitude,
    aperture_flux,
    auto_apertures,
    auto_flux,
    ellipticity,
    half_light_radius,
)
from .psf import PSFEstimate, estimate_psf

__all__ = ["DetectResult", "detect_tile", "run_detect"]

log = logging.getLogger(__name__)

#: Edge flag margin in pixels.
EDGE_MARGIN = 2

#: Description of the ``psf`` attribute of ``cutouts.zarr``.
PSF_MODEL = ("Moffat I(r) = I0 (1 + (r / alpha)^2)^-beta per band, fitted jointly to the "
             "tile's stars (tilecat.detect.psf): fwhm [arcsec] goes with beta (the header "
             "FWHM, held fixed, when known); fwhm_fit, beta_fit [arcsec, -] from the free "
             "fit; source 'stars' or 'default' (detect.psf_beta_default, too few stars)")


@dataclass
class DetectResult:
    """Everything the detect stage measured on one tile (in memory).

    Attributes
    ----------
    columns : dict of str to ndarray
        The ``sources.parquet`` columns (:func:`tilecat.detect.sources.column_names`).
    segmap : ndarray of int32, shape (ny, nx)
    images : ndarray of float32, shape (band, ny, nx)
        Background-subtracted flux.
    stamp_sigma : ndarray of float32, shape (n, band)
        Background rms at each source pixel, per band (cutout normalisation).
    globalrms : ndarray of float64, shape (band,)
    psf : dict of str to PSFEstimate
        Moffat PSF per band, measured on the tile's stars (:mod:`tilecat.detect.psf`).
    """

    columns: dict[str, np.ndarray]
    segmap: np.ndarray
    images: np.ndarray
    stamp_sigma: np.ndarray
    globalrms: np.ndarray
    psf: dict[str, PSFEstimate] = field(default_factory=dict)


def _stamp_sigma(rms: np.ndarray, x: np.ndarray, y: np.ndarray,
                 globalrms: np.ndarray) -> np.ndarray:
    """Background rms at each source pixel, (n, band); the global rms where invalid."""
    nband, ny, nx = rms.shape
    cx = np.clip(np.floor(x + 0.5).astype(np.int64), 0, nx - 1)
    cy = np.clip(np.floor(y + 0.5).astype(np.int64), 0, ny - 1)
    s = rms[:, cy, cx].T.astype(np.float32)
    fallback = np.broadcast_to(np.asarray(globalrms, np.float32)[None, :], s.shape)
    return np.where(np.isfinite(s) & (s > 0), s, fallback).astype(np.float32)


def _refine_background(images: np.ndarray, rms: np.ndarray, globalrms: np.ndarray,
                       masked: np.ndarray, segmap: np.ndarray, dcfg: dict[str, Any],
                       grow: float) -> None:
    """Second background pass with the detected sources masked (in place).

    The residual background of each (already background-subtracted) band is
    estimated with the footprints, grown by ``grow`` pixels, masked and subtracted;
    ``rms`` and ``globalrms`` are replaced by the source-free estimates. Skipped when
    fewer than 20 % of the pixels would be left (the first pass stands).
    """
    srcmask = source_mask(segmap, grow)
    for b in range(images.shape[0]):
        m = masked[b] | srcmask
        if (~m).mean() < 0.2:
            continue
        bkg = estimate_background(images[b], m, dcfg["back_size"], dcfg["back_filtersize"])
        images[b] -= bkg.back
        rms[b] = bkg.rms
        globalrms[b] = bkg.globalrms


def _measure_psf(data: TileData, b: int, image: np.ndarray, segmap: np.ndarray,
                 x: np.ndarray, y: np.ndarray, snr: np.ndarray, exclude: np.ndarray,
                 dcfg: dict[str, Any]) -> PSFEstimate:
    """Moffat PSF of band ``b`` from the tile's stars (:func:`tilecat.detect.psf.estimate_psf`).

    The FWHM is held at the header value (``tile.zarr`` attribute ``psf_fwhm``) when
    the band has one; ``detect.psf_*`` set the default beta, the star counts and S/N.
    """
    band = data.bands[b]
    header = (data.attrs.get("psf_fwhm") or {}).get(band)
    est = estimate_psf(
        image, data.sigma[b], data.masked[b], data.bits[b], segmap, x, y, snr,
        data.pixel_scale, exclude=exclude,
        fwhm_arcsec=float(header) if header else None,
        beta_default=float(dcfg.get("psf_beta_default", 3.0)),
        min_stars=int(dcfg.get("psf_min_stars", 5)),
        max_stars=int(dcfg.get("psf_max_stars", 30)),
        min_snr=float(dcfg.get("psf_min_snr", 20.0)),
    )
    log.info("tile %s band %s: PSF beta %.3g from %s (%d stars), FWHM %.3g arcsec "
             "(free fit %.3g)", data.tile, band, est.beta, est.source, est.n_stars,
             est.fwhm_arcsec, est.fwhm_fit_arcsec)
    return est


def detect_tile(data: TileData, dcfg: dict[str, Any], tile_index: int) -> DetectResult:
    """Run detection and measurement on a loaded tile (no I/O).

    Parameters
    ----------
    data : TileData
        From :func:`tilecat.detect.inputs.load_tile`; ``data.image`` is
        background-subtracted in place: a first sep background to detect on, then a
        second one with the detected sources masked (:func:`_refine_background`) for
        the photometry and the cutouts.
    dcfg : dict
        The ``detect`` configuration section.
    tile_index : int
        Stable tile index (object ids).

    Returns
    -------
    DetectResult
    """
    nband = len(data.bands)
    ny, nx = data.shape
    try:
        wcs = wcs_from_attrs(data.attrs)
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(data.tile, str(data.store), f"bad WCS attribute: {exc}") from exc
    images = data.image
    rms = np.empty_like(images)
    globalrms = np.zeros(nband)
    for b in range(nband):
        bkg = estimate_background(images[b], data.masked[b], dcfg["back_size"],
                                  dcfg["back_filtersize"])
        images[b] -= bkg.back
        rms[b] = bkg.rms
        globalrms[b] = bkg.globalrms

    det = detection_image(images, data.sigma, data.masked)
    ext = extract_sources(det.data, det.err, det.mask, thresh=dcfg["thresh"],
                          minarea=dcfg["minarea"], deblend_nthresh=dcfg["deblend_nthresh"],
                          deblend_cont=dcfg["deblend_cont"])
    obj, seg = ext.objects, ext.segmap
    n = len(obj)
    _refine_background(images, rms, globalrms, data.masked, seg, dcfg,
                       SOURCE_MASK_GROW_ARCSEC / data.pixel_scale)
    if n >= OBJECTS_PER_TILE:
        raise InputError(data.tile, str(data.store),
                         f"{n} sources exceed the {OBJECTS_PER_TILE - 1} allowed per tile")
    log.info("tile %s: %d sources", data.tile, n)

    aper = auto_apertures(det.data, obj, seg, mask=det.mask)
    fdet, fdet_err, fdet_flag = auto_flux(det.data, aper, err=det.err, mask=det.mask,
                                          segmap=seg)
    r50_pix, _ = half_light_radius(det.data, aper, fdet, mask=det.mask, segmap=seg)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr_det = np.where(fdet_err > 0, fdet / fdet_err, np.nan)

    x = np.asarray(obj["x"], dtype=np.float64)
    y = np.asarray(obj["y"], dtype=np.float64)
    ra, dec = pixel_to_sky(wcs, x, y)
    sep_flags = np.asarray(obj["flag"], dtype=np.int32) | aper.flags | fdet_flag
    cols: dict[str, np.ndarray] = {}
    psf: dict[str, PSFEstimate] = {}
    exclude_psf = (np.asarray(obj["flag"]) & sep.OBJ_TRUNC) != 0
    r_aper = float(dcfg["aperture_radius_arcsec"]) / data.pixel_scale
    for b, band in enumerate(data.bands):
        flux, ferr, fflag = auto_flux(images[b], aper, err=data.sigma[b],
                                      mask=data.masked[b], segmap=seg)
        aflux, aerr, aflag = aperture_flux(images[b], x, y, r_aper, err=data.sigma[b],
                                           mask=data.masked[b])
        # no usable pixel in the aperture: no measurement
        flux[(fflag & sep.APER_ALLMASKED) != 0] = np.nan
        ferr[(fflag & sep.APER_ALLMASKED) != 0] = np.nan
        aflux[(aflag & sep.APER_ALLMASKED) != 0] = np.nan
        aerr[(aflag & sep.APER_ALLMASKED) != 0] = np.nan
        mag, mag_err = ab_magnitude(flux, ferr, data.zeropoints[band])
        cols[f"flux_{band}"], cols[f"flux_err_{band}"] = flux, ferr
        cols[f"flux_aper_{band}"], cols[f"flux_aper_err_{band}"] = aflux, aerr
        cols[f"mag_{band}"], cols[f"mag_err_{band}"] = mag, mag_err
        sep_flags |= fflag | aflag
        snr_band = np.divide(flux, ferr, out=np.zeros_like(flux),
                             where=np.isfinite(ferr) & (ferr > 0))
        psf[band] = _measure_psf(data, b, images[b], seg, x, y, snr_band, exclude_psf, dcfg)

    foot = footprint_stats(seg, np.bitwise_or.reduce(data.bits, axis=0),
                           np.any(data.masked, axis=0), n)
    e1, e2 = ellipticity(aper.a, aper.b, aper.theta)
    cols.update({
        "object_id": tile_index * OBJECTS_PER_TILE + np.arange(1, n + 1, dtype=np.int64),
        "tile": np.array([data.tile] * n, dtype=object),
        "x": x, "y": y, "ra": ra, "dec": dec,
        "a": np.asarray(obj["a"]), "b": np.asarray(obj["b"]), "theta": np.asarray(obj["theta"]),
        "e1": e1, "e2": e2,
        "r50": r50_pix * data.pixel_scale,
        "kron_radius": aper.kron_radius,
        "snr_det": snr_det,
        "flag_edge": near_edge(obj, (ny, nx), EDGE_MARGIN) | ((obj["flag"] & sep.OBJ_TRUNC) != 0),
        "flag_blended": ((obj["flag"] & sep.OBJ_MERGED) != 0) | touching_neighbours(seg, n),
        "flag_masked": foot.flag_masked,
        "defect_bits": foot.defect_bits,
        "masked_frac": foot.masked_frac,
        "sep_flags": sep_flags,
    })
    return DetectResult(
        columns=cols,
        segmap=seg,
        images=images,
        stamp_sigma=_stamp_sigma(rms, x, y, globalrms),
        globalrms=globalrms,
        psf=psf,
    )


def run_detect(config: dict[str, Any], tile: str, tile_index: int) -> None:
    """Detect and measure the sources of one tile and write its detect products.

    Parameters
    ----------
    config : dict
        Validated configuration.
    tile : str
        Tile id.
    tile_index : int
        The tile's stable index from the manifest (object ids).

    Raises
    ------
    InputError
        The tile store is missing or inconsistent.
    """
    import xarray as xr

    from ..atomic import atomic_dir, atomic_path
    from ..config import config_hash
    from ..parquetmeta import write_table
    from ..store import write_arrays
    from ..survey import tile_paths
    from .cutouts import write_cutouts
    from .sources import build_table

    validate_tile_id(tile)
    if tile_index < 0:
        raise InputError(tile, "", f"tile index {tile_index} is negative")
    paths = tile_paths(config, tile)
    dcfg = config["detect"]
    t0 = time.perf_counter()
    data = load_tile(config, tile, paths["store"])
    t1 = time.perf_counter()
    res = detect_tile(data, dcfg, tile_index)
    t2 = time.perf_counter()

    provenance = {
        "tilecat.tile": tile,
        "tilecat.tile_index": str(tile_index),
        "tilecat.stage": "detect",
        "tilecat.config_hash": config_hash(config),
        "tilecat.detect": {k: dcfg[k] for k in sorted(dcfg)},
        "tilecat.bands": list(data.bands),
        "tilecat.zeropoints": data.zeropoints,
        "tilecat.pixel_scale": data.pixel_scale,
    }
    table = build_table(res.columns, data.bands, data.flux_unit, provenance)
    chunk = int(config.get("ingest", {}).get("chunk", 1024))
    ny, nx = res.segmap.shape
    with atomic_dir(paths["cutouts"]) as ctmp, atomic_path(paths["sources"]) as stmp:
        write_cutouts(ctmp, res.images, data.masked, res.columns["x"], res.columns["y"],
                      res.stamp_sigma, res.columns["object_id"], data.bands,
                      int(dcfg["stamp_size"]),
                      attrs={"tile": tile, "config_hash": provenance["tilecat.config_hash"],
                             "psf": {b: res.psf[b].as_attrs() for b in data.bands},
                             "psf_model": PSF_MODEL})
        write_table(table, stmp, atomic=False)
        segmap = xr.DataArray(res.segmap, dims=("y", "x"), attrs={
            "description": "source number k (object_id = tile_index * 1e6 + k); 0 = sky"})
        write_arrays(paths["store"], {"segmap": segmap},
                     chunks={"segmap": (min(chunk, ny), min(chunk, nx))})
    t3 = time.perf_counter()
    timings = {"load": t1 - t0, "measure": t2 - t1, "write": t3 - t2}
    log.info("tile %s: %d sources; load %.2f s, measure %.2f s, write %.2f s", tile,
             table.num_rows, timings["load"], timings["measure"], timings["write"],
             extra={"timings": timings})
