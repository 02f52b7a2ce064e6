"""Write a rendered tile in the on-disk form of a real survey (docs: SIM_CONTRACT.md).

Per band ``<tile>-<band>.fits.fz``: empty primary HDU with the survey keywords, then
IMAGE (float32, nanomaggies), INVVAR (float32, nanomaggy^-2) and DQ (uint16 tilecat
bits) as tile-compressed HDUs. Floats use RICE with SUBTRACTIVE_DITHER_2 quantisation
(exact zeros, e.g. no-data inverse variances, stay exactly 0) and a dither seed fixed
by the tile seed, so the files are byte-identical for the same seed. Every image HDU
carries the tile's TAN WCS and the observing conditions.

``truth.parquet`` holds one row per object (units and descriptions in the schema
metadata) and ``truth-defects.fits.fz`` one DEFECTS_<band> bitmask per band.
All files of a tile are written into a temporary directory moved into place at once.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_dir
from .config import SIMVER
from .tile import TileResult

__all__ = ["write_tile", "truth_schema", "TRUTH_COLUMNS", "band_path", "deterministic_gzip"]

_LABEL_DOC = {
    "t_class": ("", "morphology question 1: smooth | featured | artifact (stars)"),
    "edge_on": ("", "disk seen edge-on"),
    "spiral_arms": ("", "has spiral arms"),
    "spin": ("", "arm winding seen on the sky (north up, east left): S | Z | none; "
                 "Z = arm position angle increases outward (counter-clockwise)"),
    "bar": ("", "bar strength: strong | weak | none"),
    "bulge_size": ("", "none | small | moderate | large, from the r-band bulge-to-total ratio"),
    "merger": ("", "two interacting galaxies (one row for the pair)"),
    "roundness": ("", "smooth galaxies only: round | between | cigar; none otherwise"),
    "population": ("", "empirical (SDSS MGS rows) | parametric (CWW + Schechter) | star"),
}

#: (name, pyarrow type name, unit, description) of the fixed truth columns.
TRUTH_COLUMNS: list[tuple[str, str, str, str]] = [
    ("id", "int64", "", "object id: tile index * 1e6 + object number (1-based)"),
    ("ra", "float64", "deg", "right ascension (ICRS) of the light-weighted centre"),
    ("dec", "float64", "deg", "declination (ICRS)"),
    ("x", "float64", "pix", "0-based column of the centre (pixel centres at integers)"),
    ("y", "float64", "pix", "0-based row of the centre"),
    ("is_star", "bool", "", "point source"),
    ("kind", "string", "", "elliptical | lenticular | spiral | edgeon | irregular | merger | star"),
    ("redshift", "float64", "", "redshift (0 for stars)"),
]
_STRUCT_COLUMNS: list[tuple[str, str, str, str]] = [
    ("r50", "float64", "arcsec", "half-light radius: circle holding half the r-band flux of "
                                 "the intrinsic (unconvolved) profile"),
    ("sersic_n", "float64", "", "Sérsic index (single-Sérsic galaxies) or that of the Sérsic "
                                "profile with the same r90/r50 (composites); nan for stars"),
    ("bulge_to_total", "float64", "", "r-band bulge flux / total flux"),
    ("q", "float64", "", "axis ratio b/a of the main body"),
    ("e1", "float64", "", "ellipticity (1-q)/(1+q) * cos(2 phi), phi from +x counter-clockwise"),
    ("e2", "float64", "", "ellipticity (1-q)/(1+q) * sin(2 phi)"),
    ("pa_deg", "float64", "deg", "major-axis position angle east of north, [0, 180)"),
]


def band_path(tile_dir: Path, tile: str, band: str, compress: bool) -> Path:
    """Path of one band's FITS file in a tile directory."""
    return Path(tile_dir) / f"{tile}-{band}.fits{'.fz' if compress else ''}"


def truth_schema(bands: list[str]):  # -> pyarrow.Schema
    """The truth.parquet schema (with units/descriptions metadata) for ``bands``."""
    import pyarrow as pa

    cols = list(TRUTH_COLUMNS)
    for b in bands:
        cols.append((f"flux_{b}", "float64", "nanomaggy", f"total flux in {b} (zeropoint 22.5)"))
        cols.append((f"mag_{b}", "float64", "mag", f"AB magnitude in {b} (nan if flux <= 0)"))
    cols += _STRUCT_COLUMNS
    types = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(),
             "string": pa.string()}
    for name, (unit, doc) in _LABEL_DOC.items():
        cols.append((name, "bool" if name in ("edge_on", "spiral_arms", "merger") else "string",
                     unit, doc))
    fields = [pa.field(n, types[t]) for n, t, _, _ in cols]
    meta = {
        b"tilecat.units": json.dumps({n: u for n, _, u, _ in cols}).encode(),
        b"tilecat.descriptions": json.dumps({n: d for n, _, _, d in cols}).encode(),
    }
    return pa.schema(fields, metadata=meta)


