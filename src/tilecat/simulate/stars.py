"""Stars: magnitudes from power-law counts, colours of black bodies, Moffat images.

Stars follow ``dlog10 N / dm = count_slope`` over ``stars.mag_range`` (r band) with
``stars.density`` per arcmin^2, plus a Poisson number (mean ``bright_per_tile``) of
bright stars in ``bright_mag_range`` so that every few tiles hold saturated stars
with bleed trails. Colours are those of a black body of temperature drawn
log-uniformly in 3500-10000 K through the LSST bandpasses (:func:`~tilecat.simulate.
photometry.star_colours`). A star's image is the band's PSF (untruncated Moffat)
scaled to its flux.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .photometry import LSST_BANDS, mag_to_flux, star_colours

__all__ = ["StarSpec", "draw_stars", "star_stamp_radius"]


@dataclass(frozen=True)
class StarSpec:
    """One star.

    Attributes
    ----------
    mag_r : float
        AB magnitude in LSST r.
    temperature : float
        Black-body temperature (K) setting the colours.
    flux : ndarray, shape (6,)
        Flux in nanomaggies in :data:`LSST_BANDS` order.
    """

    mag_r: float
    temperature: float
    flux: np.ndarray


def _powerlaw_mags(n: int, lo: float, hi: float, slope: float,
                   rng: np.random.Generator) -> np.ndarray:
    s = slope * np.log(10)
    u = rng.random(n)
    return lo + np.log1p(u * np.expm1(s * (hi - lo))) / s


def draw_stars(area_arcmin2: float, rng: np.random.Generator,
               cfg: dict[str, Any]) -> list[StarSpec]:
    """Draw the stars of one tile.

    Parameters
    ----------
    area_arcmin2 : float
        Tile area.
    rng : numpy.random.Generator
        The tile's star stream.
    cfg : dict
        Validated simulation settings.
    """
    st = cfg["stars"]
    n_faint = int(rng.poisson(st["density"] * area_arcmin2))
    n_bright = int(rng.poisson(st["bright_per_tile"]))
    mags = np.concatenate([
        _powerlaw_mags(n_faint, *st["mag_range"], st["count_slope"], rng),
        rng.uniform(*st["bright_mag_range"], n_bright),
    ])
    temps, cols = star_colours()
    out = []
    for m in mags:
        t = float(np.exp(rng.uniform(np.log(3500.0), np.log(10000.0))))
        col = np.array([np.interp(t, temps, cols[b]) for b in LSST_BANDS])
        out.append(StarSpec(mag_r=float(m), temperature=t, flux=mag_to_flux(m + col)))
    return out


def star_stamp_radius(flux: float, fwhm_pix: float, beta: float, sky_sigma: float,
                      cap: int) -> int:
    """Stamp half-size (pixels) of a Moffat star: out to 0.05 sigma and 99.9% of the flux.

    Parameters
    ----------
    flux : float
        Star flux (nanomaggies).
    fwhm_pix, beta : float
        Moffat FWHM in pixels and beta.
    sky_sigma : float
        Background noise per pixel (nanomaggies).
    cap : int
        Largest half-size allowed.
    """
    alpha = fwhm_pix / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    i0 = flux * (beta - 1.0) / (np.pi * alpha**2)
    # surface brightness i0 (1 + (r/alpha)^2)^-beta falls to 0.05 sigma
    ratio = max(i0 / (0.05 * sky_sigma), 1.0)
    r_sb = alpha * np.sqrt(ratio ** (1.0 / beta) - 1.0)
    # enclosed flux 1 - (1 + (r/alpha)^2)^(1-beta) reaches 0.999
    r_fl = alpha * np.sqrt(1e-3 ** (1.0 / (1.0 - beta)) - 1.0)
    return int(np.clip(np.ceil(max(r_sb, r_fl, 2 * fwhm_pix)), 4, cap))
