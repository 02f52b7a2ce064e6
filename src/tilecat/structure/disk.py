"""Idealised round exponential disks through a structure model: the PSF-correction check.

A round exponential disk of known half-light radius, convolved with one Moffat PSF in
every band (GalSim), unit Gaussian noise, arcsinh-normalised as the cutouts are. Its
true r50 is exact (no measurement convention), so the catalog's r50 and its stated
uncertainty can be checked against it at sizes around the seeing
(``benchmarks/morphology.py``, ``tests/test_morphology_structure.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["exponential_disk_stamps", "disk_check"]


def exponential_disk_stamps(r50: float, n: int, *, pixel_scale: float, flux: float = 1500.0,
                            fwhm: float = 1.1, beta: float = 3.5, size: int = 64,
                            n_band: int = 4, seed: int = 0) -> np.ndarray:
    """``n`` noise realisations of one round exponential disk.

    Parameters
    ----------
    r50 : float
        Intrinsic half-light radius [arcsec].
    n : int
        Realisations (noise seeds ``seed .. seed + n - 1``).
    pixel_scale : float
        Arcsec per pixel.
    flux : float
        Total flux per band in units of the per-pixel noise sigma.
    fwhm, beta : float
        The Moffat PSF of every band: FWHM [arcsec] and beta.
    size, n_band : int
        Stamp side [pixels] and number of bands.

    Returns
    -------
    ndarray, shape (n, n_band, size, size), float32
        ``arcsinh(image + noise)``, noise of unit sigma per pixel.
    """
    import galsim

    prof = galsim.Convolve(galsim.Exponential(half_light_radius=r50, flux=flux),
                           galsim.Moffat(beta=beta, fwhm=fwhm))
    img = prof.drawImage(nx=size, ny=size, scale=pixel_scale).array
    out = np.empty((n, n_band, size, size), np.float32)
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        out[i] = np.arcsinh(img[None] + rng.normal(size=(n_band, size, size)))
    return out


def disk_check(head: Any, loaded: Any, r50s: Sequence[float], fwhms: Sequence[float], *,
               pixel_scale: float, beta: float = 3.5, flux: float = 1500.0, n: int = 8
               ) -> list[dict[str, float]]:
    """The catalog's r50 of idealised disks against their truth, in its stated sigma.

    Parameters
    ----------
    head, loaded : the ``structure`` inference head and its loaded model
        (:func:`tilecat.infer.registry.get_head`, ``head.load``): the catalog columns
        come from ``head.postprocess``, so the card's calibration is applied.
    r50s, fwhms : sequence of float
        Disk half-light radii and PSF FWHMs [arcsec]; every combination is measured.
    n : int
        Noise realisations per disk.

    Returns
    -------
    list of dict
        Per disk: ``r50``, ``fwhm``, ``mean`` (mean catalog r50 [arcsec]), ``rel``
        ((mean - r50) / r50), ``err`` (median catalog ``struct_r50_err`` [arcsec]) and
        ``z`` ((mean - r50) / err).
    """
    from .model import predict_structure

    rows = []
    for fwhm in fwhms:
        given = {"psf_fwhm": fwhm, "psf_beta": beta}  # the model's per-object inputs
        for r50 in r50s:
            stamps = exponential_disk_stamps(r50, n, pixel_scale=pixel_scale, flux=flux,
                                             fwhm=fwhm, beta=beta)
            aux = [np.full((n, stamps.shape[1]), given[v], np.float32) for v in loaded.inputs]
            cols = head.postprocess(predict_structure(loaded.module, stamps, aux), loaded)
            mean = float(np.mean(cols["struct_r50"]))
            err = float(np.median(cols["struct_r50_err"]))
            rows.append({"r50": r50, "fwhm": fwhm, "mean": mean, "rel": mean / r50 - 1,
                         "err": err, "z": (mean - r50) / err})
    return rows
