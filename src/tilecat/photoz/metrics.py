"""Photo-z quality metrics, with the definitions of LSST DESC RAIL.

Point metrics on ``dz = (z_phot - z_true) / (1 + z_true)``:

* ``bias`` = median(dz);
* ``sigma_nmad`` = 1.4826 * median(|dz - median(dz)|);
* ``sigma_iqr`` = (q75(dz) - q25(dz)) / 1.349;
* ``outlier_frac_015`` = fraction with |dz| > 0.15;
* ``outlier_frac_rail`` = fraction with |dz| > max(0.06, 3 sigma_iqr) (RAIL's
  ``PointOutlierRate``).

PDF metrics on binned PDFs (:mod:`tilecat.photoz.summary`): the PIT (CDF at the true
redshift) with its histogram, Kolmogorov-Smirnov and Cramer-von Mises statistics
against the uniform distribution, and the CRPS (integral of (CDF(z) - H(z - z_true))^2
dz), computed exactly for the piecewise-linear CDF.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .grid import ZGrid
from .summary import cdf_at, normalise

__all__ = [
    "delta_z",
    "point_metrics",
    "pit",
    "pit_metrics",
    "crps",
    "pdf_metrics",
    "metrics_by_bin",
    "json_safe",
]


def delta_z(z_phot: np.ndarray, z_true: np.ndarray) -> np.ndarray:
    """``(z_phot - z_true) / (1 + z_true)``, float64."""
    zp = np.asarray(z_phot, np.float64)
    zt = np.asarray(z_true, np.float64)
    return (zp - zt) / (1.0 + zt)


def point_metrics(z_phot: np.ndarray, z_true: np.ndarray) -> dict[str, float]:
    """Bias, scatter and outlier fractions of point estimates (RAIL definitions).

    Parameters
    ----------
    z_phot, z_true : ndarray (N,)
        Photometric and true redshifts (non-finite pairs are dropped).

    Returns
    -------
    dict
        ``n``, ``bias``, ``sigma_nmad``, ``sigma_iqr``, ``outlier_frac_015``,
        ``outlier_frac_rail``, ``outlier_cut_rail`` (the cut used); NaN when empty.
    """
    dz = delta_z(z_phot, z_true)
    dz = dz[np.isfinite(dz)]
    if dz.size == 0:
        nan = float("nan")
        return {"n": 0, "bias": nan, "sigma_nmad": nan, "sigma_iqr": nan,
                "outlier_frac_015": nan, "outlier_frac_rail": nan, "outlier_cut_rail": nan}
    med = float(np.median(dz))
    q75, q25 = np.percentile(dz, [75.0, 25.0])
    s_iqr = float((q75 - q25) / 1.349)
    cut = max(0.06, 3.0 * s_iqr)
    return {
        "n": int(dz.size),
        "bias": med,
        "sigma_nmad": float(1.4826 * np.median(np.abs(dz - med))),
        "sigma_iqr": s_iqr,
        "outlier_frac_015": float(np.mean(np.abs(dz) > 0.15)),
        "outlier_frac_rail": float(np.mean(np.abs(dz) > cut)),
        "outlier_cut_rail": float(cut),
    }


def pit(p: np.ndarray, grid: ZGrid, z_true: np.ndarray) -> np.ndarray:
    """Probability integral transform: each PDF's CDF at its true redshift, (N,)."""
    return cdf_at(normalise(p), grid, np.asarray(z_true, np.float64))


