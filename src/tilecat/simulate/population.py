"""Galaxy populations: what galaxies a tile holds (redshift, fluxes, structure, labels).

Two populations (``population.kind`` in the settings):

``empirical``
    Rows of the 5000 SDSS Main Galaxy Sample galaxies shipped in
    ``tilecat/data/sdss_mgs.tsv`` (spectroscopic redshift + ugriz; see
    ``data/PROVENANCE.md``). SDSS u, g, r, i, z magnitudes are used directly as the
    survey's LSST u, g, r, i, z (the filters differ by a few hundredths of a magnitude
    in colour; we state the mapping rather than transform); y = z + (y - z) colour of
    the galaxy's disk template at its redshift. With ``dim_to_counts`` (default) each
    drawn galaxy is dimmed by a constant offset in all bands so that the r magnitudes
    follow galaxy number counts ``dlog10N/dm = count_slope`` down to ``mag_limit``:
    colours and redshifts stay those of a real galaxy (the colour-redshift relation is
    real), only luminosity changes, and sizes follow the dimmed luminosity.
``parametric``
    CWW templates redshifted through the LSST bandpasses, redshift and absolute
    magnitude drawn from a Schechter luminosity function (``M*(z) = m_star +
    evolution * z``, faint-end ``alpha``) times the comoving volume element, down to
    ``mag_limit`` in r and out to ``z_max`` (default 1.5).

Structure (both): half-light radius from a size-luminosity-redshift relation
(Shen et al. 2003 slopes, ``(1+z)^-0.75`` / ``(1+z)^-1`` evolution, log-normal
scatter); Sérsic indices and axis ratios of ellipticals, bulge-to-total ratios of
disks and Sérsic indices of irregulars are drawn from the 100 real COSMOS fits in
``tilecat/data/cosmos_fits.tsv``.

Light is split into parts, each with a CWW template: ``bulge`` (E), ``disk``
(Sbc/Scd/Im), ``arms`` (Im: spiral arms are star forming, hence bluer), ``bar`` (E),
``knots`` (Im). The fraction of reference-band (r) flux per part is drawn here; the
per-band split follows from the templates' colours at the galaxy's redshift
(:func:`part_fluxes`). Mergers carry a ``companion`` spec.

Bars (``population.bar_model``, an optional key of the settings):

``faint`` (default)
    The bars of simulator 1.1, kept so that earlier training sets stay reproducible
    draw for draw: ``bar_fraction`` of the spirals are barred, a strong bar holds 8-15 %
    and a weak one 3-6 % of the r-band light (at most half of what bulge and arms leave),
    its half-light semi-major axis is 0.6-1.0 ``r50_disk``, and the spiral arms ignore it.
    Such bars are hardly visible at ground-based resolution.
``visible``
    Bars as seen in barred (SB) galaxies: a strong bar holds 15-30 % and a weak one 7-12 %
    of the r-band light (bar-to-total; decompositions find 1-40 %, Reese et al. 2007,
    AJ 133, 2846), taken from the disk (the arms keep their share of what is left); the
    bar's half-light semi-major axis is 0.45-0.8 (strong) or 0.35-0.6 (weak) ``r50_disk``,
    kept within 0.3-0.9 ``r50_disk`` and beyond 1.3 bulge half-light radii, so that its
    visible end (:data:`BAR_END` half-light lengths) lies at ~0.8-1.9 disk scale lengths
    (bar semi-major axes are 0.2-2.5 scale lengths, Erwin 2005, MNRAS 364, 283); the
    two spiral arms leave the two bar ends (``arms_from_bar``, see
    :func:`tilecat.simulate.galaxies.spiral_arm_knots`); and ``0.6 * bar_fraction`` of
    the lenticulars are barred too (29 % of S0s against 55 % of spirals in SDSS,
    Aguerri et al. 2009, A&A 495, 491), labelled like barred spirals. Merger members
    stay unbarred (their label is ``bar = none``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .photometry import LSST_BANDS, REFERENCE_BAND, ktable, mag_to_flux

__all__ = [
    "GalaxySpec",
    "draw_galaxies",
    "part_fluxes",
    "labels",
    "load_empirical_table",
    "cosmos_fits",
    "KINDS",
    "BAR_MODELS",
    "BAR_END",
    "bar_model",
    "make_plain",
    "PLAIN_KINDS",
]

KINDS: tuple[str, ...] = ("elliptical", "lenticular", "spiral", "edgeon", "irregular", "merger")
_EARLY = {"elliptical", "lenticular"}
_IREF = LSST_BANDS.index(REFERENCE_BAND)
_DISK_TEMPLATES = ("Sbc", "Scd", "Im")

#: Values of ``population.bar_model`` (see the module docstring); the first is the default.
BAR_MODELS: tuple[str, ...] = ("faint", "visible")
#: Visible end of a bar (semi-major axis, where the arms start) in units of its
#: half-light semi-major axis ``bar_length``: the bar is a Sérsic n = 0.5 (Gaussian)
#: profile, whose major-axis surface brightness there is 1/4 of the centre's.
BAR_END = float(np.sqrt(2.0))
#: ``visible`` bars: r-band light fraction (bar-to-total) by strength
_VISIBLE_BAR_FRAC = {"strong": (0.15, 0.30), "weak": (0.07, 0.12)}
#: ``visible`` bars: half-light semi-major axis / r50_disk by strength, and its clip range
_VISIBLE_BAR_LEN = {"strong": (0.45, 0.8), "weak": (0.35, 0.6)}
_VISIBLE_BAR_LEN_CLIP = (0.3, 0.9)
_VISIBLE_BAR_OVER_BULGE = 1.3  # bar_length >= this many bulge half-light radii
_VISIBLE_BAR_MAX_REST = 0.6  # a bar takes at most this fraction of the non-bulge light
_S0_BAR_RATIO = 0.6  # bar fraction of lenticulars / that of spirals (visible model)


@dataclass
class GalaxySpec:
    """Everything needed to build one galaxy (angles in degrees, sizes in arcsec).

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    population : str
        ``empirical`` or ``parametric``.
    redshift : float
    flux : ndarray, shape (6,)
        Total flux in nanomaggies in :data:`LSST_BANDS` order.
    parts : dict[str, tuple[str, float]]
        Part name -> (CWW template, fraction of the reference-band flux).
    r50_disk : float
        Half-light radius of the disk (face-on) or of the single Sérsic body.
    r50_bulge : float
    n_bulge : float
        Sérsic index of the bulge (or of the whole body of an elliptical).
    n_disk : float
        Sérsic index of the disk (1 for disks; <= 1.5 for irregulars).
    inclination : float
        Disk inclination (0 face-on, 90 edge-on).
    q : float
        Apparent axis ratio b/a of the main body (disk if any, else bulge).
    bulge_q : float
        Apparent axis ratio of the bulge.
    phi : float
        Major-axis angle counter-clockwise from the image +x axis, before any mirror flip.
    spin : str
        ``S``, ``Z`` or ``none`` (convention: :mod:`tilecat.simulate.galaxies`).
    pitch : float
        Spiral-arm pitch angle.
    bar : str
        ``strong``, ``weak`` or ``none``.
    bar_length : float
        Half-light radius of the bar along its major axis, arcsec.
    bar_q : float
    bar_angle : float
        Bar angle in the disk plane relative to the disk's major axis.
    arms_from_bar : bool
        The spiral arms start at the bar ends (``bar_model: visible``); False keeps the
        arms of simulator 1.1 (inner radius 0.5 disk scale lengths, random phase).
    n_knots : int
    seed : int
        Seed of the GalSim deviate used for knot placement.
    companion : GalaxySpec or None
        Second galaxy of a merger.
    separation : float
        Merger separation, arcsec; ``sep_angle`` its direction (deg from +x).
    tidal_g : float
        Tidal shear magnitude applied to both merger members along the separation.
    """

    kind: str
    population: str
    redshift: float
    flux: np.ndarray
    parts: dict[str, tuple[str, float]]
    r50_disk: float
    r50_bulge: float = 0.0
    n_bulge: float = 4.0
    n_disk: float = 1.0
    inclination: float = 0.0
    q: float = 1.0
    bulge_q: float = 1.0
    phi: float = 0.0
    spin: str = "none"
    pitch: float = 0.0
    bar: str = "none"
    bar_length: float = 0.0
    bar_q: float = 1.0
    bar_angle: float = 0.0
    arms_from_bar: bool = False
    n_knots: int = 0
    seed: int = 0
    companion: "GalaxySpec | None" = None
    separation: float = 0.0
    sep_angle: float = 0.0
    tidal_g: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bulge_to_total(self) -> float:
        """Reference-band bulge flux fraction (0 without bulge)."""
        return float(self.parts["bulge"][1]) if "bulge" in self.parts else 0.0


# ----------------------------------------------------------------------------- tables
def _read_tsv(path: Any) -> dict[str, np.ndarray]:
    text = Path(path).read_text() if not hasattr(path, "read_text") else path.read_text()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header = lines[0].lstrip("#").split()
    data = np.array([ln.split() for ln in lines[1:]], dtype=float)
    return {h: data[:, k] for k, h in enumerate(header)}


@lru_cache(maxsize=4)
def load_empirical_table(path: str | None = None) -> dict[str, np.ndarray]:
    """The empirical galaxy table: columns ``zs`` and ``u g r i z`` (AB mags).

    Parameters
    ----------
    path : str or None
        Whitespace table with a header line; None = the packaged SDSS MGS table.
    """
    if path is None:
        src: Any = resources.files("tilecat").joinpath("data/sdss_mgs.tsv")
        name = "packaged sdss_mgs.tsv"
    else:
        src, name = Path(path), str(path)
    try:
        tab = _read_tsv(src)
    except FileNotFoundError as exc:
        raise ConfigError(f"population.catalog: file {name} does not exist") from exc
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"population.catalog: file {name} is not a numeric table: {exc}") from exc
    missing = [c for c in ("zs", "u", "g", "r", "i", "z") if c not in tab]
    if missing:
        raise ConfigError(f"population.catalog: file {name} lacks column(s) {missing}")
    good = np.all([np.isfinite(tab[c]) for c in ("zs", "u", "g", "r", "i", "z")], axis=0)
    good &= tab["r"] > 0
    return {k: v[good] for k, v in tab.items()}


@lru_cache(maxsize=1)
def cosmos_fits() -> dict[str, np.ndarray]:
    """The 100 COSMOS Sérsic / bulge+disk fits (``data/cosmos_fits.tsv``)."""
    return _read_tsv(resources.files("tilecat").joinpath("data/cosmos_fits.tsv"))


# ----------------------------------------------------------------------------- photometry
def part_fluxes(spec: GalaxySpec) -> dict[str, np.ndarray]:
    """Flux of each part in every LSST band (nanomaggies), summing to ``spec.flux``.

    The part's reference-band fraction times its template colour at the galaxy's
    redshift gives the unnormalised per-band weight; weights are normalised per band
    so that the parts add up to the galaxy's total flux in each band.
    """
    kt = ktable()
    z = spec.redshift
    w = {}
    for name, (tmpl, frac) in spec.parts.items():
        col = np.array([kt.colour(tmpl, b, z) for b in LSST_BANDS])
        w[name] = frac * 10.0 ** (-0.4 * col)
    total = np.sum(list(w.values()), axis=0)
    return {name: spec.flux * v / total for name, v in w.items()}


def _mix_colour(parts: dict[str, tuple[str, float]], z: float) -> np.ndarray:
    """``m_b - m_r`` (6,) of a part mixture at redshift z."""
    kt = ktable()
    tot = np.zeros(len(LSST_BANDS))
    for tmpl, frac in parts.values():
        tot += frac * 10.0 ** (-0.4 * np.array([kt.colour(tmpl, b, z) for b in LSST_BANDS]))
    return -2.5 * np.log10(tot / sum(f for _, f in parts.values()))


# ----------------------------------------------------------------------------- structure
def _r50_kpc(mabs: float, early: bool, z: float, rng: np.random.Generator, scatter: float) -> float:
    """Half-light radius (kpc) from the size-luminosity relation (Shen et al. 2003 slopes)."""
    if early:
        slope = 0.6 if mabs < -20.5 else 0.3
        r = 3.0 * 10 ** (-0.4 * (mabs + 21.0) * slope) * (1 + z) ** -1.0
    else:
        r = 4.0 * 10 ** (-0.4 * (mabs + 21.0) * 0.26) * (1 + z) ** -0.75
    return float(r * 10 ** rng.normal(0.0, scatter))


def _cosmos_draw(rng: np.random.Generator, col: str, lo: float, hi: float,
                 by: str | None = None, by_lo: float = -np.inf, by_hi: float = np.inf) -> float:
    cat = cosmos_fits()
    sel = (cat[col] >= lo) & (cat[col] <= hi)
    if by is not None:
        sel &= (cat[by] >= by_lo) & (cat[by] <= by_hi)
    vals = cat[col][sel]
    return float(rng.choice(vals)) if len(vals) else float(rng.uniform(lo, hi))


def _disk_q(incl_deg: float, q0: float = 0.12) -> float:
    """Apparent axis ratio of a disk of intrinsic thickness q0 (Hubble 1926)."""
    ci = np.cos(np.radians(incl_deg))
    return float(np.sqrt(ci**2 + q0**2 * (1 - ci**2)))


def _structure(spec: GalaxySpec, mabs: float, rng: np.random.Generator, cfg: dict) -> None:
    """Fill the structural fields of ``spec`` (in place) from its kind and luminosity."""
    p = cfg["population"]
    kt = ktable()
    z = spec.redshift
    kind = spec.kind
    scale = float(kt.kpc_per_arcsec(max(z, 0.005)))
    early = kind == "elliptical"
    r50 = _r50_kpc(mabs, early, z, rng, p["size_scatter_dex"]) / scale
    spec.r50_disk = float(np.clip(r50 * (0.8 if kind == "irregular" else 1.0), 0.06, 20.0))
    spec.phi = float(rng.uniform(0.0, 180.0))
    spec.seed = int(rng.integers(1, 2**31 - 1))
    if kind == "elliptical":
        spec.n_bulge = round(min(_cosmos_draw(rng, "sersic_n", 2.5, 6.0), 6.0) * 10) / 10
        spec.bulge_q = spec.q = max(_cosmos_draw(rng, "q", 0.0, 1.0, "sersic_n", 2.5, 9.0), 0.2)
        spec.r50_bulge = spec.r50_disk
    elif kind in ("lenticular", "spiral", "edgeon"):
        spec.n_bulge = float(rng.choice([3.0, 3.5, 4.0]))
        frac_b = 0.25 if kind == "spiral" else 0.35
        spec.r50_bulge = spec.r50_disk * float(rng.uniform(frac_b - 0.1, frac_b + 0.1))
        if kind == "edgeon":
            spec.inclination = float(rng.uniform(80.0, 90.0))
        elif kind == "spiral":
            spec.inclination = float(np.degrees(np.arccos(rng.uniform(np.cos(np.radians(65)), 1))))
        else:
            spec.inclination = float(np.degrees(np.arccos(rng.uniform(np.cos(np.radians(75)), 1))))
        spec.q = _disk_q(spec.inclination)
        spec.bulge_q = float(max(spec.q, rng.uniform(0.6, 0.95)))
        if kind == "spiral":
            spec.spin = "S" if rng.random() < 0.5 else "Z"
            spec.pitch = float(rng.uniform(10.0, 30.0))
    elif kind == "irregular":
        spec.n_disk = round(_cosmos_draw(rng, "sersic_n", 0.5, 1.5) * 10) / 10
        spec.inclination = float(np.degrees(np.arccos(rng.uniform(0.3, 1.0))))
        spec.q = max(_disk_q(spec.inclination, 0.3), 0.3)
        spec.n_knots = int(rng.integers(8, 40))


def bar_model(cfg: dict[str, Any]) -> str:
    """The settings' ``population.bar_model`` (``faint`` when absent)."""
    return str(cfg["population"].get("bar_model", BAR_MODELS[0]))


