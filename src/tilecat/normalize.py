"""The dynamic-range normalisation every model input goes through (DESIGN.md §5).

x = arcsinh(F / sigma), with F background-subtracted flux and sigma the noise
(per pixel from the inverse variance, or one robust value per band).
"""

from __future__ import annotations

import numpy as np

__all__ = ["sigma_from_invvar", "robust_sigma", "asinh_norm"]


def sigma_from_invvar(invvar: np.ndarray, fill: float | None = None) -> np.ndarray:
    """Per-pixel noise sigma = 1/sqrt(invvar).

    Parameters
    ----------
    invvar : ndarray, shape (..., ny, nx)
        Inverse variance, flux^-2. Zero or non-finite means no data.
    fill : float, optional
        Sigma given to no-data pixels (default: the median sigma of the valid ones).

    Returns
    -------
    ndarray, same shape, float32
        Sigma in flux units.
    """
    iv = np.asarray(invvar, dtype=np.float32)
    good = np.isfinite(iv) & (iv > 0)
    sigma = np.empty_like(iv)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma[good] = 1.0 / np.sqrt(iv[good])
    if fill is None:
        fill = float(np.median(sigma[good])) if good.any() else 1.0
    sigma[~good] = fill
    return sigma


def robust_sigma(image: np.ndarray) -> float:
    """Robust noise estimate (1.4826 MAD) of an image, flux units."""
    v = np.asarray(image, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 1.0
    med = np.median(v)
    s = 1.4826 * np.median(np.abs(v - med))
    return float(s) if s > 0 else 1.0


def asinh_norm(flux: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    """arcsinh(F/sigma) as float32; non-finite input becomes 0.

    Parameters
    ----------
    flux : ndarray
        Background-subtracted flux.
    sigma : ndarray or float
        Noise in the same units (broadcastable).
    """
    x = np.arcsinh(np.asarray(flux, dtype=np.float32) / np.asarray(sigma, dtype=np.float32))
    x[~np.isfinite(x)] = 0.0
    return x.astype(np.float32, copy=False)
