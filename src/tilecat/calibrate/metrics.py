"""Calibration figures of probabilistic classifiers and redshift PDFs.

Classifiers (Guo et al. 2017): top-label expected calibration error over equal-width
confidence bins (:func:`ece`), the reliability table behind a reliability diagram
(:func:`reliability`), the multi-class Brier score (:func:`brier`) and the negative
log-likelihood (:func:`nll`). Redshift PDFs: the PIT and CRPS of
:mod:`tilecat.photoz.metrics` (one implementation), summarised by :func:`pdf_scores`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["N_BINS", "ece", "reliability", "brier", "nll", "class_scores", "pdf_scores",
           "ks_distance"]

#: confidence bins of the ECE and the reliability diagrams
N_BINS = 15


def _check(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise ValueError(f"need probabilities (N, K) and labels (N,), got {p.shape}, {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError("labels must be class indices in [0, K)")
    return p, y.astype(np.int64)


def reliability(p: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> list[dict[str, float]]:
    """Top-label reliability table.

    Parameters
    ----------
    p : ndarray, shape (N, K)
        Class probabilities.
    y : ndarray of int, shape (N,)
        True class index.
    n_bins : int
        Equal-width bins of the confidence ``max_c p_c`` on [0, 1].

    Returns
    -------
    list of dict
        One per non-empty bin: ``lo``, ``hi``, ``n``, ``confidence`` (mean max p) and
        ``accuracy`` (fraction whose most probable class is the true one).
    """
    p, y = _check(p, y)
    conf = p.max(axis=1)
    hit = p.argmax(axis=1) == y
    k = np.clip((conf * n_bins).astype(np.int64), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = k == b
        if m.any():
            rows.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": int(m.sum()),
                         "confidence": float(conf[m].mean()), "accuracy": float(hit[m].mean())})
    return rows


def ece(p: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """Top-label expected calibration error: ``sum_b (n_b / N) |accuracy_b - confidence_b|``.

    Parameters
    ----------
    p : ndarray, shape (N, K)
    y : ndarray of int, shape (N,)
    n_bins : int
        Equal-width confidence bins (15, as Guo et al. 2017).

    Returns
    -------
    float
        In [0, 1]; NaN for no objects.
    """
    rows = reliability(p, y, n_bins)
    n = sum(r["n"] for r in rows)
    if n == 0:
        return float("nan")
    return float(sum(r["n"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / n)


def brier(p: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score ``mean_i sum_c (p_ic - [y_i = c])^2`` (0 is perfect, max 2)."""
    p, y = _check(p, y)
    if p.shape[0] == 0:
        return float("nan")
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), y] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def nll(p: np.ndarray, y: np.ndarray, floor: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true classes (natural log)."""
    p, y = _check(p, y)
    if p.shape[0] == 0:
        return float("nan")
    return float(-np.log(np.maximum(p[np.arange(p.shape[0]), y], floor)).mean())


def class_scores(p: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> dict[str, Any]:
    """``n``, ``ece``, ``brier``, ``nll`` and ``accuracy`` of a set of predictions."""
    p, y = _check(p, y)
    return {"n": int(p.shape[0]), "ece": ece(p, y, n_bins), "brier": brier(p, y),
            "nll": nll(p, y),
            "accuracy": float((p.argmax(1) == y).mean()) if p.shape[0] else float("nan")}


def pdf_scores(p: np.ndarray, grid: Any, z_true: np.ndarray) -> dict[str, Any]:
    """PIT uniformity and CRPS of binned redshift PDFs.

    Parameters
    ----------
    p : ndarray, shape (N, K)
        Bin probabilities on ``grid`` (:class:`tilecat.photoz.grid.ZGrid`).
    z_true : ndarray, shape (N,)

    Returns
    -------
    dict
        ``n``, ``pit_ks``, ``pit_cvm``, ``pit_hist`` (20 bins), ``pit_outlier_rate``,
        ``crps`` (mean) and ``nll`` (of the bin holding z_true).
    """
    from ..photoz.metrics import pdf_metrics

    z = np.asarray(z_true, np.float64)
    out = pdf_metrics(np.asarray(p, np.float64), grid, z)
    k = np.clip(np.floor((z - grid.z_min) / grid.width).astype(np.int64), 0, grid.n_bins - 1)
    out["nll"] = nll(p, k) if len(z) else float("nan")
    out["n"] = int(len(z))
    out.pop("pit_ks_pvalue", None)
    return out


def ks_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between two binned distributions: ``max |cumsum p - cumsum q|``.

    Parameters
    ----------
    p, q : ndarray, shape (K,)
        Non-negative bin weights (normalised here).
    """
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    return float(np.abs(np.cumsum(p / p.sum()) - np.cumsum(q / q.sum())).max())