def _visible_bar(rng: np.random.Generator, fraction: float, strong_fraction: float,
                 rest: float) -> tuple[str, float]:
    """Strength and r-band light fraction of a ``visible`` bar (``none``, 0 if unbarred).

    Parameters
    ----------
    fraction, strong_fraction : float
        Probability of a bar, and of a strong one given a bar.
    rest : float
        Light fraction outside the bulge; the bar takes at most
        ``_VISIBLE_BAR_MAX_REST`` of it.
    """
    if rng.random() >= fraction:
        return "none", 0.0
    bar = "strong" if rng.random() < strong_fraction else "weak"
    fb = float(rng.uniform(*_VISIBLE_BAR_FRAC[bar]))
    return bar, min(fb, _VISIBLE_BAR_MAX_REST * rest)


def _parts(kind: str, disk_t: str, rng: np.random.Generator, cfg: dict,
           bt: float | None = None,
           allow_bar: bool = True) -> tuple[dict[str, tuple[str, float]], str]:
    """Reference-band light fractions of the parts of a galaxy of ``kind``.

    ``allow_bar`` False keeps a lenticular unbarred under the ``visible`` bar model
    (merger members); the ``faint`` model bars spirals only and draws as simulator 1.1.
    Returns the parts and the bar strength (``strong``, ``weak`` or ``none``).
    """
    p = cfg["population"]
    visible = bar_model(cfg) == "visible"
    if kind == "elliptical":
        return {"bulge": ("E", 1.0)}, "none"
    if kind == "irregular":
        fk = float(rng.uniform(0.3, 0.6))
        return {"disk": (disk_t, 1 - fk), "knots": ("Im", fk)}, "none"
    if bt is None:
        if kind == "lenticular":
            bt = float(rng.uniform(0.35, 0.7))
        else:
            # COSMOS disk galaxies (single-Sérsic n < 2.5); spirals capped at 0.4
            bt = _cosmos_draw(rng, "bulge_to_total", 0.0, 0.6, "sersic_n", 0.0, 2.5)
            cap = 0.4 if kind == "spiral" else 0.6
            bt = float(np.clip(bt + rng.normal(0, 0.03), 0.0, cap))
    parts = {"bulge": ("E", bt)} if bt > 0.005 else {}
    rest = 1.0 - (bt if bt > 0.005 else 0.0)
    bar = "none"
    if visible and (kind == "spiral" or (kind == "lenticular" and allow_bar)):
        frac = p["bar_fraction"] * (1.0 if kind == "spiral" else _S0_BAR_RATIO)
        bar, fb = _visible_bar(rng, frac, p["strong_bar_fraction"], rest)
        if kind == "spiral":
            fa = float(rng.uniform(0.35, 0.55)) * (rest - fb)
            parts["arms"] = ("Im", fa)
            rest -= fa
        if bar != "none":
            parts["bar"] = ("E", fb)
            rest -= fb
    elif kind == "spiral":
        fa = float(rng.uniform(0.35, 0.55)) * rest  # arm-interarm contrast of ~2-4
        parts["arms"] = ("Im", fa)
        rest -= fa
        if rng.random() < p["bar_fraction"]:
            bar = "strong" if rng.random() < p["strong_bar_fraction"] else "weak"
            fb = float(rng.uniform(0.08, 0.15) if bar == "strong" else rng.uniform(0.03, 0.06))
            fb = min(fb, 0.5 * rest)
            parts["bar"] = ("E", fb)
            rest -= fb
    parts["disk"] = (disk_t, rest)
    return parts, bar


