"""Structural similarity (SSIM, Wang et al. 2004) with a Gaussian window.

Same conventions as ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=L)``: local means, variances and
covariance from a Gaussian filter of standard deviation 1.5 pixels truncated at 3.5
sigma (11x11 window), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, and the SSIM map
averaged over the pixels at least 5 pixels (half the window) from the border.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ssim", "ssim_stamps"]

_SIGMA = 1.5
_TRUNCATE = 3.5
_K1, _K2 = 0.01, 0.03


def ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Mean SSIM of two 2-d images.

    Parameters
    ----------
    a, b : ndarray (H, W)
        Images (H, W >= 11).
    data_range : float
        ``L``, the dynamic range of the images (max - min possible value).

    Returns
    -------
    float
    """
    from scipy.ndimage import gaussian_filter

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two 2-d images of one shape, got {a.shape}, {b.shape}")
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")

    def filt(v: np.ndarray) -> np.ndarray:
        return gaussian_filter(v, _SIGMA, truncate=_TRUNCATE, mode="reflect")

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a * mu_a
    var_b = filt(b * b) - mu_b * mu_b
    cov = filt(a * b) - mu_a * mu_b
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    pad = int(_TRUNCATE * _SIGMA + 0.5)  # 5: half the 11-pixel window
    return float(smap[pad:-pad, pad:-pad].mean())


def ssim_stamps(x: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Mean SSIM over bands of each stamp, ``data_range`` = the input band's max - min.

    Parameters
    ----------
    x, recon : ndarray (N, B, S, S)

    Returns
    -------
    ndarray of float64 (N,)
    """
    n, nb = x.shape[:2]
    out = np.empty(n)
    for i in range(n):
        vals = []
        for j in range(nb):
            rng = float(x[i, j].max() - x[i, j].min())
            vals.append(ssim(x[i, j], recon[i, j], rng if rng > 0 else 1.0))
        out[i] = float(np.mean(vals))
    return out
