"""Per-pixel weights: inverse variance from an invvar or variance plane, or an estimate.

Conventions (flux in the survey's unit, invvar in flux^-2):

- ``invvar`` input: copied; zero, NaN or infinite -> 0 (no data).
- ``variance`` input: invvar = 1 / variance where 0 < variance < inf, else 0.
- Negative values are an error naming the file: a negative variance or inverse
  variance is a corrupt product, not a pixel to mask.
- No weight plane configured: a uniform invvar = 1 / sigma^2 with sigma the robust
  (MAD) noise of the image (:func:`noise_sigma`, one value per band).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["WEIGHT_KINDS", "to_invvar", "noise_sigma", "uniform_invvar"]

WEIGHT_KINDS: tuple[str, ...] = ("invvar", "variance")


def to_invvar(
    weight: np.ndarray, kind: str, tile: str, path: str, where: str = "",
    overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse variance from one block of a weight plane.

    Parameters
    ----------
    weight : ndarray, shape (ny, nx)
        The weight block as read (any real dtype, native byte order).
    kind : str
        ``invvar`` or ``variance``.
    tile, path : str
        For error messages.
    where : str
        Location of the block, appended to error messages.
    overwrite : bool
        Allow reusing ``weight``'s memory for the result (when it is float32).

    Returns
    -------
    invvar : ndarray of float32, shape (ny, nx)
        flux^-2; 0 where the input gives no data.
    nodata : ndarray of bool, shape (ny, nx)
        True where ``invvar`` is 0 (zero, non-finite or unusable weight).

    Raises
    ------
    InputError
        The block holds negative values.
    """
    if kind not in WEIGHT_KINDS:
        raise ValueError(f"unknown weight kind {kind!r}")
    w = np.asarray(weight, dtype=np.float32)
    if w is weight and not overwrite:
        w = w.copy()
    if w.size == 0:
        return w, np.zeros(w.shape, dtype=bool)
    lo, hi = w.min(), w.max()  # NaN propagates: both finite <=> no NaN / inf
    if np.isfinite(lo) and np.isfinite(hi):
        if lo < 0:
            _negative(w[w < 0], kind, tile, path, where)
        nodata = w == 0
    else:  # slow path: NaN or inf present
        neg = w < 0
        if neg.any():
            _negative(w[neg], kind, tile, path, where)
        nodata = ~(w > 0)
        nodata |= w == np.inf
        w[nodata] = 0.0
    if kind == "variance":
        with np.errstate(divide="ignore", over="ignore"):
            np.divide(1.0, w, out=w, where=~nodata)
        if not np.isfinite(w.max()):  # variance so small that 1/variance overflows
            over = w == np.inf
            w[over] = 0.0
            nodata |= over
    return w, nodata


def _negative(values: np.ndarray, kind: str, tile: str, path: str, where: str) -> None:
    raise InputError(
        tile, path, f"{values.size} negative {kind} value(s){where} "
        f"(min {float(values.min()):.6g}); {kind} must be >= 0"
    )


def noise_sigma(image: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Robust noise (1.4826 x median absolute deviation) of the valid pixels.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Flux.
    valid : ndarray of bool, optional
        Pixels to use (default: the finite ones).

    Returns
    -------
    float
        sigma in flux units; NaN when no valid pixels or the MAD is zero (e.g. a block
        of exact zeros outside the survey footprint).
    """
    from astropy.stats import mad_std

    v = image[valid] if valid is not None else image[np.isfinite(image)]
    if v.size == 0:
        return float("nan")
    s = float(mad_std(v))
    return s if s > 0 and np.isfinite(s) else float("nan")


def uniform_invvar(nodata: np.ndarray, sigma: float) -> np.ndarray:
    """Uniform inverse variance 1/sigma^2, zero on no-data pixels.

    Parameters
    ----------
    nodata : ndarray of bool, shape (ny, nx)
    sigma : float
        Noise, flux units (> 0).

    Returns
    -------
    ndarray of float32, shape (ny, nx)
    """
    out = np.full(nodata.shape, 1.0 / sigma**2, dtype=np.float32)
    out[nodata] = 0.0
    return out
