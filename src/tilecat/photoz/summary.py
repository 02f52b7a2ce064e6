"""Summary statistics of binned redshift PDFs (the ``z_*`` catalog columns).

A PDF is an array ``p`` of shape ``(N, K)``: the probability of each bin of a
:class:`~tilecat.photoz.grid.ZGrid`, with a uniform density inside each bin, so the
CDF is piecewise linear between bin edges. Every statistic here follows from that
one definition, so point estimates are consistent with the PDF by construction.
"""

from __future__ import annotations

import numpy as np

from .grid import ZGrid

__all__ = ["normalise", "cdf_at", "quantile", "pdf_summary", "ODDS_HALF_WIDTH"]

#: z_odds integrates the PDF over mode +- ODDS_HALF_WIDTH * (1 + mode)
ODDS_HALF_WIDTH = 0.06


def normalise(p: np.ndarray) -> np.ndarray:
    """Non-negative rows summing to 1 (float64); an all-zero row becomes uniform.

    Parameters
    ----------
    p : ndarray (N, K)
    """
    p = np.clip(np.nan_to_num(np.asarray(p, dtype=np.float64), nan=0.0), 0.0, None)
    s = p.sum(axis=1, keepdims=True)
    k = p.shape[1]
    return np.where(s > 0, p / np.where(s > 0, s, 1.0), 1.0 / k)


def cdf_at(p: np.ndarray, grid: ZGrid, z: np.ndarray) -> np.ndarray:
    """CDF of each row of ``p`` at ``z`` (one value per row).

    Parameters
    ----------
    p : ndarray (N, K)
        Normalised bin probabilities.
    grid : ZGrid
    z : ndarray (N,) or scalar
        Redshift per row (values outside the grid give 0 or 1).

    Returns
    -------
    ndarray of float64 (N,)
    """
    p = np.asarray(p, np.float64)
    n, k = p.shape
    z = np.broadcast_to(np.asarray(z, np.float64), (n,))
    u = (z - grid.z_min) / grid.width  # position in bins
    j = np.clip(np.floor(u).astype(np.int64), 0, k - 1)
    frac = np.clip(u - j, 0.0, 1.0)
    cum = np.concatenate([np.zeros((n, 1)), np.cumsum(p, axis=1)], axis=1)
    rows = np.arange(n)
    out = cum[rows, j] + frac * p[rows, j]
    out = np.where(u <= 0, 0.0, out)
    return np.clip(np.where(u >= k, cum[:, -1], out), 0.0, 1.0)


def quantile(p: np.ndarray, grid: ZGrid, q: float | np.ndarray) -> np.ndarray:
    """Redshift where each row's CDF reaches ``q`` (linear inside the bin).

    Parameters
    ----------
    p : ndarray (N, K)
        Normalised bin probabilities.
    grid : ZGrid
    q : float or ndarray (N,)
        Probability level(s) in [0, 1].

    Returns
    -------
    ndarray of float64 (N,)
    """
    p = np.asarray(p, np.float64)
    n, k = p.shape
    q = np.broadcast_to(np.asarray(q, np.float64), (n,))
    cum = np.cumsum(p, axis=1)
    # first bin whose cumulative probability reaches q
    j = np.minimum((cum < q[:, None]).sum(axis=1), k - 1)
    rows = np.arange(n)
    below = cum[rows, j] - p[rows, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(p[rows, j] > 0, (q - below) / p[rows, j], 0.5)
    return grid.z_min + (j + np.clip(frac, 0.0, 1.0)) * grid.width


def pdf_summary(p: np.ndarray, grid: ZGrid) -> dict[str, np.ndarray]:
    """Point estimates and spread of binned PDFs.

    Parameters
    ----------
    p : ndarray (N, K)
        Bin probabilities (normalised here: negatives clipped, rows rescaled).
    grid : ZGrid

    Returns
    -------
    dict of float64 arrays (N,)
        ``z_mean`` (sum p_k c_k), ``z_median`` (CDF = 0.5), ``z_mode`` (centre of the
        most probable bin; the first one on ties), ``z_std`` (standard deviation of the
        piecewise-uniform density: sum p_k (c_k - mean)^2 + width^2 / 12), ``z_odds``
        (probability within mode +- 0.06 (1 + mode)).
    """
    p = normalise(p)
    c = grid.centres
    mean = (p * c).sum(axis=1)
    var = (p * (c[None, :] - mean[:, None]) ** 2).sum(axis=1) + grid.width**2 / 12.0
    mode = c[np.argmax(p, axis=1)] if p.shape[0] else np.zeros(0)
    half = ODDS_HALF_WIDTH * (1.0 + mode)
    odds = cdf_at(p, grid, mode + half) - cdf_at(p, grid, mode - half)
    return {
        "z_mean": mean,
        "z_median": quantile(p, grid, 0.5),
        "z_mode": mode,
        "z_std": np.sqrt(var),
        "z_odds": np.clip(odds, 0.0, 1.0),
    }
