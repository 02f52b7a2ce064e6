"""The ingest stage: a tile's FITS files (one set per band) -> ``tile.zarr``.

Order of work, so that a failure leaves no partial output:

1. validate the tile id and the configuration (DQ maps included);
2. inspect every input: existence, readability, FITS, HDU, 2-d image, truncation,
   shapes of weight/DQ against the image, dtypes, one pixel grid for all bands,
   WCS pixel scale against ``survey.pixel_scale`` (headers only);
3. one Dask pass reads every block once and writes ``image``, ``invvar`` and ``dq``
   into a store aside; the same pass checks the weights (negative values raise in
   the block that holds them; an all-zero weight is caught from the band counts)
   and hashes the input files;
4. only then are the arrays moved into ``tile.zarr`` and its attributes written. A
   new ``tile.zarr`` is built entirely in a temporary directory and renamed into
   place; an existing one keeps its previous complete arrays until the new ones
   are complete.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..atomic import atomic_dir
from ..config import config_hash, validate_config
from ..daskutil import dask_context
from ..errors import InputError
from ..store import read_attrs, write_arrays, write_group
from ..survey import band_files, tile_paths
from ..tiles import validate_tile_id
from .blocks import BandPlan, band_arrays
from .dq import DQRemap, describe, make_remap
from .fitsread import Plane, clear_cache, inspect_plane
from .grid import GridPlane, check_grid, pixel_scale_arcsec, wcs_cards

__all__ = ["run_ingest", "plan_tile", "PIXEL_SCALE_TOLERANCE"]

#: Largest relative difference allowed between the WCS and the configured pixel scale.
PIXEL_SCALE_TOLERANCE = 0.05

#: Header keywords holding the PSF FWHM (arcsec unless the card comment says pixels).
PSF_KEYS: tuple[str, ...] = ("PSFFWHM", "SEEING", "FWHM")


def _psf_fwhm(headers: list[Any], pixel_scale: float) -> float | None:
    """PSF FWHM in arcsec from the first header holding one of :data:`PSF_KEYS`.

    ``FWHM`` is used only when its comment says the value is in pixels (as in the
    DECam community pipeline), since its unit varies between pipelines.
    """
    for key in PSF_KEYS:
        for hdr in headers:
            if key not in hdr:
                continue
            value = hdr[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not np.isfinite(value) or value <= 0:
                continue
            in_pixels = "pix" in str(hdr.comments[key]).lower()
            if key == "FWHM" and not in_pixels:
                continue
            return float(value) * pixel_scale if in_pixels else float(value)
    return None


def _plane(ref: Any, tile: str, role: str) -> tuple[Plane, Any, Any]:
    return inspect_plane(ref.path, ref.hdu, tile, role)


def plan_tile(config: dict[str, Any], tile: str) -> tuple[list[BandPlan], dict[str, Any]]:
    """Inspect every input of ``tile`` (headers only) and plan the reads.

    Parameters
    ----------
    config : dict
        Validated configuration.
    tile : str
        Tile id.

    Returns
    -------
    plans : list of BandPlan
        One per band, in band order.
    attrs : dict
        The store attributes known before reading pixels (WCS, zeropoints, PSF...).

    Raises
    ------
    ConfigError
        A DQ map that does not name tilecat bits.
    InputError
        Any input that is missing, unreadable, inconsistent or off the tile's grid.
    """
    survey = config["survey"]
    bands = band_files(config, tile)
    remaps: dict[str, DQRemap | None] = {}
    for bf in bands:
        remaps[bf.band] = make_remap(bf.dq.kind, bf.dq.map) if bf.dq is not None else None

    plans: list[BandPlan] = []
    grid: list[GridPlane] = []
    psf: dict[str, float | None] = {}
    files: dict[str, dict[str, str]] = {}
    for bf in bands:
        image, header, primary = _plane(bf.image, tile, f"band {bf.band} image")
        if np.dtype(image.dtype).kind not in "fiu":
            raise InputError(tile, str(image.path), f"band {bf.band} image has dtype "
                             f"{image.dtype}, not real numbers")
        weight = dq = None
        if bf.weight is not None:
            weight, _, _ = _plane(bf.weight, tile, f"band {bf.band} weight")
            _same_shape(weight, image, tile, bf.band, "weight")
            if np.dtype(weight.dtype).kind not in "fiu":
                raise InputError(tile, str(weight.path), f"band {bf.band} weight has dtype "
                                 f"{weight.dtype}, not real numbers")
        if bf.dq is not None:
            dq, _, _ = _plane(bf.dq, tile, f"band {bf.band} dq")
            _same_shape(dq, image, tile, bf.band, "dq")
            kind = np.dtype(dq.dtype)
            if kind.kind not in "iub":
                raise InputError(tile, str(dq.path), f"band {bf.band} DQ plane has dtype "
                                 f"{dq.dtype}; DQ values must be integers")
            remap = remaps[bf.band]
            if remap is not None and remap.max_input_bit() >= 8 * kind.itemsize:
                raise InputError(tile, str(dq.path), f"band {bf.band}: DQ map names input bit "
                                 f"{remap.max_input_bit()} but the plane has only "
                                 f"{8 * kind.itemsize} bits ({dq.dtype})")
        plans.append(BandPlan(
            tile=tile, band=bf.band, image=image, weight=weight,
            weight_kind=bf.weight.kind if bf.weight is not None else "",
            dq=dq, dq_remap=remaps[bf.band],
        ))
        grid.append(GridPlane(bf.band, image.label, str(image.path), image.shape, header))
        psf[bf.band] = _psf_fwhm([header, primary], float(survey["pixel_scale"]))
        files[bf.band] = {
            "image": image.label,
            "weight": weight.label if weight is not None else None,
            "weight_kind": bf.weight.kind if bf.weight is not None else "estimated",
            "dq": dq.label if dq is not None else None,
            "dq_remap": describe(remaps[bf.band] if dq is not None else None),
        }

    wcs = check_grid(grid, float(survey["wcs_tolerance_pix"]), tile)
    scale = pixel_scale_arcsec(wcs)
    want = float(survey["pixel_scale"])
    if abs(scale / want - 1.0) > PIXEL_SCALE_TOLERANCE:
        raise InputError(
            tile, grid[0].path, f"WCS pixel scale {scale:.4g} arcsec/px differs from "
            f"survey.pixel_scale {want:g} by more than {PIXEL_SCALE_TOLERANCE:.0%}"
        )
    ny, nx = plans[0].image.shape
    attrs: dict[str, Any] = {
        "tile": tile,
        "survey": survey["name"],
        "bands": list(survey["bands"]),
        "shape": [ny, nx],
        "wcs": wcs_cards(wcs),
        "pixel_scale": want,
        "wcs_pixel_scale": round(scale, 6),
        "flux_unit": survey.get("flux_unit", "nanomaggy"),
        "zeropoints": {b: float(survey["zeropoints"][b]) for b in survey["bands"]},
        "psf_fwhm": psf,
        "files": files,
    }
    return plans, attrs


def _same_shape(plane: Plane, image: Plane, tile: str, band: str, role: str) -> None:
    if plane.shape != image.shape:
        raise InputError(
            tile, str(plane.path), f"band {band} {role} {plane.label} has shape "
            f"{plane.shape} but the image {image.label} has {image.shape}"
        )


def _same_layout(store: Path, attrs: dict[str, Any]) -> bool:
    """Whether ``store`` is a tile store with the same bands and shape as ``attrs``.

    Only then are the new arrays written into it; otherwise (no store, or a store of
    other bands, whose ``band`` coordinate would be stale) a new one replaces it.
    """
    try:
        old = read_attrs(store)
    except (OSError, ValueError):
        return False
    return old.get("bands") == attrs["bands"] and old.get("shape") == attrs["shape"]


def _first_missing(path: Path) -> Path | None:
    """The outermost directory of ``path`` that does not exist yet (None if it does)."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing = p
    return missing