def _disk_template(kind: str, rng: np.random.Generator, gr: float | None, z: float) -> str:
    """Disk template: the one closest in observed g-r (empirical) or drawn (parametric)."""
    if kind == "irregular":
        return "Im" if gr is None or rng.random() < 0.7 else "Scd"
    if kind == "lenticular":
        return "Sbc"
    if gr is None:
        return str(rng.choice(["Sbc", "Scd"], p=[0.55, 0.45]))
    kt = ktable()
    d = [abs(gr - float(kt.colour(t, "g", z) - kt.colour(t, "r", z))) for t in _DISK_TEMPLATES]
    return _DISK_TEMPLATES[int(np.argmin(d))]


def _make(kind: str, pop: str, z: float, mag_r: float, gr: float | None,
          rng: np.random.Generator, cfg: dict, band_mags: np.ndarray | None,
          allow_bar: bool = True) -> GalaxySpec:
    """One galaxy spec of ``kind`` (not a merger) with total r magnitude ``mag_r``.

    ``allow_bar`` False: no bar even where the bar model would draw one (merger members).
    """
    kt = ktable()
    disk_t = _disk_template(kind, rng, gr, z)
    parts, bar = _parts(kind, disk_t, rng, cfg, allow_bar=allow_bar)
    if band_mags is None:
        mags = mag_r + _mix_colour(parts, z)
    else:
        mags = band_mags
    main_t = "E" if kind == "elliptical" else disk_t
    zc = max(z, 0.005)
    mabs = mag_r - float(kt.dm(zc)) - float(kt.kcorr(main_t, REFERENCE_BAND, zc))
    spec = GalaxySpec(kind=kind, population=pop, redshift=float(z),
                      flux=mag_to_flux(mags), parts=parts, r50_disk=1.0)
    _structure(spec, mabs, rng, cfg)
    if bar != "none" and bar_model(cfg) == "visible":
        spec.bar = bar
        lo = max(_VISIBLE_BAR_LEN_CLIP[0] * spec.r50_disk,
                 _VISIBLE_BAR_OVER_BULGE * spec.r50_bulge)
        hi = _VISIBLE_BAR_LEN_CLIP[1] * spec.r50_disk
        length = spec.r50_disk * float(rng.uniform(*_VISIBLE_BAR_LEN[bar]))
        spec.bar_length = float(np.clip(length, min(lo, hi), hi))
        spec.bar_q = float(rng.uniform(0.2, 0.32) if bar == "strong" else rng.uniform(0.35, 0.5))
        spec.bar_angle = float(rng.uniform(0.0, 180.0))
        spec.arms_from_bar = kind == "spiral"
    elif bar != "none":
        spec.bar = bar
        spec.bar_length = spec.r50_disk * float(rng.uniform(0.6, 1.0))
        spec.bar_q = float(rng.uniform(0.2, 0.32) if bar == "strong" else rng.uniform(0.35, 0.5))
        spec.bar_angle = float(rng.uniform(0.0, 180.0))
    return spec


