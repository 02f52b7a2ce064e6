"""Outlier scores: Mahalanobis distance in latent space, and its combination with the
reconstruction chi^2.

Mahalanobis: the training set's posterior means are summarised by their mean ``m``
and covariance ``C`` (stored in the model card); an object's distance is
``d = sqrt((mu - m)^T C^-1 (mu - m))``. For Gaussian latents in 40 dimensions a
typical object has d ~ sqrt(40) ~ 6.3 (heavy-tailed latents, as the shipped model's,
give smaller typical values); anomalies score higher.

Combined score (:func:`combined_score`, the catalog's ``latent_outlier_score`` for
cards with ``outlier_standardisation``): each of ``log d`` and ``log recon_chi2`` is
standardised against the training galaxies, ``z = (log v - median) / (1.4826 MAD)``,
turned into a one-sided Gaussian tail probability ``p = Phi(-z)``, and the two are
combined with Fisher's method, ``X = -2 (ln p_1 + ln p_2)``, whose tail probability
under chi^2 with 4 degrees of freedom is ``P = exp(-X / 2) (1 + X / 2)``. The score is
``-log10 P``: 0.22 at both training medians, near 0 for typical galaxies, larger for
anomalies (3 means a combined tail probability of 1e-3). The latent distance sees
objects whose encoding is unusual; the chi^2 sees light the decoder cannot reproduce
(trails, cosmic rays, blends), which the encoder often maps to ordinary latents.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fit_gaussian", "mahalanobis", "gaussian_to_card", "gaussian_from_card",
           "fit_standardisation", "combined_score"]

#: MAD -> standard deviation of a Gaussian
_MAD_SD = 1.4826


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


def _robust(v: np.ndarray) -> tuple[float, float]:
    med = float(np.median(v))
    sd = _MAD_SD * float(np.median(np.abs(v - med)))
    return med, sd if sd > 0 else 1.0


def fit_standardisation(distance: np.ndarray, chi2: np.ndarray) -> dict[str, float]:
    """Median and robust sd of ``log distance`` and ``log chi2`` over training objects.

    Parameters
    ----------
    distance : ndarray (N,)
        Mahalanobis distances of training objects (> 0).
    chi2 : ndarray (N,)
        Their reconstruction chi^2 per pixel (> 0).

    Returns
    -------
    dict
        ``log_distance_median``, ``log_distance_sd``, ``log_chi2_median``, ``log_chi2_sd``.
    """
    tiny = 1e-12
    dm, ds = _robust(np.log(np.maximum(np.asarray(distance, np.float64), tiny)))
    cm, cs = _robust(np.log(np.maximum(np.asarray(chi2, np.float64), tiny)))
    return {"log_distance_median": dm, "log_distance_sd": ds,
            "log_chi2_median": cm, "log_chi2_sd": cs}


def combined_score(distance: np.ndarray, chi2: np.ndarray,
                   standard: dict[str, float]) -> np.ndarray:
    """``-log10`` of the Fisher-combined tail probability (module docstring), ``(N,)``.

    Parameters
    ----------
    distance, chi2 : ndarray (N,)
        Mahalanobis distances and reconstruction chi^2 per pixel.
    standard : dict
        From :func:`fit_standardisation` (the model card's ``outlier_standardisation``).

    Returns
    -------
    ndarray of float64 (N,)
        Element-wise (a row's score does not depend on the other rows).
    """
    from scipy.special import log_ndtr

    tiny = 1e-12
    z1 = (np.log(np.maximum(np.asarray(distance, np.float64), tiny))
          - standard["log_distance_median"]) / standard["log_distance_sd"]
    z2 = (np.log(np.maximum(np.asarray(chi2, np.float64), tiny))
          - standard["log_chi2_median"]) / standard["log_chi2_sd"]
    x = -2.0 * (log_ndtr(-z1) + log_ndtr(-z2))  # Fisher's statistic, chi^2 with 4 dof
    log_p = -0.5 * x + np.log1p(0.5 * x)  # ln of its survival function
    return np.maximum(-log_p / np.log(10.0), 0.0)
