"""Training augmentation that mimics coadd resampling.

Survey coadds (e.g. Legacy Survey bricks) are sums of exposures resampled with a
Lanczos-3 kernel, so their pixel noise is correlated and lower than the weight map
says (DR6 brick 0959p805: pixel rms ≈ 0.85 × invvar^-1/2), and sharp defects are
softened. The simulator draws white noise; shifting a patch by a random sub-pixel
offset with the same kernel gives the network both kinds of data.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["lanczos_weights", "lanczos_shift", "resample_some"]


def lanczos_weights(shift: float, a: int = 3) -> np.ndarray:
    """Normalised 1-D Lanczos-``a`` taps (length 2a) for a sub-pixel ``shift`` in (-1, 1)."""
    k = np.arange(-a + 1, a + 1, dtype=np.float64) - shift
    w = np.sinc(k) * np.sinc(k / a)
    return (w / w.sum()).astype(np.float64)


def lanczos_shift(img: np.ndarray, dy: float, dx: float, a: int = 3) -> np.ndarray:
    """Image (ny, nx) resampled at (y + dy, x + dx) with a separable Lanczos kernel
    (reflecting edges), float32."""
    out = np.asarray(img, dtype=np.float64)
    wy = lanczos_weights(dy, a)
    wx = lanczos_weights(dx, a)
    # correlate1d with origin so that output[i] = sum_k w[k] * in[i + k - a + 1]
    out = ndimage.correlate1d(out, wy, axis=0, mode="reflect", origin=-1)
    out = ndimage.correlate1d(out, wx, axis=1, mode="reflect", origin=-1)
    return out.astype(np.float32)


def resample_some(flux: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Resample a random ``fraction`` of the patches (n, ny, nx) with random shifts in
    [-0.5, 0.5) pixels per axis; returns a new array (the others copied unchanged)."""
    out = np.array(flux, dtype=np.float32, copy=True)
    pick = rng.random(len(out)) < fraction
    shifts = rng.uniform(-0.5, 0.5, (len(out), 2))
    for i in np.nonzero(pick)[0]:
        out[i] = lanczos_shift(out[i], shifts[i, 0], shifts[i, 1])
    return out
