"""Outlier scores: Mahalanobis distance in latent space and the reconstruction chi^2.

Mahalanobis: the training set's posterior means are summarised by their mean ``m``
and covariance ``C`` (stored in the model card); an object's distance is
``d = sqrt((mu - m)^T C^-1 (mu - m))``. For Gaussian latents in 40 dimensions a
typical object has d ~ sqrt(40) ~ 6.3 (heavy-tailed latents, as the shipped model's,
give smaller typical values); anomalies score higher.

Combined score (:func:`combined_score`, the catalog's ``latent_outlier_score`` for
earlier cards with ``outlier_standardisation`` but no ``score`` key): each of ``log d``
and ``log chi2`` is standardised against the training galaxies, ``z = (log v - median) / (1.4826 MAD)``,
turned into a one-sided Gaussian tail probability ``p = Phi(-z)``, and the two are
combined with Fisher's method, ``X = -2 (ln p_1 + ln p_2)``, whose tail probability
under chi^2 with 4 degrees of freedom is ``P = exp(-X / 2) (1 + X / 2)``. The score is
``-log10 P``: 0.22 at both training medians, near 0 for typical galaxies, larger for
anomalies (3 means a combined tail probability of 1e-3). The latent distance sees
objects whose encoding is unusual; the chi^2 sees light the decoder cannot reproduce
(trails, cosmic rays, blends), which the encoder often maps to ordinary latents.

Current cards (``outlier_standardisation.score == "chi2_core"``, :func:`chi2_score`):
the score is ``-log10`` of the one-sided tail probability ``Phi(-z)`` of the
standardised log chi^2 per pixel inside a central disc of ``core_radius_px`` pixels
(``recon_chi2_core``) alone; the Mahalanobis distance is a catalog column of its own
(``latent_mahalanobis``). Why, measured with benchmarks/latent.py on the shipped model
(ROC AUC for injected trails, cosmic rays, blends of three, rings and arcs, none of
them in training): Mahalanobis 0.73 (a 10-component Gaussian mixture or a k-NN
distance in latent space, 0.76-0.78: the encoder maps most of these stamps to ordinary
latents), whole-stamp chi^2 0.899, Fisher combination of the two 0.880, core chi^2
0.913, core chi^2 with Mahalanobis 0.891: a weak statistic only dilutes a strong one.
Over the whole 64x64 stamp the chi^2 is diluted by ~3000 sky pixels and raised, in
ordinary galaxies, by neighbours the decoder does not reproduce at the stamp edges;
inside the galaxy's own disc light across it weighs ~4x more.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fit_gaussian", "mahalanobis", "gaussian_to_card", "gaussian_from_card",
           "fit_standardisation", "chi2_statistic", "chi2_score", "combined_score",
           "outlier_score"]

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


def fit_standardisation(distance: np.ndarray, chi2: np.ndarray,
                        core_radius_px: float | None = None) -> dict[str, Any]:
    """Median and robust sd of ``log distance`` and ``log chi2`` over training objects.

    Parameters
    ----------
    distance : ndarray (N,)
        Mahalanobis distances of training objects (> 0).
    chi2 : ndarray (N,)
        Their reconstruction chi^2 per pixel (> 0): ``recon_chi2_core`` when
        ``core_radius_px`` is given, else the whole stamp's ``recon_chi2``.
    core_radius_px : float, optional
        Radius (pixels) of the central disc of ``recon_chi2_core``.

    Returns
    -------
    dict
        ``log_distance_median``, ``log_distance_sd``, ``log_chi2_median``, ``log_chi2_sd``,
        and with ``core_radius_px``: ``chi2_statistic`` (``"recon_chi2_core"``),
        ``core_radius_px`` and ``score`` (``"chi2_core"``: :func:`outlier_score` uses
        the chi^2 alone).
    """
    tiny = 1e-12
    dm, ds = _robust(np.log(np.maximum(np.asarray(distance, np.float64), tiny)))
    cm, cs = _robust(np.log(np.maximum(np.asarray(chi2, np.float64), tiny)))
    out: dict[str, Any] = {"log_distance_median": dm, "log_distance_sd": ds,
                           "log_chi2_median": cm, "log_chi2_sd": cs}
    if core_radius_px is not None:
        out.update(chi2_statistic="recon_chi2_core", core_radius_px=float(core_radius_px),
                   score="chi2_core")
    return out


def chi2_statistic(standard: dict[str, Any]) -> str:
    """The raw output a standardisation was fitted on: ``recon_chi2_core`` or ``recon_chi2``."""
    return str(standard.get("chi2_statistic", "recon_chi2"))


def chi2_score(chi2: np.ndarray, standard: dict[str, Any]) -> np.ndarray:
    """``-log10 Phi(-z)`` of the standardised log chi^2 (module docstring), ``(N,)`` float64.

    Parameters
    ----------
    chi2 : ndarray (N,)
        Reconstruction chi^2 per pixel (the statistic :func:`chi2_statistic` names).
    standard : dict
        From :func:`fit_standardisation`.
    """
    from scipy.special import log_ndtr

    z = (np.log(np.maximum(np.asarray(chi2, np.float64), 1e-12))
         - standard["log_chi2_median"]) / standard["log_chi2_sd"]
    return np.maximum(-log_ndtr(-z) / np.log(10.0), 0.0)


def outlier_score(distance: np.ndarray, chi2: np.ndarray,
                  standard: dict[str, Any] | None) -> np.ndarray:
    """The catalog's ``latent_outlier_score`` for a card's ``outlier_standardisation``.

    ``score == "chi2_core"``: :func:`chi2_score` of ``chi2``; a card without ``score``:
    :func:`combined_score`; no standardisation (the first model): ``distance`` itself.
    ``chi2`` is the statistic :func:`chi2_statistic` names. Element-wise, float64 (N,).
    """
    if standard is None:
        return np.asarray(distance, np.float64)
    if standard.get("score") == "chi2_core":
        return chi2_score(chi2, standard)
    return combined_score(distance, chi2, standard)


def combined_score(distance: np.ndarray, chi2: np.ndarray,
                   standard: dict[str, Any]) -> np.ndarray:
    """``-log10`` of the Fisher-combined tail probability (module docstring), ``(N,)``.

    Parameters
    ----------
    distance, chi2 : ndarray (N,)
        Mahalanobis distances and reconstruction chi^2 per pixel (the statistic
        :func:`chi2_statistic` names).
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