def _make_merger(pop: str, z: float, mags: np.ndarray, gr: float | None,
                 rng: np.random.Generator, cfg: dict) -> GalaxySpec:
    """A merger: two overlapping galaxies (elliptical or armless disk), tidally sheared."""
    ratio = float(rng.uniform(0.25, 1.0))  # companion / primary flux
    dm_a = 2.5 * np.log10(1 + ratio)
    dm_b = dm_a - 2.5 * np.log10(ratio)
    specs = []
    for dm in (dm_a, dm_b):
        k = "elliptical" if rng.random() < 0.35 else "lenticular"
        m = mags + dm
        s = _make(k, pop, z, float(m[_IREF]), gr, rng, cfg, m if pop == "empirical" else None,
                  allow_bar=False)
        specs.append(s)
    a, b = specs
    a.kind = "merger"
    a.companion = b
    a.separation = float(rng.uniform(0.4, 1.3) * (a.r50_disk + b.r50_disk))
    a.sep_angle = float(rng.uniform(0.0, 360.0))
    a.tidal_g = float(rng.uniform(0.1, 0.35))
    a.extra["tail_frac"] = float(rng.uniform(0.04, 0.1))
    return a


#: Kinds that :func:`make_plain` turns into plain disks.
PLAIN_KINDS: tuple[str, ...] = ("lenticular", "spiral", "edgeon", "irregular")