def _remove_empty(path: Path, upto: Path | None) -> None:
    """Remove the empty directories this run created, from ``path`` up to ``upto``."""
    if upto is None:
        return
    for p in [path, *path.parents]:
        try:
            p.rmdir()
        except OSError:
            return
        if p == upto:
            return


def _sha256(path: str) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _input_paths(plans: list[BandPlan]) -> list[Plane]:
    seen: dict[str, Plane] = {}
    for p in plans:
        for plane in (p.image, p.weight, p.dq):
            if plane is not None and str(plane.path) not in seen:
                seen[str(plane.path)] = plane
    return list(seen.values())


def run_ingest(config: dict[str, Any], tile: str, checksums: bool = True) -> Path:
    """Ingest one tile: FITS per band -> ``<results>/tiles/<tile>/tile.zarr``.

    Parameters
    ----------
    config : dict
        Configuration (validated again here; defaults filled in a copy).
    tile : str
        Tile id.
    checksums : bool
        Record the sha256 of every input file in the provenance (the default; about a
        quarter of the stage's CPU time on uncompressed inputs). False records null.

    Returns
    -------
    Path
        The ``tile.zarr`` store, holding ``band``, ``image(band,y,x) float32``,
        ``invvar(band,y,x) float32`` (flux^-2), ``dq(band,y,x) uint16`` (tilecat bits)
        and the attributes described in :func:`plan_tile` plus provenance.

    Raises
    ------
    TileIdError, ConfigError, InputError
        Naming the tile, the file and the problem; no partial output is left.
    """
    import dask
    import dask.array as da
    import xarray as xr
    import zarr

    tile = validate_tile_id(tile)
    config = validate_config(copy.deepcopy(config), source="config")
    store = tile_paths(config, tile)["store"]
    try:
        plans, attrs = plan_tile(config, tile)
        chunk = int(config["ingest"]["chunk"])
        clevel = int(config["ingest"]["clevel"])
        per_band = [band_arrays(p, chunk) for p in plans]
        bands = np.array([p.band for p in plans], dtype=object)
        dims = ("band", "y", "x")
        units = attrs["flux_unit"]
        arrays = {
            "image": xr.DataArray(da.stack([b.image for b in per_band]), dims=dims,
                                  coords={"band": bands}, attrs={"units": units}),
            "invvar": xr.DataArray(da.stack([b.invvar for b in per_band]), dims=dims,
                                   coords={"band": bands}, attrs={"units": f"{units}^-2"}),
            "dq": xr.DataArray(da.stack([b.dq for b in per_band]), dims=dims,
                               coords={"band": bands},
                               attrs={"description": "tilecat data-quality bits "
                                      "(tilecat.bits)"}),
        }
        ny, nx = plans[0].image.shape
        chunks = {name: (1, min(chunk, ny), min(chunk, nx)) for name in arrays}
        inputs = _input_paths(plans)
        hashes = [dask.delayed(_sha256, pure=True)(str(p.path)) if checksums else None
                  for p in inputs]
        stats = [b.stats for b in per_band]
        done: dict[str, Any] = {}

        def check(results: tuple[Any, ...]) -> None:
            band_stats, digests = results
            for plan, st in zip(plans, band_stats, strict=True):
                if plan.weight is not None and st["nweight"] == 0:
                    raise InputError(tile, str(plan.weight.path), f"band {plan.band}: the "
                                     f"{plan.weight_kind} plane {plan.weight.label} is zero "
                                     "(or not finite) everywhere: no valid pixel")
                if st["nvalid"] == 0:
                    raise InputError(tile, str(plan.image.path), f"band {plan.band}: no valid "
                                     f"pixel in {plan.image.label} (non-finite wherever the "
                                     "weight is positive)")
            done["stats"], done["digests"] = band_stats, digests

        def write(target: Path) -> None:
            # write every chunk, all-fill ones too: skips zarr's per-chunk "is it all
            # fill?" scan (a sixth of the write's CPU); such chunks compress to ~100 B
            with zarr.config.set({"array.write_empty_chunks": True}):
                write_arrays(target, arrays, chunks=chunks, clevel=clevel,
                             extra=(stats, hashes), check=check)
            write_group(target, _final_attrs(attrs, plans, inputs, done, config))

        created = _first_missing(store.parent)
        try:
            with dask_context(config):
                if _same_layout(store, attrs):  # keep other stages' arrays in place
                    write(store)
                else:
                    with atomic_dir(store) as tmp:
                        write_group(tmp, {"tile": tile})
                        write(tmp)
        except BaseException:
            _remove_empty(store.parent, created)
            raise
    finally:
        clear_cache()
    return store


