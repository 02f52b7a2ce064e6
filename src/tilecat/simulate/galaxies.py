"""GalSim profiles of simulated galaxies (achromatic per band, fluxes from the SEDs).

A galaxy is a list of parts (bulge, disk, spiral arms, bar, knots, tidal tails), each a
unit-flux GalSim profile with its own flux in every band (:func:`~tilecat.simulate.
population.part_fluxes`); the profile of one band is the sum of the parts scaled to
that band's fluxes. Drawing achromatic profiles per band is much cheaper than
``galsim.ChromaticObject`` and gives identical band-integrated images for profiles
whose shape does not vary within a band.

Components:

* bulge / elliptical body: ``galsim.Sersic`` (n from the spec), area-preserving shear
  to axis ratio ``bulge_q`` (``r50`` is then the circularised half-light radius);
* disk: ``galsim.Exponential`` (or Sérsic n <= 1.5 for irregulars) inclined: compressed
  along its minor axis by ``q`` (major axis = face-on radius);
* edge-on disk: ``galsim.InclinedExponential`` (thin disk, scale height / radius 0.1);
* spiral arms: two logarithmic spirals ``r = r_in exp(b t)``, ``theta = theta0 + k pi + t``
  with ``b = tan(pitch)``, traced by small ``galsim.Gaussian`` knots whose
  weights follow the exponential disk; they are inclined and rotated with the disk.
  ``r_in`` is half a disk scale length and ``theta0`` random, except for barred spirals
  with ``arms_from_bar`` (``population.bar_model: visible``): there the arms start at
  the two bar ends (``r_in`` = the bar's visible semi-major axis
  :func:`bar_end_radius`, ``theta0`` = the bar angle), as in grand-design SB spirals;
* bar: ``galsim.Sersic(n=0.5)`` stretched to axis ratio ``bar_q`` in the disk plane;
* irregulars: a smooth low-n Sérsic plus ``galsim.RandomKnots`` (point sources smoothed
  by a small Gaussian) for star-forming clumps;
* mergers: two members, each sheared by the tidal field along the line joining them,
  placed so that their reference-band light-weighted centre is the nominal centre,
  plus two faint sheared tidal tails.

Chirality convention (spin). Images are displayed with the FITS convention: pixel
(x, y) with x to the right and y up (``origin='lower'``), which with the simulator's
WCS is north up, east left, i.e. as seen on the sky. Angles are counter-clockwise
from +x. A spiral is **Z** when its arms' position angle *increases* outward
(``r = r_in exp(b t)``, ``b > 0``, theta increasing counter-clockwise): from the centre
an arm leaves to one side and curls counter-clockwise, so the two arms look like the
letter Z (Galaxy Zoo's "clockwise" Z-wise spiral). An **S** spiral is the mirror image:
the model is built as a Z spiral and mirrored through the vertical axis
(``transform(-1, 0, 0, 1)``, x -> -x about the centre). Mirroring therefore turns
Z into S and vice versa; the truth's ``pa_deg`` and ``e2`` flip sign with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .photometry import LSST_BANDS, REFERENCE_BAND
from .population import BAR_END, GalaxySpec, part_fluxes

__all__ = ["GalaxyModel", "build_galaxy", "spiral_arm_knots", "bar_end_radius",
           "measure_structure", "shape_truth"]

_IREF = LSST_BANDS.index(REFERENCE_BAND)


@dataclass
class GalaxyModel:
    """Unit-flux GalSim parts and their per-band fluxes.

    Attributes
    ----------
    parts : list of (galsim.GSObject, ndarray (6,))
        Unit-flux profile (arcsec units, centred on the galaxy's nominal centre) and its
        flux per LSST band in nanomaggies.
    spec : GalaxySpec
    mirrored : bool
        True when the model was mirrored (S spirals).
    """

    parts: list
    spec: GalaxySpec
    mirrored: bool = False

    def profile(self, band: str, gsparams: Any = None):  # -> galsim.GSObject
        """Achromatic profile of ``band`` (flux in nanomaggies)."""
        import galsim

        i = LSST_BANDS.index(band)
        objs = [obj.withFlux(float(f[i])) for obj, f in self.parts if f[i] > 0]
        if not objs:
            return galsim.Gaussian(sigma=0.1, flux=0.0)
        return objs[0] if len(objs) == 1 else galsim.Add(objs, gsparams=gsparams)

    def flux(self, band: str) -> float:
        """Total flux in ``band`` (nanomaggies)."""
        i = LSST_BANDS.index(band)
        return float(sum(f[i] for _, f in self.parts))

    def size_hint(self) -> float:
        """Rough outer radius (arcsec) enclosing most of the light."""
        s = self.spec
        r = max(s.r50_disk, s.r50_bulge)
        if s.companion is not None:
            r = s.separation + 2 * max(r, s.companion.r50_disk)
        return float(r)


def bar_end_radius(spec: GalaxySpec) -> float:
    """Visible end of the bar along its major axis in the disk plane (arcsec).

    ``BAR_END * bar_length`` (:data:`tilecat.simulate.population.BAR_END`): where the
    Gaussian bar's major-axis surface brightness is 1/4 of its central value; 0 without
    a bar.
    """
    return float(BAR_END * spec.bar_length) if spec.bar != "none" else 0.0


def spiral_arm_knots(r50_disk: float, pitch_deg: float, rng: np.random.Generator,
                     n_arms: int = 2, per_arm: int = 50, r_in: float | None = None,
                     theta0: float | None = None) -> np.ndarray:
    """Knot positions, sizes and weights along logarithmic spiral arms (face-on, Z sense).

    Parameters
    ----------
    r50_disk : float
        Disk half-light radius (arcsec); scale length ``h = r50 / 1.678``.
    pitch_deg : float
        Pitch angle (deg); ``b = tan(pitch)``.
    rng : numpy.random.Generator
    n_arms, per_arm : int
    r_in : float, optional
        Radius where the arms start (arcsec); at least ``0.5 h`` and at most
        ``0.6 r_out`` (``r_out = 3.5 h``). None: ``0.5 h``.
    theta0 : float, optional
        Position angle (rad, counter-clockwise from +x) of the start of arm 0; arm
        ``k`` starts at ``theta0 + 2 pi k / n_arms``. None: uniform random. The phase
        is drawn from ``rng`` either way, so the other knot draws do not depend on it.

    Returns
    -------
    ndarray, shape (n_arms * per_arm, 4)
        Columns x, y (arcsec), sigma (arcsec), weight (sums to 1); rows arm by arm, each
        arm's knots outward (increasing ``t``). The position angle ``theta`` increases
        with radius: a Z spiral in the module's convention.
    """
    h = r50_disk / 1.678
    b = np.tan(np.radians(pitch_deg))
    r_out = 3.5 * h
    r_in = 0.5 * h if r_in is None else float(np.clip(r_in, 0.5 * h, 0.6 * r_out))
    t_max = np.log(r_out / r_in) / b
    phase = rng.uniform(0, 2 * np.pi)
    theta0 = phase if theta0 is None else float(theta0)
    rows = []
    for k in range(n_arms):
        t = np.sort(rng.uniform(0, t_max, per_arm))
        r = r_in * np.exp(b * t) * (1 + rng.normal(0, 0.04, per_arm))
        th = theta0 + 2 * np.pi * k / n_arms + t + rng.normal(0, 0.03, per_arm)
        sig = (0.06 * h + 0.04 * r) * np.sqrt(50.0 / per_arm)
        w = np.exp(-r / h) * r * rng.uniform(0.6, 1.4, per_arm)
        rows.append(np.column_stack([r * np.cos(th), r * np.sin(th), sig, w]))
    out = np.vstack(rows)
    out[:, 3] /= out[:, 3].sum()
    return out


def _incline(obj: Any, q: float, phi: float):
    """Compress along y by q (disk inclination), rotate major axis to phi (deg)."""
    import galsim

    return obj.transform(1.0, 0.0, 0.0, q).rotate(phi * galsim.degrees)


def _shear(obj: Any, q: float, phi: float):
    import galsim

    if q >= 0.999:
        return obj
    return obj.shear(q=q, beta=phi * galsim.degrees)


@lru_cache(maxsize=512)
def _sersic_unit(n: float, gsparams: Any):
    """Unit-hlr Sérsic (cached: GalSim tabulates each n once; n is rounded to 0.1)."""
    import galsim

    # n > 1.5 profiles are truncated at 8 half-light radii: their wings otherwise need
    # huge FFTs (the flux is that of the truncated profile, hlr its true hlr)
    trunc = 8.0 if n > 1.5 else 0.0
    return galsim.Sersic(n=n, half_light_radius=1.0, trunc=trunc, gsparams=gsparams)


def _single_parts(spec: GalaxySpec, gsparams: Any) -> list:
    """Unit-flux parts of one (non-merger) galaxy in the Z frame, with band fluxes."""
    import galsim

    rng = np.random.default_rng(spec.seed)
    fluxes = part_fluxes(spec)
    out = []
    for name, f in fluxes.items():
        if name == "bulge":
            rb = spec.r50_bulge if spec.kind != "elliptical" else spec.r50_disk
            obj = _sersic_unit(spec.n_bulge, gsparams).dilate(max(rb, 0.02))
            obj = _shear(obj, spec.bulge_q, spec.phi)
        elif name == "disk":
            if spec.kind == "edgeon":
                obj = galsim.InclinedExponential(
                    inclination=spec.inclination * galsim.degrees,
                    half_light_radius=spec.r50_disk, scale_h_over_r=0.1, gsparams=gsparams)
                obj = obj.rotate(spec.phi * galsim.degrees)
            else:
                if spec.n_disk == 1.0:
                    obj = galsim.Exponential(half_light_radius=spec.r50_disk, gsparams=gsparams)
                else:
                    obj = _sersic_unit(spec.n_disk, gsparams).dilate(spec.r50_disk)
                obj = _incline(obj, spec.q, spec.phi)
        elif name == "arms":
            # knots per arm grow with the apparent size (pixels ~ 0.25"): small galaxies
            # need few, large ones enough to make a continuous arm
            per_arm = int(np.clip(8 + 3 * spec.r50_disk / 0.25, 8, 50))
            if spec.arms_from_bar and spec.bar != "none":
                knots = spiral_arm_knots(spec.r50_disk, spec.pitch, rng, per_arm=per_arm,
                                         r_in=bar_end_radius(spec),
                                         theta0=np.radians(spec.bar_angle))
            else:
                knots = spiral_arm_knots(spec.r50_disk, spec.pitch, rng, per_arm=per_arm)
            obj = galsim.Add([galsim.Gaussian(sigma=s, flux=w).shift(x, y)
                              for x, y, s, w in knots], gsparams=gsparams)
            obj = _incline(obj, spec.q, spec.phi)
        elif name == "bar":
            bar = galsim.Sersic(n=0.5, half_light_radius=spec.bar_length * np.sqrt(spec.bar_q),
                                gsparams=gsparams)
            bar = bar.shear(q=spec.bar_q, beta=spec.bar_angle * galsim.degrees)
            obj = _incline(bar, spec.q, spec.phi)
        elif name == "knots":
            knots = galsim.RandomKnots(spec.n_knots, half_light_radius=spec.r50_disk,
                                       flux=1.0, rng=galsim.BaseDeviate(spec.seed),
                                       gsparams=gsparams)
            obj = galsim.Convolve(knots, galsim.Gaussian(sigma=0.08 * spec.r50_disk + 0.03),
                                  gsparams=gsparams)
            obj = _incline(obj, spec.q, spec.phi)
        else:  # pragma: no cover - population only makes the parts above
            raise ValueError(f"unknown galaxy part {name!r}")
        out.append((obj.withFlux(1.0), f))
    return out


def build_galaxy(spec: GalaxySpec, gsparams: Any = None) -> GalaxyModel:
    """GalSim model of ``spec`` (mirrored for S spirals, see the module docstring).

    Parameters
    ----------
    spec : GalaxySpec
    gsparams : galsim.GSParams, optional

    Returns
    -------
    GalaxyModel
    """
    import galsim

    if spec.companion is None:
        parts = _single_parts(spec, gsparams)
    else:
        a, b = spec, spec.companion
        fa, fb = a.flux[_IREF], b.flux[_IREF]
        tail = a.extra.get("tail_frac", 0.0)
        ang = np.radians(a.sep_angle)
        ux, uy = np.cos(ang), np.sin(ang)
        da = -a.separation * fb / (fa + fb)
        db = a.separation * fa / (fa + fb)
        g = galsim.Shear(g=a.tidal_g, beta=a.sep_angle * galsim.degrees)
        parts = []
        for member, d in ((a, da), (b, db)):
            for obj, f in _single_parts(member, gsparams):
                parts.append((obj.shear(g).shift(d * ux, d * uy), f * (1 - tail)))
        if tail > 0:
            tot = a.flux + b.flux
            rt = 0.8 * (a.r50_disk + b.r50_disk) + 0.3 * a.separation
            for sgn, d in ((1, db), (-1, da)):
                rot = np.radians(a.sep_angle + sgn * 25.0)
                off = abs(d) + rt
                t = galsim.Exponential(half_light_radius=rt, gsparams=gsparams)
                t = t.shear(g=0.6, beta=(a.sep_angle + sgn * 25.0) * galsim.degrees)
                t = t.shift(np.sign(d) * off * np.cos(rot), np.sign(d) * off * np.sin(rot))
                parts.append((t.withFlux(1.0), 0.5 * tail * tot))
    mirrored = spec.spin == "S"
    if mirrored:
        parts = [(obj.transform(-1.0, 0.0, 0.0, 1.0), f) for obj, f in parts]
    return GalaxyModel(parts=parts, spec=spec, mirrored=mirrored)


@lru_cache(maxsize=1)
def _concentration_table() -> tuple[np.ndarray, np.ndarray]:
    """r90/r50 of circular Sérsic profiles on a grid of n (for n_eff of composites)."""
    from scipy.special import gammaincinv

    n = np.linspace(0.3, 8.0, 300)
    c = (gammaincinv(2 * n, 0.9) / gammaincinv(2 * n, 0.5)) ** n
    return n, c


def measure_structure(model: GalaxyModel, band: str = REFERENCE_BAND,
                      npix: int = 128) -> tuple[float, float]:
    """Half-light radius and effective Sérsic index of the intrinsic (unconvolved) profile.

    ``r50`` is the radius (arcsec) of the circle about the nominal centre that holds half
    the total flux in ``band``, measured on an unconvolved ``npix x npix`` image with
    pixels of ``size_hint / 6`` rendered from the parts' Fourier transforms
    (:class:`~tilecat.simulate.kspace.KGrid`: bounded cost, no huge FFT for cuspy
    profiles; ~1% precision). For single-Sérsic galaxies (ellipticals) ``n`` is the
    model's index; for composite ones it is the index of the circular Sérsic profile
    with the same concentration r90/r50 (nan if r90 falls off the image).

    Returns
    -------
    (r50, n) : tuple of float
    """
    from .kspace import KGrid

    ib = LSST_BANDS.index(band)
    total = model.flux(band)
    if total <= 0:
        return float("nan"), float("nan")
    scale = max(model.size_hint(), 0.02) / 6.0
    g = KGrid(npix, scale)
    parts = [(obj, f[ib]) for obj, f in model.parts if f[ib] > 0]
    kp = np.stack([g.kimage(obj) for obj, _ in parts])
    img = g.to_images(kp, np.array([[f] for _, f in parts]), None)[0]
    r = g.radius_pixels().ravel() * scale
    order = np.argsort(r, kind="stable")
    cum = np.cumsum(img.ravel()[order].astype(np.float64)) / total
    rs = r[order]
    r50 = float(np.interp(0.5, cum, rs))
    if model.spec.kind == "elliptical":
        return r50, float(model.spec.n_bulge)
    if cum[-1] < 0.9:
        return r50, float("nan")
    r90 = float(np.interp(0.9, cum, rs))
    n_grid, c_grid = _concentration_table()
    return r50, float(np.interp(r90 / r50, c_grid, n_grid))


def shape_truth(spec: GalaxySpec) -> dict[str, float]:
    """q, e1, e2 (image axes, reduced shear |e| = (1-q)/(1+q)) and pa_deg of the main body.

    ``pa_deg`` is the major-axis position angle east of north (counter-clockwise from
    +y in the north-up east-left image), in [0, 180). S spirals are mirrored, so their
    angle is reflected: phi -> 180 - phi.
    """
    q = spec.q if spec.kind != "elliptical" else spec.bulge_q
    phi = spec.phi if spec.spin != "S" else 180.0 - spec.phi
    e = (1 - q) / (1 + q)
    return dict(q=float(q), e1=float(e * np.cos(np.radians(2 * phi))),
                e2=float(e * np.sin(np.radians(2 * phi))), pa_deg=float((phi - 90.0) % 180.0))
