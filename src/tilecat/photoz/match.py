"""Score a survey catalog's photo-z against a truth table matched by sky position.

For ``benchmarks/photoz.py --catalog C --truth T``: every catalog source is matched to
its nearest truth object (:meth:`astropy.coordinates.SkyCoord.match_to_catalog_sky`);
pairs closer than ``max_sep`` arcsec are kept, one catalog source per truth object
(the nearest). Truth tables are the simulator's ``truth.parquet`` (``ra``, ``dec``
[deg], ``redshift``, ``is_star``, ``mag_<band>``) or any Parquet with those columns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["match_sky", "score_catalog"]


def match_sky(ra: np.ndarray, dec: np.ndarray, truth_ra: np.ndarray, truth_dec: np.ndarray,
              max_sep: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one nearest-neighbour sky match of catalog sources to truth objects.

    Parameters
    ----------
    ra, dec : ndarray (N,)
        Catalog positions [deg].
    truth_ra, truth_dec : ndarray (M,)
        Truth positions [deg].
    max_sep : float
        Largest separation kept [arcsec].

    Returns
    -------
    idx : ndarray of int64 (N,)
        Index of the nearest truth object (-1 where unmatched).
    sep : ndarray of float64 (N,)
        Separation [arcsec].
    ok : ndarray of bool (N,)
        Matched within ``max_sep`` and the nearest catalog source of that truth object.
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    n = len(ra)
    if n == 0 or len(truth_ra) == 0:
        return np.full(n, -1, np.int64), np.full(n, np.inf), np.zeros(n, bool)
    cat = SkyCoord(np.asarray(ra, float) * u.deg, np.asarray(dec, float) * u.deg)
    tru = SkyCoord(np.asarray(truth_ra, float) * u.deg, np.asarray(truth_dec, float) * u.deg)
    idx, sep2d, _ = cat.match_to_catalog_sky(tru)
    sep = sep2d.to_value(u.arcsec)
    ok = sep <= max_sep
    # one catalog source per truth object: the nearest (ties -> lowest row)
    order = np.lexsort((np.arange(n), sep, idx))
    first = np.ones(n, bool)
    first[1:] = idx[order][1:] != idx[order][:-1]
    keep = np.zeros(n, bool)
    keep[order] = first
    idx = np.where(ok, idx, -1).astype(np.int64)
    return idx, sep, ok & keep


def _read(paths: Sequence[str | Path], columns: Sequence[str]) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise InputError("-", str(p), "file does not exist")
        schema = pq.read_schema(p)
        have = [c for c in columns if c in schema.names]
        tables.append(pq.read_table(p, columns=have))
    table = pa.concat_tables(tables, promote_options="default")
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}


def score_catalog(catalog: str | Path, truth: Sequence[str | Path], *, column: str = "z_median",
                  max_sep: float = 1.0, mag_column: str = "mag_r") -> dict[str, Any]:
    """Photo-z metrics of a catalog against truth tables matched by position.

    Parameters
    ----------
    catalog : path
        Parquet with ``ra``, ``dec`` and ``column`` (and optionally ``z_pdf`` with the
        grid in the file metadata ``tilecat.z_grid``, for PIT and CRPS).
    truth : sequence of paths
        Parquet truth tables (``ra``, ``dec``, ``redshift``; ``is_star`` rows dropped).
    column : str
        Point-estimate column.
    max_sep : float
        Match radius [arcsec].
    mag_column : str
        Truth magnitude for the per-magnitude table.

    Returns
    -------
    dict
        ``n_catalog``, ``n_truth_galaxies``, ``n_matched``, point metrics, PDF metrics
        when ``z_pdf`` is present, ``by_mag`` rows.

    Raises
    ------
    InputError
        Missing files or columns.
    """
    import pyarrow.parquet as pq

    from .grid import META_KEY, ZGrid
    from .metrics import metrics_by_bin, pdf_metrics, point_metrics

    cpath = Path(catalog)
    cat = _read([cpath], ["ra", "dec", column, "z_pdf"])
    for c in ("ra", "dec", column):
        if c not in cat:
            raise InputError("-", str(cpath), f"catalog has no column {c!r}")
    tru = _read(list(truth), ["ra", "dec", "redshift", "is_star", mag_column])
    for c in ("ra", "dec", "redshift"):
        if c not in tru:
            raise InputError("-", str(truth[0]), f"truth table has no column {c!r}")
    gal = np.ones(len(tru["ra"]), bool)
    if "is_star" in tru:
        gal &= ~np.asarray(tru["is_star"], bool)
    t_ra, t_dec, t_z = tru["ra"][gal], tru["dec"][gal], np.asarray(tru["redshift"], float)[gal]
    idx, sep, ok = match_sky(cat["ra"], cat["dec"], t_ra, t_dec, max_sep)
    zp = np.asarray(cat[column], float)[ok]
    zt = t_z[idx[ok]]
    out: dict[str, Any] = {"n_catalog": int(len(cat["ra"])), "n_truth_galaxies": int(gal.sum()),
                           "n_matched": int(ok.sum()), "point_estimate": column,
                           "max_sep_arcsec": float(max_sep),
                           "median_sep_arcsec": float(np.median(sep[ok])) if ok.any() else None,
                           **point_metrics(zp, zt)}
    if "z_pdf" in cat and ok.any():
        meta = pq.read_schema(cpath).metadata or {}
        if META_KEY.encode() in meta:
            grid = ZGrid.from_meta(json.loads(meta[META_KEY.encode()]))
            pdf = np.array([np.asarray(v, float) for v in cat["z_pdf"][ok]])
            pm = pdf_metrics(pdf, grid, zt)
            out.update({k: pm[k] for k in ("pit_ks", "pit_cvm", "pit_hist", "crps")})
    if mag_column in tru and ok.any():
        mags = np.asarray(tru[mag_column], float)[gal][idx[ok]]
        out["by_mag"] = metrics_by_bin(zp, zt, mags, [10, 18, 20, 21, 22, 23, 24, 26])
    return out
