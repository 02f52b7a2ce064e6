"""Fit calibration maps (:mod:`tilecat.calibrate.calibrators`) on a labelled set."""

from __future__ import annotations

from typing import Any

import numpy as np

from .calibrators import (BiasTemperature, Calibrator, Chain, Identity, Isotonic, PitMap,
                          Temperature,
                          normalise_rows)

__all__ = ["fit_temperature", "fit_bcts", "fit_isotonic", "fit_pit_map", "fit_calibrator",
           "METHODS", "PDF_METHODS", "bin_index"]

#: calibration methods of :func:`fit_calibrator`
METHODS: tuple[str, ...] = ("temperature", "bcts", "isotonic", "pit", "bcts+pit", "identity")
#: the methods for binned redshift PDFs
PDF_METHODS: tuple[str, ...] = ("bcts+pit", "temperature", "pit", "identity")


def fit_temperature(p: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
                    ) -> Temperature:
    """Temperature minimising the negative log-likelihood of the true classes.

    Parameters
    ----------
    p : ndarray, shape (N, K)
        Uncalibrated probabilities.
    y : ndarray of int, shape (N,)
        True class index.
    bounds : (float, float)
        Search range of T.

    Returns
    -------
    Temperature
        T = 1 when there are no objects.
    """
    from scipy.optimize import minimize_scalar

    p = normalise_rows(p)
    y = np.asarray(y, np.int64)
    if p.shape[0] == 0:
        return Temperature(1.0)
    with np.errstate(divide="ignore"):
        logp = np.log(p)
    logp = np.maximum(logp - logp.max(axis=1, keepdims=True), -745.0)
    true = logp[np.arange(len(y)), y]

    def loss(log_t: float) -> float:
        z = logp / np.exp(log_t)
        top = z.max(axis=1)
        lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
        return float((lse - true / np.exp(log_t)).mean())

    res = minimize_scalar(loss, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-7})
    return Temperature(float(np.round(np.exp(res.x), 6)))


def fit_bcts(p: np.ndarray, y: np.ndarray, l2: float = 1e-4) -> BiasTemperature:
    """Bias-corrected temperature scaling minimising the NLL of the true classes.

    Parameters
    ----------
    p : ndarray, shape (N, K)
        Uncalibrated probabilities.
    y : ndarray of int, shape (N,)
        True class index.
    l2 : float
        Small ridge on the biases (keeps them finite for a class absent from ``y``).

    Returns
    -------
    BiasTemperature
        ``bias[0] = 0`` (only differences matter).
    """
    from scipy.optimize import minimize

    p = normalise_rows(p)
    y = np.asarray(y, np.int64)
    n, k = p.shape
    if n == 0:
        return BiasTemperature(1.0, (0.0,) * k)
    with np.errstate(divide="ignore"):
        logp = np.log(p)
    logp = np.maximum(logp - logp.max(axis=1, keepdims=True), -745.0)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        inv_t = np.exp(-theta[0])
        b = np.concatenate([[0.0], theta[1:]])
        z = logp * inv_t + b
        z -= z.max(axis=1, keepdims=True)
        q = np.exp(z)
        s = q.sum(axis=1, keepdims=True)
        q /= s
        val = float(-(z[np.arange(n), y] - np.log(s[:, 0])).mean())
        dz = (q - onehot) / n  # d loss / d z
        g_t = float(np.einsum("ij,ij->", dz, logp)) * -inv_t  # d z / d log T = -logp / T
        g_b = dz.sum(axis=0)[1:]
        val += 0.5 * l2 * float(np.sum(theta[1:] ** 2))
        return val, np.concatenate([[g_t], g_b + l2 * theta[1:]])

    res = minimize(loss, np.zeros(k), jac=True, method="L-BFGS-B",
                   bounds=[(np.log(0.05), np.log(20.0))] + [(-20.0, 20.0)] * (k - 1),
                   options={"maxiter": 500, "gtol": 1e-9})
    t = float(np.round(np.exp(res.x[0]), 6))
    return BiasTemperature(t, (0.0,) + tuple(float(np.round(v, 6)) for v in res.x[1:]))


