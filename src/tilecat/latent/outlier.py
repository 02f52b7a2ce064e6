"""Outlier score in latent space: Mahalanobis distance to the training latents.

The training set's posterior means are summarised by their mean ``m`` and covariance
``C`` (stored in the model card); an object's score is
``sqrt((mu - m)^T C^-1 (mu - m))``. For latents close to N(0, I) in 40 dimensions the
score of a typical object is about sqrt(40) ~ 6.3; anomalies score higher.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fit_gaussian", "mahalanobis", "gaussian_to_card", "gaussian_from_card"]


def fit_gaussian(latents: np.ndarray, ridge: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` of latents ``(N, D)`` (float64).

    A ridge ``ridge * mean(diag)`` is added to the diagonal so that the inverse exists.
    """
    z = np.asarray(latents, np.float64)
    mean = z.mean(axis=0)
    cov = np.cov(z, rowvar=False)
    cov = cov + np.eye(cov.shape[0]) * ridge * float(np.mean(np.diag(cov)))
    return mean, cov


def mahalanobis(latents: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of each row of ``latents`` (N, D) -> (N,) float64.

    Computed row by row with a fixed summation order (broadcast products, no BLAS
    matrix product), so a row's value does not depend on the other rows.
    """
    z = np.asarray(latents, np.float64) - np.asarray(mean, np.float64)
    prec = np.linalg.inv(np.asarray(cov, np.float64))
    prec = 0.5 * (prec + prec.T)
    out = np.empty(z.shape[0])
    step = 4096
    for i in range(0, z.shape[0], step):
        d = z[i:i + step]
        q = (d[:, :, None] * prec[None, :, :]).sum(axis=1)  # (n, D) = d @ P
        out[i:i + step] = (q * d).sum(axis=1)
    return np.sqrt(np.clip(out, 0.0, None))


def gaussian_to_card(mean: np.ndarray, cov: np.ndarray) -> dict[str, Any]:
    """JSON form (lists of floats) of a fitted Gaussian."""
    return {"mean": [float(v) for v in mean], "cov": [[float(v) for v in row] for row in cov]}


def gaussian_from_card(d: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`gaussian_to_card`."""
    return np.asarray(d["mean"], np.float64), np.asarray(d["cov"], np.float64)
