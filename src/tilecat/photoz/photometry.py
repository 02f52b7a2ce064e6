"""Aperture photometry on arcsinh-normalised stamps (features of the photo-z models).

Stamps hold ``x = arcsinh(F / sigma_b)`` (DESIGN.md §4), so the flux is recovered
exactly as ``F = sigma_b * sinh(x)`` (nanomaggies when ``sigma_b`` is). Fluxes in
circular apertures centred on the stamp centre pixel ``(S // 2, S // 2)`` (where the
cutouts put the source) are turned into asinh magnitudes ("luptitudes", Lupton et al.
1999) with the aperture's noise as softening, which stay finite for faint and
negative fluxes.

The same functions serve the kNN baseline (numpy) and the CNN (the torch module in
:mod:`tilecat.photoz.model` uses :func:`aperture_weights` as fixed conv kernels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_RADII",
    "ZEROPOINT",
    "aperture_weights",
    "aperture_flux",
    "aperture_noise",
    "luptitude",
    "colour_features",
]

#: aperture radii (pixels) used by default
DEFAULT_RADII: tuple[float, ...] = (2.0, 4.0, 8.0)
#: AB magnitude of one nanomaggy
ZEROPOINT = 22.5
_PREF = 2.5 / np.log(10.0)


def aperture_weights(size: int, radii: Sequence[float], oversample: int = 8) -> np.ndarray:
    """Fraction of each pixel inside circles centred on pixel ``(size // 2, size // 2)``.

    Parameters
    ----------
    size : int
        Stamp side (pixels).
    radii : sequence of float
        Aperture radii (pixels).
    oversample : int
        Sub-pixel samples per pixel side.

    Returns
    -------
    ndarray of float32, shape (n_radii, size, size)
        Weights in [0, 1]; ``weights[k].sum()`` approximates ``pi r_k^2``.
    """
    c = size // 2
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    pos = (np.arange(size)[:, None] + sub[None, :]).ravel() - c  # (size*os,)
    r2 = pos[:, None] ** 2 + pos[None, :] ** 2
    out = np.empty((len(radii), size, size), np.float32)
    for k, r in enumerate(radii):
        inside = (r2 <= float(r) ** 2).astype(np.float64)
        out[k] = inside.reshape(size, oversample, size, oversample).mean(axis=(1, 3))
    return out


def aperture_flux(stamps: np.ndarray, sigma: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Aperture fluxes of de-normalised stamps.

    Parameters
    ----------
    stamps : ndarray (N, B, S, S)
        arcsinh(F / sigma) stamps.
    sigma : ndarray (N, B)
        Per-object, per-band background noise (flux units, e.g. nanomaggy).
    weights : ndarray (A, S, S)
        From :func:`aperture_weights`.

    Returns
    -------
    ndarray of float64, shape (N, B, A)
        Flux in each aperture, in the units of ``sigma``.
    """
    s = np.sinh(np.asarray(stamps, np.float64))
    f = np.einsum("nbyx,ayx->nba", s, np.asarray(weights, np.float64), optimize=False)
    return f * np.asarray(sigma, np.float64)[:, :, None]


def aperture_noise(sigma: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Background noise of each aperture flux: ``sigma * sqrt(sum w^2)``, (N, B, A)."""
    w2 = np.sqrt((np.asarray(weights, np.float64) ** 2).sum(axis=(1, 2)))
    return np.asarray(sigma, np.float64)[:, :, None] * w2[None, None, :]


def luptitude(flux: np.ndarray, softening: np.ndarray) -> np.ndarray:
    """Asinh magnitude ``22.5 - 2.5/ln10 [asinh(F / 2b) + ln b]`` (F, b in nanomaggies).

    Equal to the AB magnitude ``22.5 - 2.5 log10 F`` for ``F >> b``.
    """
    b = np.asarray(softening, np.float64)
    return ZEROPOINT - _PREF * (np.arcsinh(np.asarray(flux, np.float64) / (2.0 * b)) + np.log(b))


def colour_features(stamps: np.ndarray, sigma: np.ndarray, bands: Sequence[str],
                    radius: float = 4.0, ref: str = "r") -> tuple[np.ndarray, list[str]]:
    """Catalog-like features for the kNN baseline: one magnitude and adjacent colours.

    Parameters
    ----------
    stamps : ndarray (N, B, S, S)
    sigma : ndarray (N, B)
        Background noise per band (nanomaggies).
    bands : sequence of str
        Band names in order.
    radius : float
        Aperture radius (pixels).
    ref : str
        Band of the magnitude feature (the middle band when absent).

    Returns
    -------
    features : ndarray of float64 (N, B)
        ``[mag_ref, m_b0 - m_b1, m_b1 - m_b2, ...]`` (asinh aperture magnitudes).
    names : list of str
    """
    w = aperture_weights(stamps.shape[-1], [radius])
    lup = luptitude(aperture_flux(stamps, sigma, w), aperture_noise(sigma, w))[:, :, 0]
    bands = list(bands)
    iref = bands.index(ref) if ref in bands else len(bands) // 2
    cols = [lup[:, iref]] + [lup[:, j] - lup[:, j + 1] for j in range(len(bands) - 1)]
    names = [f"mag_{bands[iref]}"] + [f"{bands[j]}-{bands[j + 1]}" for j in range(len(bands) - 1)]
    return np.stack(cols, axis=1), names
