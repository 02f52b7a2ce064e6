"""The multi-band detection image and its noise.

The detection image is the inverse-variance weighted mean of the
background-subtracted bands,

    D(p) = sum_b w_b u_b(p) F_b(p) / sum_b w_b u_b(p),

with one weight per band, w_b = median over valid pixels of invvar_b (so D is a
fixed linear combination of the bands and keeps their PSF shapes), and
u_b(p) = 0 where band b is masked at pixel p (the band is then left out of the
mean there and the others renormalised). Its noise per pixel follows from linear
error propagation,

    sigma_D(p) = sqrt(sum_b w_b² u_b(p) sigma_b(p)²) / sum_b w_b u_b(p).

Pixels masked in every band have D = 0 and are masked for detection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DetectionImage", "band_weights", "detection_image"]


@dataclass(frozen=True)
class DetectionImage:
    """A detection image.

    Attributes
    ----------
    data : ndarray of float32, shape (ny, nx)
        Weighted mean flux, image flux units.
    err : ndarray of float32, shape (ny, nx)
        1-sigma noise per pixel, same units (finite everywhere; masked pixels get
        the median noise).
    mask : ndarray of bool, shape (ny, nx)
        True where every band is masked.
    weights : ndarray of float64, shape (band,)
        The band weights w_b (flux^-2).
    """

    data: np.ndarray
    err: np.ndarray
    mask: np.ndarray
    weights: np.ndarray


def band_weights(sigma: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """One inverse-variance weight per band: 1 / median(sigma_b²) over valid pixels.

    Parameters
    ----------
    sigma : ndarray, shape (band, ny, nx)
        Per-pixel noise, flux units.
    masked : ndarray of bool, shape (band, ny, nx)
        True where the band's pixel is not usable.

    Returns
    -------
    ndarray of float64, shape (band,)
        Zero for a band with no valid pixel.
    """
    w = np.zeros(sigma.shape[0])
    for b in range(sigma.shape[0]):
        valid = sigma[b][~masked[b]] if masked[b].any() else sigma[b].ravel()
        valid = valid[np.isfinite(valid) & (valid > 0)]
        if valid.size:
            # the median of a subsample is enough for a weight (and 10x faster)
            step = max(1, valid.size // 1_000_000)
            w[b] = 1.0 / float(np.median(valid[::step])) ** 2
    return w


def detection_image(
    images: np.ndarray,
    sigma: np.ndarray,
    masked: np.ndarray,
    weights: np.ndarray | None = None,
) -> DetectionImage:
    """Combine background-subtracted bands into one detection image.

    Parameters
    ----------
    images : ndarray, shape (band, ny, nx)
        Background-subtracted flux per band.
    sigma : ndarray, shape (band, ny, nx)
        Per-pixel noise per band (flux units).
    masked : ndarray of bool, shape (band, ny, nx)
        True where a band's pixel must not be used.
    weights : ndarray, shape (band,), optional
        Band weights; default :func:`band_weights`.

    Returns
    -------
    DetectionImage
    """
    nband, ny, nx = images.shape
    w = band_weights(sigma, masked) if weights is None else np.asarray(weights, dtype=np.float64)
    num = np.zeros((ny, nx), dtype=np.float32)
    den = np.zeros((ny, nx), dtype=np.float32)
    var = np.zeros((ny, nx), dtype=np.float32)
    for b in range(nband):
        if w[b] <= 0:
            continue
        wb: np.ndarray | np.float32
        if masked[b].any():
            wb = np.where(masked[b], np.float32(0), np.float32(w[b]))
            flux = np.where(masked[b], np.float32(0), images[b])
        else:
            wb, flux = np.float32(w[b]), images[b]
        num += wb * flux
        den += wb
        sb = np.asarray(sigma[b], dtype=np.float32)
        var += (wb * wb) * (sb * sb)
    mask = den <= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(num, den, out=num)
        np.sqrt(var, out=var)
        np.divide(var, den, out=var)
    num[mask] = 0.0
    good = np.isfinite(var) & (var > 0) & ~mask
    if not good.all():
        fill = np.float32(np.median(var[good])) if good.any() else np.float32(1.0)
        var[~good] = fill
        mask |= ~good
    return DetectionImage(
        data=np.ascontiguousarray(num, dtype=np.float32),
        err=np.ascontiguousarray(var, dtype=np.float32),
        mask=mask,
        weights=w,
    )