def _final_attrs(
    attrs: dict[str, Any], plans: list[BandPlan], inputs: list[Plane],
    done: dict[str, Any], config: dict[str, Any],
) -> dict[str, Any]:
    out = dict(attrs)
    stats = done["stats"]
    pairs = list(zip(plans, stats, strict=True))
    out["nodata_fraction"] = {p.band: round(1.0 - st["nvalid"] / st["npix"], 6) for p, st in pairs}
    out["nonfinite_pixels"] = {p.band: int(st["nnonfinite"]) for p, st in pairs}
    out["invvar_source"] = {
        p.band: p.weight_kind if p.weight is not None else "estimated" for p in plans
    }
    est = {p.band: st["sigma"] for p, st in pairs if p.weight is None}
    if est:
        out["noise_sigma_estimated"] = est
        out["invvar_note"] = ("no weight file configured: invvar = 1/sigma^2, uniform, with "
                              "sigma the median over blocks of the image's MAD noise")
    out["provenance"] = {
        "stage": "ingest",
        "tilecat_version": __version__,
        "config_hash": config_hash(config),
        "inputs": [
            {"path": str(p.path), "bytes": p.stamp[0], "sha256": d}
            for p, d in zip(inputs, done["digests"], strict=True)
        ],
    }
    return out
