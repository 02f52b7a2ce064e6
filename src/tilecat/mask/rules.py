"""Rule-based mask bits (never set by a network).

- ``nodata`` (bit 7) where the inverse variance is 0 (or non-finite) or the pixel value
  is non-finite;
- every bit of the input data-quality plane is carried over: pixels that arrive
  flagged stay flagged (DESIGN.md §5, evaluation hygiene).
"""

from __future__ import annotations

import numpy as np

from ..bits import bit

__all__ = ["nodata", "rule_bits"]


def nodata(image: np.ndarray, invvar: np.ndarray) -> np.ndarray:
    """Boolean no-data map: ``invvar <= 0``, non-finite ``invvar`` or non-finite image.

    Parameters
    ----------
    image, invvar : ndarray, shape (..., ny, nx)
        Flux and inverse variance (flux^-2).
    """
    iv = np.asarray(invvar)
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(iv) & (iv > 0))
    return bad | ~np.isfinite(np.asarray(image))


def rule_bits(image: np.ndarray, invvar: np.ndarray, dq: np.ndarray | None) -> np.ndarray:
    """uint16 mask: input ``dq`` bits OR ``nodata`` by rule.

    Parameters
    ----------
    image, invvar : ndarray, shape (..., ny, nx)
        Flux and inverse variance.
    dq : ndarray of uint16, same shape, or None
        Input data-quality bits (tilecat bits, already remapped by ingest).

    Returns
    -------
    ndarray of uint16, same shape
    """
    out = np.zeros(np.shape(image), dtype=np.uint16)
    if dq is not None:
        out |= np.asarray(dq).astype(np.uint16, copy=False)
    out[nodata(image, invvar)] |= np.uint16(bit("nodata"))
    return out
