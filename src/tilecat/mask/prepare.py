"""The masker's input preparation: the single normalisation used in training and inference.

For one band image (flux F, inverse variance w) the network input has two channels:

0. ``arcsinh((F - bkg) / sigma)``: ``bkg`` the sep (SExtractor) background of the
   valid pixels (mesh ``BACK_SIZE``), ``sigma`` the noise from the inverse variance
   (``tilecat.normalize.sigma_from_invvar``), smoothed on the same mesh so that a
   star's own Poisson noise (when the weight map holds it) does not enter;
1. the weight map ``w`` smoothed on the same mesh, divided by its median and clipped
   to ``[0, WEIGHT_CLIP]``; pixels with zero or non-finite weight are first filled
   with their nearest valid neighbour's weight. Smoothing keeps the depth pattern and
   drops per-pixel structure: some weight maps include the sources' Poisson noise
   (simulations, DECam CP ``oow``), others not (Legacy Survey coadds), and the network
   must not learn a cue that exists in one kind of data only.

Evaluation hygiene (DESIGN.md §5): the network never sees the zeros of the weight map,
which mark exactly the pixels an upstream pipeline already flagged. The image itself is
not altered (non-finite values become the background).

Everything is computed on the whole band image at once, so that tiled inference on
the prepared image is exactly whole-image inference (see :mod:`tilecat.mask.infer`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..normalize import asinh_norm, sigma_from_invvar

__all__ = ["BACK_SIZE", "WEIGHT_CLIP", "fill_from_neighbours", "background", "prepare_band",
           "prepare_bands"]

#: Background / noise mesh size (pixels).
BACK_SIZE = 64
#: Upper clip of the median-normalised weight channel.
WEIGHT_CLIP = 10.0


def fill_from_neighbours(values: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Replace ``values[bad]`` by the value of the nearest pixel that is not bad.

    Parameters
    ----------
    values : ndarray, shape (ny, nx)
    bad : ndarray of bool, shape (ny, nx)

    Returns
    -------
    ndarray, shape (ny, nx), same dtype (a copy). All-bad input is returned unchanged.
    """
    out = np.array(values, copy=True)
    if not bad.any() or bad.all():
        return out
    idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    out[bad] = values[idx[0][bad], idx[1][bad]]
    return out


def _sep_back(data: np.ndarray, mask: np.ndarray | None, size: int) -> np.ndarray:
    """sep background map of ``data`` (float32), with a median fallback for tiny images."""
    import sep

    ny, nx = data.shape
    b = max(8, min(size, ny, nx))
    d = np.ascontiguousarray(data, dtype=np.float32)
    m = None if mask is None else np.ascontiguousarray(mask, dtype=bool)

    def level() -> float:  # median of the valid data (only where sep gives no answer)
        good = d[~m] if m is not None else d.ravel()
        good = good[np.isfinite(good)]
        return float(np.median(good)) if good.size else 0.0

    try:
        back = np.asarray(sep.Background(d, mask=m, bw=b, bh=b, fw=3, fh=3).back(),
                          dtype=np.float32)
    except Exception:  # sep refuses e.g. fully masked images
        return np.full_like(d, level())
    # sep's clipped-mode estimate is NaN on (nearly) constant meshes, e.g. a weight map
    # without source noise: those meshes take the median of the valid data
    finite = np.isfinite(back)
    if not finite.all():
        back[~finite] = np.float32(level())
    return back


def background(image: np.ndarray, bad: np.ndarray, size: int = BACK_SIZE) -> np.ndarray:
    """Robust (sep) background of ``image`` ignoring ``bad`` pixels, flux units, (ny, nx)."""
    img = np.where(np.isfinite(image), image, 0.0).astype(np.float32)
    return _sep_back(img, bad, size)


def prepare_band(image: np.ndarray, invvar: np.ndarray | None) -> np.ndarray:
    """Network input of one band image.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Flux (any units, sky in or not: the background is subtracted here).
    invvar : ndarray, shape (ny, nx), or None
        Inverse variance (flux^-2); 0 where the upstream pipeline flagged a pixel.
        None: a constant weight and the image's robust background rms as sigma.

    Returns
    -------
    ndarray of float32, shape (2, ny, nx)
    """
    image = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(image)
    if invvar is None:
        invvar = np.ones_like(image)
        have_weight = False
    else:
        invvar = np.asarray(invvar, dtype=np.float32)
        have_weight = True
    with np.errstate(invalid="ignore"):
        wbad = ~(np.isfinite(invvar) & (invvar > 0))
    wfill = fill_from_neighbours(invvar, wbad) if not wbad.all() else np.ones_like(invvar)
    bkg = background(image, ~finite)
    if have_weight and not wbad.all():
        sigma = _sep_back(sigma_from_invvar(wfill), None, BACK_SIZE)
        sigma = np.where(sigma > 0, sigma, np.float32(np.median(sigma[sigma > 0]) if (sigma > 0).any() else 1.0))
    else:
        import sep

        img = np.ascontiguousarray(np.where(finite, image, 0.0), dtype=np.float32)
        try:
            rms = float(sep.Background(img, mask=~finite).globalrms)
        except Exception:
            rms = 1.0
        sigma = np.float32(rms if rms > 0 else 1.0)
    x0 = asinh_norm(np.where(finite, image - bkg, 0.0), sigma)
    wsm = _sep_back(wfill, None, BACK_SIZE) if have_weight else wfill
    med = float(np.median(wsm))
    w = wsm / np.float32(med if med > 0 else 1.0)
    x1 = np.clip(w, 0.0, WEIGHT_CLIP).astype(np.float32)
    return np.stack([x0, x1]).astype(np.float32, copy=False)


def prepare_bands(image: np.ndarray, invvar: np.ndarray | None) -> np.ndarray:
    """:func:`prepare_band` for a stack (n, ny, nx) -> (n, 2, ny, nx) float32."""
    return np.stack([
        prepare_band(image[i], None if invvar is None else invvar[i])
        for i in range(image.shape[0])
    ])