def _write_truth(rows: list[dict[str, Any]], bands: list[str], path: Path,
                 extra_meta: dict[bytes, bytes]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = truth_schema(bands)
    data = {f.name: [r[f.name] for r in rows] for f in schema}
    table = pa.Table.from_pydict(data, schema=schema)
    table = table.replace_schema_metadata({**schema.metadata, **extra_meta})
    pq.write_table(table, path, compression="zstd")


def _band_header(res: TileResult, band: str, cfg: dict[str, Any]):
    from astropy.io import fits

    c = res.conditions[band]
    h = fits.Header()
    h.update(res.wcs.to_header())
    cards = [
        ("TILEID", res.tile, "tile id"),
        ("BAND", band, "band"),
        ("FILTER", f"LSST_{band}", "GalSim LSST bandpass used"),
        ("PIXSCALE", float(cfg["survey"]["pixel_scale"]), "[arcsec/pix] pixel scale"),
        ("ZPT", 22.5, "[mag] AB zeropoint: mag = ZPT - 2.5 log10(flux)"),
        ("MAGZERO", 22.5, "[mag] AB zeropoint"),
        ("BUNIT", "nanomaggy", "pixel unit"),
        ("GAIN", round(c.gain, 6), "[e-/nanomaggy] effective gain"),
        ("SKYLEVEL", round(c.sky, 8), "[nanomaggy/pix] subtracted sky level"),
        ("SKYSIG", round(c.sky_sigma, 8), "[nanomaggy] background noise per pixel"),
        ("RDNOISE", round(c.read_noise, 6), "[e-] read noise"),
        ("PSFFWHM", round(c.psf_fwhm, 6), "[arcsec] Moffat FWHM of the effective PSF"),
        ("PSFBETA", round(c.psf_beta, 6), "Moffat beta"),
        ("DEPTH", round(c.depth, 4), "[mag] 5-sigma point-source depth"),
        ("SATURATE", round(c.saturation, 6), "[nanomaggy] saturation level"),
        ("SEED", res.seed, "tile seed (SeedSequence([survey seed, index]))"),
        ("SIMVER", SIMVER, "tilecat simulator version"),
    ]
    for key, val, com in cards:
        h[key] = (val, com)
    return h


def _primary(res: TileResult, cfg: dict[str, Any], band: str | None):
    from astropy.io import fits

    p = fits.PrimaryHDU()
    p.header["SURVEY"] = (cfg["survey"]["name"], "survey name")
    p.header["TILEID"] = (res.tile, "tile id")
    p.header["TILEIDX"] = (res.index, "tile index")
    if band is not None:
        p.header["BAND"] = (band, "band")
    p.header["SEED"] = (res.seed, "tile seed")
    p.header["SIMVER"] = (SIMVER, "tilecat simulator version")
    p.header["ORIGIN"] = ("tilecat simulate", "GalSim-rendered simulation")
    return p


def _dither_seed(res: TileResult, band_index: int) -> int:
    return int((res.seed + 7919 * band_index) % 10000) + 1


def _float_hdu(data: np.ndarray, header: Any, name: str, compress: bool, dseed: int):
    from astropy.io import fits

    if not compress:
        return fits.ImageHDU(data=data.astype(np.float32), header=header, name=name)
    return fits.CompImageHDU(data=data.astype(np.float32), header=header, name=name,
                             compression_type="RICE_1", quantize_level=16.0,
                             quantize_method=2, dither_seed=dseed)


def _int_hdu(data: np.ndarray, header: Any, name: str, compress: bool):
    from astropy.io import fits

    if not compress:
        return fits.ImageHDU(data=data.astype(np.uint16), header=header, name=name)
    return fits.CompImageHDU(data=data.astype(np.uint16), header=header, name=name,
                             compression_type="RICE_1")


@contextlib.contextmanager
def deterministic_gzip() -> Iterator[None]:
    """Make astropy's tile compression write gzip streams without a timestamp.

    Tiles that cannot be quantised (constant rows, e.g. a flat inverse variance or a
    no-data strip) are gzip-compressed by astropy with ``gzip.compress``, which stamps
    the current time into every stream; with ``mtime=0`` the bytes depend on the data
    only. The patch is undone on exit.
    """
    try:
        from astropy.io.fits.hdu.compressed import _codecs
    except ImportError:  # pragma: no cover - other astropy layouts
        yield
        return
    orig = getattr(_codecs, "gzip_compress", None)
    if orig is None:  # pragma: no cover
        yield
        return
    _codecs.gzip_compress = functools.partial(gzip.compress, mtime=0)
    try:
        yield
    finally:
        _codecs.gzip_compress = orig


def write_tile(res: TileResult, out_dir: str | Path, cfg: dict[str, Any]) -> Path:
    """Write ``res`` under ``out_dir/<tile>/`` atomically; return the tile directory."""
    from astropy.io import fits

    compress = bool(cfg["survey"]["compress"])
    final = Path(out_dir) / res.tile
    with atomic_dir(final) as tmp, deterministic_gzip():
        for ib, band in enumerate(res.bands):
            h = _band_header(res, band, cfg)
            ds = _dither_seed(res, ib)
            hdus = fits.HDUList([
                _primary(res, cfg, band),
                _float_hdu(res.image[band], h, "IMAGE", compress, ds),
                _float_hdu(res.invvar[band], h, "INVVAR", compress, ds),
                _int_hdu(res.dq[band], h, "DQ", compress),
            ])
            hdus.writeto(band_path(tmp, res.tile, band, compress))
        dhdus = [_primary(res, cfg, None)]
        for band in res.bands:
            h = _band_header(res, band, cfg)
            h["BITS"] = ("tilecat.bits.DEFECT_CLASSES", "bit k = DEFECT_CLASSES[k]")
            dhdus.append(_int_hdu(res.defects[band], h, f"DEFECTS_{band}", compress))
        fits.HDUList(dhdus).writeto(tmp / f"truth-defects.fits{'.fz' if compress else ''}")
        meta = {
            b"tilecat.tile": res.tile.encode(),
            b"tilecat.seed": str(res.seed).encode(),
            b"tilecat.simver": SIMVER.encode(),
            b"tilecat.conditions": json.dumps(
                {b: res.conditions[b].as_dict() for b in res.bands}, sort_keys=True).encode(),
        }
        _write_truth(res.truth, res.bands, tmp / "truth.parquet", meta)
    return final