def make_plain(spec: GalaxySpec) -> None:
    """Turn a disk galaxy into a plain disk (in place): its disk alone, with all the light.

    The bulge, spiral arms, bar and star-forming knots go; the disk keeps its size,
    inclination, orientation, template and Sérsic index (1, exponential, for lenticulars,
    spirals and edge-ons; the drawn 0.5-1.5 for irregulars), and the total fluxes stay.
    Such galaxies are the idealised profiles size measurements are tested on (a round
    exponential disk of known r50); labels say no arms, no bar, no bulge, no spin.

    Raises
    ------
    ValueError
        If ``spec.kind`` is not one of :data:`PLAIN_KINDS` (or ``spec`` is a merger).
    """
    if spec.kind not in PLAIN_KINDS or spec.companion is not None:
        raise ValueError(f"make_plain: a {spec.kind!r} galaxy has no disk to keep")
    spec.parts = {"disk": (spec.parts["disk"][0], 1.0)}
    spec.r50_bulge = 0.0
    spec.spin, spec.pitch = "none", 0.0
    spec.bar, spec.bar_length, spec.bar_q, spec.bar_angle = "none", 0.0, 1.0, 0.0
    spec.arms_from_bar = False
    spec.n_knots = 0
    spec.extra["plain"] = True


# ----------------------------------------------------------------------------- populations
def _kind_weights(cfg: dict) -> tuple[list[str], np.ndarray]:
    morph = cfg["population"]["morphology"]
    kinds = [k for k in KINDS if morph.get(k, 0) > 0]
    w = np.array([float(morph[k]) for k in kinds])
    return kinds, w / w.sum()


