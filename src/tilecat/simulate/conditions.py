"""Observing conditions of one tile in one band: PSF, sky, gain, read noise, depth.

Noise model (per pixel, image in nanomaggies, sky subtracted)::

    counts ~ Poisson(gain * (sky + model)),     image = (counts + N(0, rdnoise)) / gain - sky
    variance = (sky + model) / gain + (rdnoise / gain)**2

``gain`` is electrons per nanomaggy. It is derived from the drawn 5-sigma point-source
depth: the background sigma per pixel is ``sigma = F5 / (5 sqrt(NEA))`` with
``F5 = 10**(-0.4 (depth - 22.5))`` and the noise-equivalent area of the Moffat PSF
``NEA = 4 pi alpha**2 (beta - 1)**2 / (2 beta - 1) / pixscale**2`` (pixels), then
``sigma**2 = sky / gain + (rdnoise / gain)**2`` is solved for ``gain``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .photometry import mag_to_flux

__all__ = ["BandConditions", "draw_conditions", "moffat_nea_arcsec2"]


def moffat_nea_arcsec2(fwhm: float, beta: float) -> float:
    """Noise-equivalent area (arcsec^2) of a Moffat PSF, 1 / sum(psf^2)."""
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return float(4.0 * np.pi * alpha**2 * (beta - 1.0) ** 2 / (2.0 * beta - 1.0))


@dataclass(frozen=True)
class BandConditions:
    """Conditions of one band of one tile.

    Attributes
    ----------
    band : str
    psf_fwhm : float
        Moffat FWHM of the effective (pixel-convolved) PSF, arcsec.
    psf_beta : float
        Moffat beta.
    sky : float
        Sky level, nanomaggy per pixel (subtracted from the image; its noise remains).
    gain : float
        Electrons per nanomaggy.
    read_noise : float
        Electrons per pixel.
    depth : float
        5-sigma point-source AB depth.
    sky_sigma : float
        Background noise per pixel, nanomaggies.
    saturation : float
        Saturation level, nanomaggy per pixel above the sky.
    pixscale : float
        Arcsec per pixel.
    """

    band: str
    psf_fwhm: float
    psf_beta: float
    sky: float
    gain: float
    read_noise: float
    depth: float
    sky_sigma: float
    saturation: float
    pixscale: float

    @property
    def psf_fwhm_pix(self) -> float:
        """PSF FWHM in pixels."""
        return self.psf_fwhm / self.pixscale

    def psf(self, gsparams: Any = None, trunc_fwhm: float | None = None):  # -> galsim.Moffat
        """The GalSim Moffat PSF (unit flux), optionally truncated at ``trunc_fwhm`` FWHMs."""
        import galsim

        trunc = 0.0 if trunc_fwhm is None else trunc_fwhm * self.psf_fwhm
        return galsim.Moffat(beta=self.psf_beta, fwhm=self.psf_fwhm, trunc=trunc,
                             gsparams=gsparams)

    def variance(self, model: np.ndarray) -> np.ndarray:
        """Per-pixel variance (nanomaggy^2) for a noiseless sky-subtracted ``model``."""
        return (self.sky + np.maximum(model, 0.0)) / self.gain + (self.read_noise / self.gain) ** 2

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form (floats), for headers and provenance."""
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v)
                for k, v in asdict(self).items()}


def draw_conditions(cfg: dict[str, Any], rng: np.random.Generator) -> dict[str, BandConditions]:
    """Draw the conditions of every band of one tile.

    Each band draws its PSF FWHM and Moffat beta from its range; with
    ``conditions.psf_coherence`` (optional) that fraction of the draws shares one FWHM
    quantile and one beta across the bands.

    Parameters
    ----------
    cfg : dict
        Validated simulation settings.
    rng : numpy.random.Generator
        The tile's conditions stream.

    Returns
    -------
    dict band -> BandConditions
    """
    c = cfg["conditions"]
    pixscale = float(cfg["survey"]["pixel_scale"])
    # coherent PSFs (conditions.psf_coherence): the draws happen only when the key is
    # set, so that settings without it keep their random stream
    shared = None
    if float(c.get("psf_coherence") or 0.0) > 0 and rng.random() < c["psf_coherence"]:
        shared = (float(rng.random()), float(rng.uniform(*c["psf_beta"])))
    out = {}
    for band in cfg["survey"]["bands"]:
        fwhm = float(rng.uniform(*c["psf_fwhm"][band]))
        beta = float(rng.uniform(*c["psf_beta"]))
        if shared is not None:
            lo, hi = c["psf_fwhm"][band]
            fwhm, beta = float(lo + shared[0] * (hi - lo)), shared[1]
        depth = float(rng.uniform(*c["depth"][band]))
        mu = float(rng.uniform(*c["sky_brightness"][band]))
        rdn = float(rng.uniform(*c["read_noise"]))
        sky = float(mag_to_flux(mu)) * pixscale**2
        nea_pix = moffat_nea_arcsec2(fwhm, beta) / pixscale**2
        sigma = float(mag_to_flux(depth)) / (5.0 * np.sqrt(nea_pix))
        # sigma^2 g^2 - sky g - rdn^2 = 0
        gain = (sky + np.sqrt(sky**2 + 4.0 * sigma**2 * rdn**2)) / (2.0 * sigma**2)
        out[band] = BandConditions(
            band=band, psf_fwhm=fwhm, psf_beta=beta, sky=sky, gain=float(gain),
            read_noise=rdn, depth=depth, sky_sigma=sigma,
            saturation=float(c["saturation"][band]), pixscale=pixscale,
        )
    return out
