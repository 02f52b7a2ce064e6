"""Postage stamps of every source, the input of the models (DESIGN.md §4-5).

Stamp k, band b is the ``size``×``size`` block of the background-subtracted image
whose pixel (size // 2, size // 2) is the source's pixel (round(y), round(x)),
normalised as arcsinh(F / sigma_kb), with sigma_kb the band's background rms at
that pixel (sep's background noise map). Pixels outside the image, and pixels
masked in that band, are 0 (the background level).

``cutouts.zarr`` (Zarr v3, written with xarray):

* ``stamp(object, band, y, x) float32``
* ``object_id(object) int64``
* ``sigma(object, band) float32``: the sigma used, image flux units
* coordinate ``band`` (strings); attributes ``tile``, ``stamp_size``,
  ``normalisation``, ``centre``, and from the detect stage ``config_hash``, ``psf``
  (band -> Moffat PSF measured on the tile's stars: ``fwhm`` [arcsec], ``beta``,
  ``n_stars``, ``source``, ``fwhm_fit`` [arcsec], ``beta_fit``; see
  :mod:`tilecat.detect.psf`) and ``psf_model`` (its description).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..normalize import asinh_norm

__all__ = ["stamp_origin", "make_stamps", "write_cutouts", "CHUNK_OBJECTS"]

#: Objects per Zarr chunk along ``object``.
CHUNK_OBJECTS = 64


def stamp_origin(x: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image pixel (row, column) of each stamp's first pixel.

    Parameters
    ----------
    x, y : ndarray
        0-based source positions (pixels).
    size : int
        Stamp side.

    Returns
    -------
    y0, x0 : ndarray of int64
    """
    cx = np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)
    cy = np.floor(np.asarray(y, dtype=np.float64) + 0.5).astype(np.int64)
    return cy - size // 2, cx - size // 2


def make_stamps(
    images: np.ndarray,
    zero: np.ndarray | None,
    y0: np.ndarray,
    x0: np.ndarray,
    sigma: np.ndarray,
    size: int,
) -> np.ndarray:
    """Cut and normalise stamps.

    Parameters
    ----------
    images : ndarray, shape (band, ny, nx)
        Background-subtracted flux.
    zero : ndarray of bool, shape (band, ny, nx), or None
        Pixels set to 0 in the stamps (masked).
    y0, x0 : ndarray of int, shape (n,)
        Stamp origins (:func:`stamp_origin`).
    sigma : ndarray, shape (n, band)
        Normalising noise per stamp and band (flux units).
    size : int
        Stamp side.

    Returns
    -------
    ndarray of float32, shape (n, band, size, size)
    """
    nband, ny, nx = images.shape
    n = len(y0)
    out = np.zeros((n, nband, size, size), dtype=np.float32)
    for k in range(n):
        ya, xa = int(y0[k]), int(x0[k])
        ys, ye = max(ya, 0), min(ya + size, ny)
        xs, xe = max(xa, 0), min(xa + size, nx)
        if ys >= ye or xs >= xe:
            continue
        block = images[:, ys:ye, xs:xe]
        sig = np.asarray(sigma[k], dtype=np.float32)[:, None, None]
        norm = asinh_norm(block, sig)
        if zero is not None:
            norm[zero[:, ys:ye, xs:xe]] = 0.0
        out[k, :, ys - ya:ye - ya, xs - xa:xe - xa] = norm
    return out


def write_cutouts(
    path: str | Path,
    images: np.ndarray,
    zero: np.ndarray | None,
    x: np.ndarray,
    y: np.ndarray,
    sigma: np.ndarray,
    object_id: np.ndarray,
    bands: list[str],
    size: int,
    attrs: dict[str, Any] | None = None,
    clevel: int = 3,
) -> None:
    """Write ``cutouts.zarr`` at ``path`` (the caller makes it atomic).

    Stamps are computed chunk by chunk while writing, so memory stays at one chunk
    of stamps. Parameters are those of :func:`make_stamps`, plus ``x``, ``y``
    (source positions), ``object_id`` (shape (n,)), ``bands`` and group ``attrs``.
    """
    import dask
    import dask.array as da
    import xarray as xr

    from ..store import compressors

    n = len(object_id)
    nband = len(bands)
    y0, x0 = stamp_origin(x, y, size)
    sigma = np.asarray(sigma, dtype=np.float32).reshape(n, nband)
    chunk = max(1, min(CHUNK_OBJECTS, n))
    if n:
        def block(idx: np.ndarray) -> np.ndarray:
            i = idx[:, 0, 0, 0]
            return make_stamps(images, zero, y0[i], x0[i], sigma[i], size)

        index = da.arange(n, chunks=chunk, dtype=np.int64)[:, None, None, None]
        stamps = da.map_blocks(block, index, dtype=np.float32,
                               chunks=((index.chunks[0]), (nband,), (size,), (size,)))
    else:
        stamps = np.zeros((0, nband, size, size), dtype=np.float32)
    ds = xr.Dataset(
        {
            "stamp": (("object", "band", "y", "x"), stamps),
            "object_id": (("object",), np.asarray(object_id, dtype=np.int64)),
            "sigma": (("object", "band"), sigma),
        },
        coords={"band": np.array(list(bands), dtype=object)},
        attrs={
            "stamp_size": int(size),
            "normalisation": "arcsinh(F / sigma), F background-subtracted flux, "
                             "sigma the band's background rms at the source pixel",
            "centre": "stamp pixel (size//2, size//2) = source pixel (round(y), round(x)), "
                      "0-based; outside-image and masked pixels are 0",
            **(attrs or {}),
        },
    )
    comp = compressors(clevel)
    encoding = {
        "stamp": {"chunks": (chunk, nband, size, size), "compressors": comp},
        "object_id": {"chunks": (max(1, n),), "compressors": comp},
        "sigma": {"chunks": (max(1, n), nband), "compressors": comp},
    }
    # local threads: the stamp function closes over in-memory arrays
    with dask.config.set(scheduler="threads"):
        ds.to_zarr(str(path), mode="w", zarr_format=3, consolidated=False, encoding=encoding)
