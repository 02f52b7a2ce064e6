"""Catalog-like photometry of stamps: SExtractor AUTO (Kron) fluxes in every band.

The kNN baseline must see what a survey catalog gives, i.e. what tilecat's detect
stage measures (:mod:`tilecat.detect.photometry`): Kron apertures defined once on a
detection image and applied to every band (dual-image mode), neighbours masked by
the segmentation map. Here each stamp is de-normalised (``F = sigma sinh(x)``), the
detection image is the band-summed S/N image, sep extracts its sources, the one
covering the centre pixel (else the nearest within 3 pixels) is measured; with no
detection, a circle of radius 4 pixels at the centre is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .photometry import luptitude

__all__ = ["auto_photometry", "catalog_features"]

_FALLBACK_RADIUS = 4.0


def auto_photometry(stamps: np.ndarray, sigma: np.ndarray, thresh: float = 1.5,
                    minarea: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """AUTO fluxes and errors of the central source of each stamp.

    Parameters
    ----------
    stamps : ndarray (N, B, S, S)
        arcsinh(F / sigma) stamps.
    sigma : ndarray (N, B)
        Background noise per band (nanomaggies).
    thresh : float
        Detection threshold (S/N per pixel of the detection image).
    minarea : int
        Minimum pixels of a detection.

    Returns
    -------
    flux, flux_err : ndarray of float64 (N, B)
        Nanomaggies.
    """
    import sep

    from ..detect.photometry import auto_apertures, auto_flux

    n, nb, s, _ = stamps.shape
    c = s // 2
    flux = np.zeros((n, nb))
    err = np.zeros((n, nb))
    for i in range(n):
        snr = np.sinh(stamps[i].astype(np.float64))  # F / sigma, per band
        det = np.ascontiguousarray(snr.sum(axis=0) / np.sqrt(nb))
        objs, seg = None, None
        try:
            objs, seg = sep.extract(det, thresh, err=1.0, minarea=minarea,
                                    segmentation_map=True, deblend_cont=0.005)
        except Exception:  # sep raises on pathological images: fall back to a circle
            objs = None
        k = -1
        if objs is not None and len(objs):
            sid = int(seg[c, c])
            if sid > 0:
                k = sid - 1
            else:
                d = np.hypot(objs["x"] - c, objs["y"] - c)
                k = int(np.argmin(d)) if d.min() <= 3.0 else -1
        if k >= 0:
            # the central source is id 1, every other source id 2 (masked)
            segk = np.where(seg == k + 1, 1, np.where(seg > 0, 2, 0)).astype(np.int32)
            aper = auto_apertures(det, objs[[k]], segk)
        for j in range(nb):
            img = np.ascontiguousarray(snr[j] * sigma[i, j])
            if k >= 0:
                f, e, _ = auto_flux(img, aper, err=float(sigma[i, j]), segmap=segk)
            else:
                f, e, _ = sep.sum_circle(img, [float(c)], [float(c)], _FALLBACK_RADIUS,
                                         err=float(sigma[i, j]), subpix=5)
            flux[i, j], err[i, j] = f[0], e[0]
    return flux, err


def catalog_features(flux: np.ndarray, flux_err: np.ndarray, bands: Sequence[str],
                     ref: str = "r") -> tuple[np.ndarray, list[str]]:
    """``[mag_ref, adjacent colours]`` from fluxes, as asinh magnitudes (finite for F <= 0).

    Parameters
    ----------
    flux, flux_err : ndarray (N, B)
        Nanomaggies (the softening of each asinh magnitude is its flux error).
    bands : sequence of str
    ref : str
        Band of the magnitude feature (the middle band when absent).

    Returns
    -------
    features : ndarray (N, B), names : list of str
    """
    bands = list(bands)
    lup = luptitude(flux, np.maximum(np.asarray(flux_err, float), 1e-12))
    iref = bands.index(ref) if ref in bands else len(bands) // 2
    cols = [lup[:, iref]] + [lup[:, j] - lup[:, j + 1] for j in range(len(bands) - 1)]
    names = [f"mag_{bands[iref]}"] + [f"{bands[j]}-{bands[j + 1]}" for j in range(len(bands) - 1)]
    return np.stack(cols, axis=1), names
