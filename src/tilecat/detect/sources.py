"""The ``sources.parquet`` table: schema, units, descriptions (DESIGN.md §4).

One row per detected source, sorted by ``object_id``. Per-band columns come in
blocks (``flux_g, flux_r, ...`` then ``flux_err_g, ...``), in band order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["COLUMNS", "BAND_COLUMNS", "column_names", "units_and_descriptions", "build_table"]

#: name -> (arrow type name, unit, description) for the band-independent columns.
COLUMNS: dict[str, tuple[str, str, str]] = {
    "object_id": ("int64", "", "stable id: tile index * 1e6 + source number (1-based)"),
    "tile": ("string", "", "tile id"),
    "x": ("float64", "pix", "barycentre column on the detection image, 0-based "
                            "(0 = centre of the first pixel)"),
    "y": ("float64", "pix", "barycentre row on the detection image, 0-based"),
    "ra": ("float64", "deg", "right ascension of (x, y) through the tile WCS"),
    "dec": ("float64", "deg", "declination of (x, y) through the tile WCS"),
    "a": ("float32", "pix", "RMS of the isophotal light profile along the major axis"),
    "b": ("float32", "pix", "RMS of the isophotal light profile along the minor axis"),
    "theta": ("float32", "rad", "major-axis angle from +x towards +y (pixel frame), "
                                "in [-pi/2, pi/2]"),
    "e1": ("float32", "", "|e| cos(2 theta), |e| = (a - b) / (a + b) = (1 - q) / (1 + q)"),
    "e2": ("float32", "", "|e| sin(2 theta), |e| = (a - b) / (a + b)"),
    "r50": ("float32", "arcsec", "radius of the circle holding half the AUTO flux "
                                 "(detection image)"),
    "kron_radius": ("float32", "", "Kron radius in units of (a, b) (0 if undefined); the AUTO "
                                   "aperture has semi-axes max(2.5 kron_radius, 3.5) (a, b)"),
    "snr_det": ("float32", "", "AUTO flux / error on the detection image"),
    "flag_edge": ("bool", "", "segment within 2 pix of the tile border"),
    "flag_blended": ("bool", "", "deblended from a parent (sep OBJ_MERGED) or touching "
                                 "another source's segment"),
    "flag_masked": ("bool", "", "some footprint pixel is masked (detect.mask_bits) or has "
                                "no data in some band"),
    "defect_bits": ("uint16", "", "OR of the defect/data-quality bits (tilecat.bits) over "
                                  "the footprint, all bands"),
    "masked_frac": ("float32", "", "fraction of footprint pixels with any defect bit "
                                   "(any band)"),
    "sep_flags": ("int32", "", "OR of sep extraction and aperture flags (OBJ_MERGED 1, "
                               "OBJ_TRUNC 2, OBJ_SINGU 8, APER_TRUNC 16, APER_HASMASKED 32, "
                               "APER_ALLMASKED 64, APER_NONPOSITIVE 128)"),
}

#: prefix -> (arrow type name, unit ('flux' = the survey flux unit), description with {band}).
BAND_COLUMNS: dict[str, tuple[str, str, str]] = {
    "flux": ("float32", "flux", "{band} AUTO (Kron) flux, background-subtracted (NaN if "
                                "every aperture pixel is masked)"),
    "flux_err": ("float32", "flux", "{band} AUTO flux 1-sigma error (from the inverse "
                                    "variance)"),
    "flux_aper": ("float32", "flux", "{band} flux in a circle of detect.aperture_radius_arcsec"),
    "flux_aper_err": ("float32", "flux", "{band} aperture flux 1-sigma error"),
    "mag": ("float32", "mag", "{band} AB magnitude of the AUTO flux (NaN if flux <= 0)"),
    "mag_err": ("float32", "mag", "{band} AB magnitude 1-sigma error"),
}

_HEAD = ["object_id", "tile", "x", "y", "ra", "dec", "a", "b", "theta", "e1", "e2", "r50",
         "kron_radius"]
_TAIL = ["snr_det", "flag_edge", "flag_blended", "flag_masked", "defect_bits", "masked_frac",
         "sep_flags"]


def column_names(bands: list[str]) -> list[str]:
    """All column names, in file order."""
    per_band = [f"{p}_{b}" for p in BAND_COLUMNS for b in bands]
    return _HEAD + per_band + _TAIL


def _spec(name: str, bands: list[str], flux_unit: str) -> tuple[str, str, str]:
    if name in COLUMNS:
        return COLUMNS[name]
    for prefix in sorted(BAND_COLUMNS, key=len, reverse=True):
        for band in bands:
            if name == f"{prefix}_{band}":
                typ, unit, desc = BAND_COLUMNS[prefix]
                return typ, flux_unit if unit == "flux" else unit, desc.format(band=band)
    raise KeyError(name)


def units_and_descriptions(
    bands: list[str], flux_unit: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Column -> unit and column -> description for ``bands``."""
    units, desc = {}, {}
    for name in column_names(bands):
        _, unit, text = _spec(name, bands, flux_unit)
        units[name] = unit
        desc[name] = text
    return units, desc


def build_table(
    columns: dict[str, np.ndarray],
    bands: list[str],
    flux_unit: str,
    extra: dict[str, Any] | None = None,
) -> Any:
    """The sources table with its metadata.

    Parameters
    ----------
    columns : dict of str to ndarray
        Every column of :func:`column_names` (``tile`` may be a scalar string).
    bands : list of str
        Band order.
    flux_unit : str
        Unit of the flux columns (astropy syntax, e.g. ``nanomaggy``).
    extra : dict, optional
        More schema metadata (see :func:`tilecat.parquetmeta.with_metadata`).

    Returns
    -------
    pyarrow.Table
        Rows sorted by ``object_id``.
    """
    import pyarrow as pa

    from ..parquetmeta import with_metadata

    n = len(columns["object_id"])
    arrays, fields = [], []
    for name in column_names(bands):
        typ, _, _ = _spec(name, bands, flux_unit)
        value = columns[name]
        if name == "tile" and isinstance(value, str):
            value = [value] * n
        arrow_type = pa.string() if typ == "string" else pa.from_numpy_dtype(np.dtype(typ))
        if typ != "string":
            value = np.asarray(value).astype(typ, copy=False)
        arrays.append(pa.array(value, type=arrow_type))
        fields.append(pa.field(name, arrow_type, nullable=False))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    order = np.argsort(np.asarray(columns["object_id"]), kind="stable")
    if n and np.any(order != np.arange(n)):
        table = table.take(pa.array(order))
    units, desc = units_and_descriptions(bands, flux_unit)
    return with_metadata(table, units, desc, extra or {})
