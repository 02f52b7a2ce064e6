"""Photometry and shapes of detected sources (sep's SExtractor algorithms).

Apertures are defined once, on the detection image, and applied to every band
(SExtractor's dual-image mode), so colours are measured in identical apertures.

* AUTO (Kron) flux: ellipse of the source's isophotal moments (a, b, theta),
  scaled by max(``KRON_FACTOR`` × r_K, ``MIN_KRON_RADIUS``), r_K the Kron radius
  (first moment of the light within 6 isophotal radii, Kron 1980, in units of
  a, b): SExtractor's PHOT_AUTOPARAMS 2.5, 3.5. Optionally (SExtractor's
  PHOT_AUTOAPERS, off by default) a circle of radius ``min_radius`` pixels
  replaces apertures smaller than it. Pixels of other sources (segmentation
  map) are left out of the Kron radius and flux.
* Aperture flux: circle of fixed radius (pixels), all pixels.
* Errors: sqrt(sum sigma²) over the aperture, sigma the per-pixel noise
  (from the inverse variance); no source Poisson term is added.
* Masked pixels are excluded from all sums (not corrected).
* Magnitudes: AB, mag = zp - 2.5 log10(flux), NaN for flux <= 0;
  mag_err = 2.5 / ln(10) × flux_err / flux.
* Shapes: a, b (pixels, RMS along the major and minor axes), theta (radians from
  +x towards +y, in [-pi/2, pi/2]); ellipticity |e| = (1 - q) / (1 + q) =
  (a - b) / (a + b) with q = b / a, e1 = |e| cos 2theta, e2 = |e| sin 2theta
  (pixel frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .background import as_sep_array

__all__ = [
    "KRON_FACTOR",
    "MIN_KRON_RADIUS",
    "KRON_SEARCH",
    "AutoAperture",
    "auto_apertures",
    "auto_flux",
    "aperture_flux",
    "half_light_radius",
    "ab_magnitude",
    "ellipticity",
]

#: Kron factor k of the AUTO aperture (SExtractor PHOT_AUTOPARAMS[0]).
KRON_FACTOR = 2.5
#: Smallest AUTO aperture scale, in units of (a, b) (SExtractor PHOT_AUTOPARAMS[1]).
MIN_KRON_RADIUS = 3.5
#: Radius (in isophotal radii) within which the Kron radius is measured.
KRON_SEARCH = 6.0


@dataclass(frozen=True)
class AutoAperture:
    """AUTO apertures of n sources, pixel units.

    Attributes
    ----------
    x, y, a, b, theta : ndarray of float64, shape (n,)
        Centre and ellipse (a >= b, theta in radians).
    kron_radius : ndarray of float64, shape (n,)
        Kron radius in units of (a, b) (not multiplied by ``KRON_FACTOR``; 0 where
        undefined).
    scale : ndarray of float64, shape (n,)
        Ellipse scale of the aperture: semi-axes are (scale·a, scale·b).
    circle : ndarray of bool, shape (n,)
        True where the aperture is the circle of radius ``min_radius`` instead.
    min_radius : float
        That circle's radius.
    flags : ndarray of int32, shape (n,)
        sep flags of the Kron-radius measurement.
    """

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    b: np.ndarray
    theta: np.ndarray
    kron_radius: np.ndarray
    scale: np.ndarray
    circle: np.ndarray
    min_radius: float
    flags: np.ndarray

    @property
    def rmax(self) -> np.ndarray:
        """Largest radius of each aperture, pixels."""
        return np.where(self.circle, self.min_radius, self.scale * self.a)


def _ids(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.int32)


def _clean_ellipse(a: np.ndarray, b: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, ...]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    theta = np.clip(np.asarray(theta, dtype=np.float64), -np.pi / 2, np.pi / 2)
    a = np.where(np.isfinite(a) & (a > 0), a, 1.0)
    b = np.where(np.isfinite(b) & (b > 0), np.minimum(b, a), a)
    return a, b, np.where(np.isfinite(theta), theta, 0.0)


def auto_apertures(
    det: np.ndarray,
    objects: np.ndarray,
    segmap: np.ndarray,
    mask: np.ndarray | None = None,
    kron_factor: float = KRON_FACTOR,
    min_kron_radius: float = MIN_KRON_RADIUS,
    min_radius: float = 0.0,
    mask_neighbours: bool = True,
) -> AutoAperture:
    """Kron radii and AUTO apertures measured on the detection image.

    Parameters
    ----------
    det : ndarray, shape (ny, nx)
        Background-subtracted detection image.
    objects : structured ndarray, shape (n,)
        sep objects (``x``, ``y``, ``a``, ``b``, ``theta``), in segmap order.
    segmap : ndarray of int32, shape (ny, nx)
        Segmentation map (object k+1 = ``objects[k]``).
    mask : ndarray of bool, optional
        Pixels to ignore.
    kron_factor, min_kron_radius : float
        SExtractor PHOT_AUTOPARAMS: the aperture scale is
        max(kron_factor × Kron radius, min_kron_radius).
    min_radius : float
        Apertures whose mean radius (scale × sqrt(a b)) is below this many pixels
        become circles of that radius (SExtractor PHOT_AUTOAPERS / 2; 0 = never).
    mask_neighbours : bool
        Leave out pixels of other sources.

    Returns
    -------
    AutoAperture
    """
    import sep

    n = len(objects)
    x = np.asarray(objects["x"], dtype=np.float64)
    y = np.asarray(objects["y"], dtype=np.float64)
    a, b, theta = _clean_ellipse(objects["a"], objects["b"], objects["theta"])
    if n == 0:
        z = np.zeros(0)
        return AutoAperture(x, y, a, b, theta, z, z, z.astype(bool), min_radius,
                            np.zeros(0, np.int32))
    kw = _seg_kwargs(segmap, n) if mask_neighbours else {}
    kr, kflag = sep.kron_radius(as_sep_array(det), x, y, a, b, theta, KRON_SEARCH,
                                mask=_mask_arg(mask), **kw)
    kr = np.where(np.isfinite(kr) & (kr > 0), kr, 0.0)
    scale = np.maximum(kron_factor * kr, min_kron_radius)
    scale = np.where(scale > 0, scale, kron_factor)  # undefined Kron radius, no floor
    circle = scale * np.sqrt(a * b) < min_radius
    return AutoAperture(x, y, a, b, theta, kr, scale, circle, float(min_radius),
                        np.asarray(kflag, dtype=np.int32))


def _mask_arg(mask: np.ndarray | None) -> np.ndarray | None:
    if mask is None or not np.any(mask):
        return None
    return as_sep_array(mask, np.uint8)


def _seg_kwargs(segmap: np.ndarray, n: int) -> dict[str, np.ndarray]:
    return {"segmap": as_sep_array(segmap, np.int32), "seg_id": _ids(n)}


def _err_arg(err: np.ndarray | float | None) -> np.ndarray | float | None:
    if err is None or np.isscalar(err):
        return err
    return as_sep_array(err)


def auto_flux(
    image: np.ndarray,
    aper: AutoAperture,
    err: np.ndarray | float | None = None,
    mask: np.ndarray | None = None,
    segmap: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUTO (Kron) flux of every source in one band.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Background-subtracted flux.
    aper : AutoAperture
        Apertures from :func:`auto_apertures`.
    err : ndarray of shape (ny, nx), float or None
        Per-pixel 1-sigma noise.
    mask : ndarray of bool, optional
        Pixels left out.
    segmap : ndarray of int32, optional
        When given, pixels of other sources are left out.

    Returns
    -------
    flux, flux_err : ndarray of float64, shape (n,)
        Flux units of ``image``.
    flags : ndarray of int32, shape (n,)
        sep aperture flags.
    """
    import sep

    n = aper.x.size
    if n == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, np.int32)
    data = as_sep_array(image)
    kw = _seg_kwargs(segmap, n) if segmap is not None else {}
    m = _mask_arg(mask)
    e = _err_arg(err)
    scale = np.where(aper.circle, 1.0, aper.scale)
    flux, ferr, flag = sep.sum_ellipse(data, aper.x, aper.y, aper.a, aper.b, aper.theta,
                                       scale, err=e, mask=m, subpix=1, **kw)
    flux = np.array(flux, dtype=np.float64)
    ferr = np.array(ferr, dtype=np.float64)
    flag = np.array(flag, dtype=np.int32)
    c = np.flatnonzero(aper.circle)
    if c.size:
        kwc = {"segmap": kw["segmap"], "seg_id": kw["seg_id"][c]} if kw else {}
        cf, ce, cflag = sep.sum_circle(data, aper.x[c], aper.y[c], aper.min_radius, err=e,
                                       mask=m, subpix=1, **kwc)
        flux[c], ferr[c], flag[c] = cf, ce, cflag
    return flux, ferr, flag


