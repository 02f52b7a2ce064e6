"""Photometry of the simulated survey: LSST bandpasses, CWW templates, K-corrections.

Fluxes are in nanomaggies (zeropoint 22.5): ``F = 10**(-0.4 * (mag - 22.5))``.
The templates are the Coleman, Wu & Weedman (1980) SEDs extended by GalSim
(``CWW_{E,Sbc,Scd,Im}_ext.sed``) and the LSST bandpasses shipped with GalSim
(``galsim.meta_data.share_dir``). Redshifted templates go through
``galsim.SED.atRedshift``, which keeps the photon flux density per unit wavelength
at the stretched wavelength, i.e. f_nu(nu_obs) proportional to (1+z) L_nu(nu_emit):
the numerator of the K-correction. Apparent magnitudes are therefore

    m_b = M_r + DM(z) + K_b(z),   K_b(z) = mag_b[SED_0.atRedshift(z)]

with ``SED_0`` normalised to AB magnitude 0 in rest-frame LSST r, and DM the distance
modulus of a flat LambdaCDM cosmology (H0 = 70, Om0 = 0.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "LSST_BANDS",
    "TEMPLATES",
    "REFERENCE_BAND",
    "ZP",
    "mag_to_flux",
    "flux_to_mag",
    "bandpass",
    "template_sed",
    "KTable",
    "ktable",
    "star_colours",
    "cosmology",
]

#: Bands with a GalSim-shipped LSST bandpass.
LSST_BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")
#: CWW template names (GalSim files ``CWW_<name>_ext.sed``).
TEMPLATES: tuple[str, ...] = ("E", "Sbc", "Scd", "Im")
#: Band in which population magnitude limits, sizes and truth r50 are defined.
REFERENCE_BAND = "r"
#: AB magnitude of one nanomaggy.
ZP = 22.5

_Z_GRID = np.round(np.arange(0.0, 3.0001, 0.02), 4)


def mag_to_flux(mag: np.ndarray | float) -> np.ndarray:
    """AB magnitude -> flux in nanomaggies."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - ZP))


def flux_to_mag(flux: np.ndarray | float) -> np.ndarray:
    """Flux in nanomaggies -> AB magnitude (nan for flux <= 0)."""
    f = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, ZP - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)


@lru_cache(maxsize=None)
def bandpass(band: str):  # -> galsim.Bandpass
    """The LSST bandpass of ``band`` with an AB zeropoint."""
    import galsim

    if band not in LSST_BANDS:
        raise KeyError(f"no LSST bandpass for band {band!r}; known: {LSST_BANDS}")
    return galsim.Bandpass(f"LSST_{band}.dat", wave_type="nm").withZeropoint("AB")


@lru_cache(maxsize=None)
def template_sed(name: str):  # -> galsim.SED
    """CWW template ``name`` at rest, normalised to AB mag 0 in LSST r."""
    import galsim

    sed = galsim.SED(f"CWW_{name}_ext.sed", wave_type="Ang", flux_type="flambda")
    return sed.withMagnitude(0.0, bandpass(REFERENCE_BAND))


@lru_cache(maxsize=1)
def cosmology():  # -> astropy.cosmology.FlatLambdaCDM
    """The simulator's cosmology: flat LambdaCDM, H0 = 70 km/s/Mpc, Om0 = 0.3."""
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=70.0, Om0=0.3)


@dataclass(frozen=True)
class KTable:
    """K-corrections and distances tabulated on a redshift grid.

    Attributes
    ----------
    z : ndarray, shape (nz,)
        Redshift grid (0 .. 3, step 0.02).
    k : dict[(template, band) -> ndarray (nz,)]
        ``K_b(z)`` in mag (see module docstring).
    distmod : ndarray (nz,)
        Distance modulus in mag (0 at z = 0 by convention, unused there).
    da_kpc_per_arcsec : ndarray (nz,)
        Proper kpc per arcsec.
    dvdz : ndarray (nz,)
        Comoving volume element per unit redshift and solid angle (Mpc^3 / sr).
    """

    z: np.ndarray
    k: dict
    distmod: np.ndarray
    da_kpc_per_arcsec: np.ndarray
    dvdz: np.ndarray

    def kcorr(self, template: str, band: str, z: np.ndarray | float) -> np.ndarray:
        """``K_b(z)`` of ``template`` interpolated at ``z`` (mag)."""
        return np.interp(z, self.z, self.k[(template, band)])

    def colour(self, template: str, band: str, z: np.ndarray | float) -> np.ndarray:
        """Observed ``m_band - m_r`` of ``template`` at redshift ``z`` (mag)."""
        return self.kcorr(template, band, z) - self.kcorr(template, REFERENCE_BAND, z)

    def dm(self, z: np.ndarray | float) -> np.ndarray:
        """Distance modulus at ``z`` (mag), ``z`` > 0."""
        return np.interp(z, self.z, self.distmod)

    def kpc_per_arcsec(self, z: np.ndarray | float) -> np.ndarray:
        """Proper kpc per arcsec at ``z``."""
        return np.interp(z, self.z, self.da_kpc_per_arcsec)


@lru_cache(maxsize=1)
def ktable() -> KTable:
    """The (cached) K-correction table of every template and LSST band."""
    import astropy.units as u

    z = _Z_GRID
    k = {}
    for t in TEMPLATES:
        sed = template_sed(t)
        for b in LSST_BANDS:
            bp = bandpass(b)
            k[(t, b)] = np.array([sed.atRedshift(zz).calculateMagnitude(bp) for zz in z])
    cosmo = cosmology()
    zz = np.maximum(z, 1e-4)
    distmod = cosmo.distmod(zz).to_value(u.mag)
    kpc = (cosmo.kpc_proper_per_arcmin(zz) / 60.0).to_value(u.kpc / u.arcmin)
    dvdz = cosmo.differential_comoving_volume(zz).to_value(u.Mpc**3 / u.sr)
    return KTable(z=z, k=k, distmod=distmod, da_kpc_per_arcsec=kpc, dvdz=dvdz)


@lru_cache(maxsize=1)
def star_colours() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Stellar colours ``m_b - m_r`` of black bodies from 3000 K to 12000 K.

    A black body through the LSST bandpasses is a simple stand-in for the stellar
    locus (good to ~0.1 mag in g-r for FGK stars).

    Returns
    -------
    temps : ndarray (nt,)
        Temperatures in K.
    colours : dict band -> ndarray (nt,)
        ``m_band - m_r`` in mag.
    """
    import galsim

    h, c, k = 6.62607015e-34, 2.99792458e8, 1.380649e-23
    temps = np.geomspace(3000.0, 12000.0, 40)
    colours: dict[str, list[float]] = {b: [] for b in LSST_BANDS}
    for temp in temps:
        def flam(wave_nm: np.ndarray, temp: float = temp) -> np.ndarray:
            lam = np.asarray(wave_nm) * 1e-9
            return 1e-30 / lam**5 / np.expm1(h * c / (lam * k * temp))

        tab = galsim.LookupTable(np.linspace(250, 1200, 951), flam(np.linspace(250, 1200, 951)))
        sed = galsim.SED(tab, wave_type="nm", flux_type="flambda")
        mr = sed.calculateMagnitude(bandpass("r"))
        for b in LSST_BANDS:
            colours[b].append(sed.calculateMagnitude(bandpass(b)) - mr)
    return temps, {b: np.array(v) for b, v in colours.items()}