def _draw_empirical(n: int, rng: np.random.Generator, cfg: dict) -> list[GalaxySpec]:
    p = cfg["population"]
    tab = load_empirical_table(p["catalog"])
    kt = ktable()
    rows_r = tab["r"]
    kinds, wk = _kind_weights(cfg)
    out = []
    lo = max(float(rows_r.min()), p["mag_bright"])
    hi = p["mag_limit"]
    s = p["count_slope"] * np.log(10)
    for _ in range(n):
        if p["dim_to_counts"] and hi > lo:
            u = rng.random()
            target = lo + np.log1p(u * np.expm1(s * (hi - lo))) / s  # p(m) ~ 10**(slope m)
            cand = np.flatnonzero(rows_r <= target)
            j = int(rng.choice(cand))
            delta = target - rows_r[j]
        else:
            j = int(rng.integers(len(rows_r)))
            delta = 0.0
        z = float(max(tab["zs"][j], 0.002))
        gr = float(tab["g"][j] - tab["r"][j])
        # colour -> early-type probability (between the Im and E template colours)
        gr_e = float(kt.colour("E", "g", z) - kt.colour("E", "r", z))
        gr_i = float(kt.colour("Im", "g", z) - kt.colour("Im", "r", z))
        t = float(np.clip((gr - gr_i) / max(gr_e - gr_i, 1e-3), 0.0, 1.0))
        pe = float(np.clip(t**3, 0.05, 0.95))
        w = np.array([wk[i] * (pe if k in _EARLY else (0.5 if k == "merger" else 1 - pe))
                      for i, k in enumerate(kinds)])
        kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
        mags = np.empty(len(LSST_BANDS))
        for i, b in enumerate(LSST_BANDS):
            if b in tab:
                mags[i] = tab[b][j] + delta
        disk_t = _disk_template("spiral", rng, gr, z)
        mags[LSST_BANDS.index("y")] = mags[LSST_BANDS.index("z")] + float(
            kt.colour(disk_t, "y", z) - kt.colour(disk_t, "z", z))
        if kind == "merger":
            out.append(_make_merger("empirical", z, mags, gr, rng, cfg))
        else:
            out.append(_make(kind, "empirical", z, float(mags[_IREF]), gr, rng, cfg, mags))
    return out