def aperture_flux(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    radius: float,
    err: np.ndarray | float | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flux in a circle of ``radius`` pixels (exact pixel overlap).

    Returns
    -------
    flux, flux_err : ndarray of float64, shape (n,)
    flags : ndarray of int32, shape (n,)
    """
    import sep

    if len(x) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, np.int32)
    flux, ferr, flag = sep.sum_circle(as_sep_array(image), np.asarray(x, np.float64),
                                      np.asarray(y, np.float64), float(radius),
                                      err=_err_arg(err), mask=_mask_arg(mask), subpix=0)
    return (np.asarray(flux, np.float64), np.asarray(ferr, np.float64),
            np.asarray(flag, np.int32))


def half_light_radius(
    image: np.ndarray,
    aper: AutoAperture,
    total_flux: np.ndarray,
    mask: np.ndarray | None = None,
    segmap: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Radius of the circle holding half of ``total_flux`` (SExtractor FLUX_RADIUS 0.5).

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Background-subtracted image (the detection image).
    aper : AutoAperture
        Gives the centres and the largest radius searched (the AUTO aperture's).
    total_flux : ndarray, shape (n,)
        The normalising (AUTO) flux in ``image``.
    mask, segmap : optional
        Pixels left out; with ``segmap``, pixels of other sources too.

    Returns
    -------
    r50 : ndarray of float64, shape (n,)
        Pixels; NaN where ``total_flux`` <= 0.
    flags : ndarray of int32, shape (n,)
    """
    import sep

    n = aper.x.size
    if n == 0:
        return np.zeros(0), np.zeros(0, np.int32)
    norm = np.asarray(total_flux, dtype=np.float64)
    good = np.isfinite(norm) & (norm > 0)
    kw = _seg_kwargs(segmap, n) if segmap is not None else {}
    r, flag = sep.flux_radius(as_sep_array(image), aper.x, aper.y,
                              np.maximum(aper.rmax, 1.0), 0.5,
                              normflux=np.where(good, norm, 1.0), mask=_mask_arg(mask),
                              subpix=5, **kw)
    r = np.where(good, np.asarray(r, dtype=np.float64), np.nan)
    return r, np.asarray(flag, np.int32)


def ab_magnitude(
    flux: np.ndarray, flux_err: np.ndarray, zeropoint: float
) -> tuple[np.ndarray, np.ndarray]:
    """AB magnitude and its error; NaN where flux <= 0 or not finite.

    Parameters
    ----------
    flux, flux_err : ndarray
        Flux and 1-sigma error in the unit the zeropoint refers to.
    zeropoint : float
        AB magnitude of one flux unit (22.5 for nanomaggies).
    """
    flux = np.asarray(flux, dtype=np.float64)
    good = np.isfinite(flux) & (flux > 0)
    safe = np.where(good, flux, 1.0)
    mag = np.where(good, zeropoint - 2.5 * np.log10(safe), np.nan)
    mag_err = np.where(good, 2.5 / np.log(10.0) * np.asarray(flux_err) / safe, np.nan)
    return mag, mag_err


def ellipticity(
    a: np.ndarray, b: np.ndarray, theta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """e1, e2 from |e| = (a - b) / (a + b) and the position angle theta (radians).

    Returns
    -------
    e1, e2 : ndarray of float64
        |e| cos 2theta, |e| sin 2theta; NaN where a + b <= 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    s = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.where(s > 0, (a - b) / s, np.nan)
    t = 2.0 * np.asarray(theta, dtype=np.float64)
    return e * np.cos(t), e * np.sin(t)