def fit_isotonic(p: np.ndarray, y: np.ndarray, decimals: int = 6) -> Isotonic:
    """One-vs-rest isotonic regression per class (sklearn), stored as thresholds.

    Parameters
    ----------
    p : ndarray, shape (N, K)
    y : ndarray of int, shape (N,)
    decimals : int
        Rounding of the stored thresholds (card size).
    """
    from sklearn.isotonic import IsotonicRegression

    p = normalise_rows(p)
    y = np.asarray(y, np.int64)
    xs, ys = [], []
    for c in range(p.shape[1]):
        target = (y == c).astype(np.float64)
        if p.shape[0] == 0 or target.min() == target.max():
            xs.append((0.0, 1.0))
            ys.append((0.0, 1.0) if p.shape[0] == 0 else (float(target[0]),) * 2)
            continue
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p[:, c], target)
        x = np.round(iso.X_thresholds_, decimals)
        v = np.round(iso.y_thresholds_, decimals)
        keep = np.concatenate([[True], np.diff(x) > 0])  # strictly increasing after rounding
        xs.append(tuple(map(float, x[keep])))
        ys.append(tuple(map(float, v[keep])))
    return Isotonic(tuple(xs), tuple(ys))


def bin_index(grid: Any, z: np.ndarray) -> np.ndarray:
    """Index of the grid bin holding each redshift (clipped to the grid), int64 ``(N,)``."""
    z = np.asarray(z, np.float64)
    return np.clip(np.floor((z - grid.z_min) / grid.width).astype(np.int64), 0, grid.n_bins - 1)


def fit_pit_map(p: np.ndarray, grid: Any, z_true: np.ndarray, n_knots: int = 51,
                mix: float = 1e-3) -> PitMap:
    """PIT-CDF recalibration of binned PDFs.

    Parameters
    ----------
    p : ndarray, shape (N, K)
        PDFs on ``grid``.
    grid : tilecat.photoz.grid.ZGrid
    z_true : ndarray, shape (N,)
    n_knots : int
        Knots of the piecewise-linear ``G`` (empirical CDF of the PIT values).
    mix : float
        Weight of the identity mixed into ``G`` so that it is strictly increasing
        (no bin is ever given probability 0 by the map alone).
    """
    from ..photoz.metrics import pit

    u = np.linspace(0.0, 1.0, int(n_knots))
    v = np.sort(pit(p, grid, z_true))
    if v.size == 0:
        return PitMap(tuple(u), tuple(u))
    g = np.searchsorted(v, u, side="right") / v.size
    g = (1.0 - mix) * g + mix * u
    g[0], g[-1] = 0.0, 1.0
    return PitMap(tuple(map(float, u)), tuple(map(float, np.round(g, 8))))


def fit_calibrator(method: str, p: np.ndarray, y: np.ndarray | None = None, *,
                   grid: Any = None, z_true: np.ndarray | None = None) -> Calibrator:
    """Fit a calibrator of the given method.

    Parameters
    ----------
    method : {"temperature", "bcts", "isotonic", "pit", "bcts+pit", "identity"}
        ``pit`` and ``bcts+pit`` (BCTS over the redshift bins, then the PIT map fitted
        on its output: a :class:`Chain`) need ``grid`` and ``z_true`` (PDFs only).
    p : ndarray, shape (N, K)
    y : ndarray of int (N,), optional
        True class (for PDFs: derived from ``z_true`` when absent).

    Raises
    ------
    ValueError
        Unknown method or missing labels.
    """
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; known: {list(METHODS)}")
    if method == "identity":
        return Identity()
    if method == "pit":
        if grid is None or z_true is None:
            raise ValueError("the 'pit' calibration is for redshift PDFs: give grid and z_true")
        return fit_pit_map(p, grid, z_true)
    if method == "bcts+pit":
        if grid is None or z_true is None:
            raise ValueError("the 'bcts+pit' calibration is for redshift PDFs: give grid "
                             "and z_true")
        first = fit_bcts(p, bin_index(grid, z_true))
        return Chain((first, fit_pit_map(first.apply(p), grid, z_true)))
    if y is None:
        if grid is None or z_true is None:
            raise ValueError(f"method {method!r} needs labels")
        y = bin_index(grid, z_true)
    if method == "temperature":
        return fit_temperature(p, y)
    if method == "bcts":
        return fit_bcts(p, y)
    return fit_isotonic(p, y)