@lru_cache(maxsize=16)
def _lf_grid(template: str, m_star: float, alpha: float, evol: float, z_max: float,
             mag_bright: float, mag_limit: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, M) grid and normalised weights of dV/dz * phi(M; z) within the magnitude limits."""
    kt = ktable()
    zs = np.arange(0.01, z_max + 1e-9, 0.01)
    ms = np.arange(-24.5, -12.0, 0.05)
    zz, mm = np.meshgrid(zs, ms, indexing="ij")
    mstar = m_star + evol * zz
    x = 10 ** (0.4 * (mstar - mm))
    phi = x ** (alpha + 1) * np.exp(-x)
    dv = np.interp(zs, kt.z, kt.dvdz)[:, None]
    mapp = mm + kt.dm(zz) + kt.kcorr(template, REFERENCE_BAND, zz)
    w = dv * phi * ((mapp < mag_limit) & (mapp > mag_bright))
    w = w.ravel()
    return zz.ravel(), mm.ravel(), w / w.sum()


def _draw_parametric(n: int, rng: np.random.Generator, cfg: dict) -> list[GalaxySpec]:
    p = cfg["population"]
    sch = p["schechter"]
    kt = ktable()
    kinds, wk = _kind_weights(cfg)
    out = []
    for _ in range(n):
        kind = kinds[int(rng.choice(len(kinds), p=wk))]
        main_t = {"elliptical": "E", "lenticular": "Sbc", "irregular": "Im"}.get(
            kind, str(rng.choice(["Sbc", "Scd"])))
        zg, mg, wg = _lf_grid(main_t, float(sch.get("m_star", -21.0)),
                              float(sch.get("alpha", -1.2)), float(sch.get("evolution", -1.0)),
                              float(p["z_max"]), float(p["mag_bright"]), float(p["mag_limit"]))
        k = int(rng.choice(len(wg), p=wg))
        z = float(np.clip(zg[k] + rng.uniform(-0.005, 0.005), 0.005, p["z_max"]))
        mabs = float(mg[k] + rng.uniform(-0.025, 0.025))
        mag_r = mabs + float(kt.dm(z)) + float(kt.kcorr(main_t, REFERENCE_BAND, z))
        if kind == "merger":
            mags = mag_r + _mix_colour({"d": (main_t, 1.0)}, z)
            out.append(_make_merger("parametric", z, mags, None, rng, cfg))
        else:
            out.append(_make(kind, "parametric", z, mag_r, None, rng, cfg, None))
    return out


def draw_galaxies(n: int, rng: np.random.Generator, cfg: dict[str, Any]) -> list[GalaxySpec]:
    """Draw ``n`` galaxies of the configured population.

    Parameters
    ----------
    n : int
        Number of galaxies (mergers count once).
    rng : numpy.random.Generator
        The tile's population stream.
    cfg : dict
        Validated simulation settings.
    """
    if cfg["population"]["kind"] == "empirical":
        return _draw_empirical(n, rng, cfg)
    return _draw_parametric(n, rng, cfg)


# ----------------------------------------------------------------------------- labels
def _bulge_size(bt: float) -> str:
    if bt < 0.02:
        return "none"
    if bt < 0.15:
        return "small"
    if bt < 0.4:
        return "moderate"
    return "large"


def labels(spec: GalaxySpec | None) -> dict[str, Any]:
    """Decision-tree labels (DESIGN.md §5) of a galaxy spec, or of a star (``None``).

    t_class: smooth (ellipticals) | featured (disks, irregulars, mergers) | artifact (stars);
    bulge_size from the reference-band bulge-to-total ratio (none < 0.02 <= small < 0.15 <=
    moderate < 0.4 <= large; asked of every galaxy, meaningful for face-on featured ones);
    roundness only for smooth galaxies (round q > 0.75, between 0.45 < q <= 0.75, cigar);
    bar the drawn bar of spirals and lenticulars (only the ``visible`` bar model bars
    lenticulars), ``none`` for every other kind. A plain disk (:func:`make_plain`) has no
    arms, spin or bar whatever its kind.
    """
    if spec is None:
        return dict(t_class="artifact", edge_on=False, spiral_arms=False, spin="none",
                    bar="none", bulge_size="none", merger=False, roundness="none")
    smooth = spec.kind == "elliptical"
    plain = bool(spec.extra.get("plain"))
    rnd = "none"
    if smooth:
        rnd = "round" if spec.q > 0.75 else ("between" if spec.q > 0.45 else "cigar")
    return dict(
        t_class="smooth" if smooth else "featured",
        edge_on=spec.kind == "edgeon",
        spiral_arms=spec.kind == "spiral" and not plain,
        spin=spec.spin if spec.kind == "spiral" and not plain else "none",
        bar=spec.bar if spec.kind in ("spiral", "lenticular") and not plain else "none",
        bulge_size=_bulge_size(spec.bulge_to_total),
        merger=spec.kind == "merger",
        roundness=rnd,
    )