def pit_metrics(pit_values: np.ndarray, n_bins: int = 20) -> dict[str, Any]:
    """Uniformity of PIT values.

    Returns
    -------
    dict
        ``pit_ks`` (KS statistic vs U(0,1)), ``pit_ks_pvalue``, ``pit_cvm`` (Cramer-von
        Mises statistic), ``pit_hist`` (fractions in ``n_bins`` equal bins; 1/n_bins each
        when calibrated), ``pit_outlier_rate`` (fraction of PIT < 1e-4 or > 1 - 1e-4,
        as in RAIL).
    """
    from scipy import stats

    v = np.asarray(pit_values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"pit_ks": float("nan"), "pit_ks_pvalue": float("nan"),
                "pit_cvm": float("nan"), "pit_hist": [], "pit_outlier_rate": float("nan")}
    ks = stats.kstest(v, "uniform")
    cvm = stats.cramervonmises(v, "uniform")
    h, _ = np.histogram(np.clip(v, 0, 1), bins=n_bins, range=(0.0, 1.0))
    return {
        "pit_ks": float(ks.statistic),
        "pit_ks_pvalue": float(ks.pvalue),
        "pit_cvm": float(cvm.statistic),
        "pit_hist": [round(float(x), 5) for x in h / v.size],
        "pit_outlier_rate": float(np.mean((v < 1e-4) | (v > 1 - 1e-4))),
    }


def _seg_sq(u0: np.ndarray, u1: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Integral of u^2 over a segment where u goes linearly from u0 to u1."""
    return length * (u0 * u0 + u0 * u1 + u1 * u1) / 3.0


def crps(p: np.ndarray, grid: ZGrid, z_true: np.ndarray) -> np.ndarray:
    """Continuous ranked probability score of each PDF, exact for the binned PDF.

    ``CRPS = integral (F(z) - H(z - z_true))^2 dz`` with ``F`` the piecewise-linear
    CDF (0 below the grid, 1 above) and ``H`` the step function.

    Parameters
    ----------
    p : ndarray (N, K)
    grid : ZGrid
    z_true : ndarray (N,)

    Returns
    -------
    ndarray of float64 (N,)
    """
    p = normalise(p)
    n, k = p.shape
    zt = np.asarray(z_true, np.float64)[:, None]
    e = grid.edges[None, :]
    a, b = e[:, :-1], e[:, 1:]
    cum = np.concatenate([np.zeros((n, 1)), np.cumsum(p, axis=1)], axis=1)
    f0, f1 = cum[:, :-1], cum[:, 1:]
    t = np.clip(zt, a, b)
    ft = f0 + (f1 - f0) * (t - a) / (b - a)
    left = _seg_sq(f0, ft, t - a)  # H = 0 before z_true
    right = _seg_sq(1.0 - ft, 1.0 - f1, b - t)  # H = 1 after z_true
    out = (left + right).sum(axis=1)
    z = zt[:, 0]
    out += np.where(z > grid.z_max, z - grid.z_max, 0.0)  # F = 1, H = 0
    out += np.where(z < grid.z_min, grid.z_min - z, 0.0)  # F = 0, H = 1
    return out


def pdf_metrics(p: np.ndarray, grid: ZGrid, z_true: np.ndarray,
                n_pit_bins: int = 20) -> dict[str, Any]:
    """PIT statistics (:func:`pit_metrics`) and mean CRPS (``crps``) of a set of PDFs."""
    out = pit_metrics(pit(p, grid, z_true), n_pit_bins)
    out["crps"] = float(np.mean(crps(p, grid, z_true))) if len(z_true) else float("nan")
    return out


def metrics_by_bin(z_phot: np.ndarray, z_true: np.ndarray, values: np.ndarray,
                   edges: Sequence[float]) -> list[dict[str, Any]]:
    """:func:`point_metrics` in bins of ``values`` (e.g. r magnitude).

    Returns
    -------
    list of dict
        One per bin ``[lo, hi)``: ``lo``, ``hi`` and the point metrics.
    """
    v = np.asarray(values, np.float64)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (v >= lo) & (v < hi)
        rows.append({"lo": float(lo), "hi": float(hi),
                     **point_metrics(np.asarray(z_phot)[m], np.asarray(z_true)[m])})
    return rows


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by None (strict JSON for model cards)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
