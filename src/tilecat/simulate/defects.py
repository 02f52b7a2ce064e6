"""Inject instrumental defects into a simulated image, with pixel-exact truth.

Defect classes follow ``tilecat.bits.DEFECT_CLASSES`` (after MaxiMask, Paillassa et
al. 2020): cosmic rays, hot pixels/columns, dead pixels/columns, satellite and
airplane trails, saturated cores, bleed trails and persistence.

Order of the signal chain (so that the truth is physically consistent):

1. additive charge: persistence ghosts, cosmic rays, trails, hot pixels/columns;
2. saturation: pixels above ``saturation_level`` are clipped to it and their excess
   charge bleeds up and down the column (charge conserved except where it runs off
   the edge of the image);
3. dead pixels/columns overwrite everything: a dead pixel collects no charge (no sky,
   no sources), so in the sky-subtracted image it reads ``-sky_level`` plus read noise
   (far below the background: tens of sky sigmas for a sky-limited exposure).

Persistence ghosts are residual images of stars that saturated in the previous
exposure: charge trapped where the previous fluence exceeded a threshold below full
well, flat-topped over the previously saturated core and bleed trail (see
:func:`_persistence_ghost`).

Truth (``DefectResult.truth``) marks every pixel a defect changed. For the additive
defects (cosmic rays, hot, trails, persistence, bleed) a pixel is marked when the
defect added at least ``TRUTH_THRESHOLD_SIGMA`` times the sky noise there; the
sub-pixel charge-sharing tails of cosmic rays, the Gaussian wings of trails and the
faint rims of persistence ghosts below that level are deliberately left unmarked
(they are invisible in the noise). Dead and saturated pixels are always marked.

Evaluation hygiene (DESIGN.md §5): ``DefectResult.dq`` holds only what an upstream
pipeline would know — the static bad-pixel map (known dead/hot pixels and columns:
bit ``bad``, inverse variance set to 0), saturated pixels (bit ``saturated``) and
no-data pixels (bit ``nodata``, inverse variance 0). Cosmic rays, trails,
persistence, bleed and unknown bad pixels appear only in the truth. The injected
charge is added noise-free and the inverse variance is left unchanged for it, as an
upstream weight map (sky + read noise) would not know about it; saturated pixels
keep their inverse variance (only ``dq`` flags them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bits import bit
from ..errors import ConfigError

__all__ = [
    "DEFECTS_VERSION",
    "TRUTH_THRESHOLD_SIGMA",
    "DefectRates",
    "DefectResult",
    "inject_defects",
]

#: Version of the defect physics, recorded with every defect-patch store (stores made
#: by another version are not reused). 2: dead pixels read -sky + read noise (were 0);
#: persistence ghosts are thresholded residuals of a previously saturated star.
DEFECTS_VERSION: int = 2

#: An additive defect marks a pixel in the truth when it adds >= this many sky sigmas.
TRUTH_THRESHOLD_SIGMA: float = 0.25

_CR, _HOT, _DEAD, _TRAIL = bit("cosmic_ray"), bit("hot"), bit("dead"), bit("trail")
_SAT, _BLEED, _PERS = bit("saturated"), bit("bleed"), bit("persistence")
_NODATA, _BAD = bit("nodata"), bit("bad")


@dataclass(frozen=True)
class DefectRates:
    """Expected numbers of defects (Poisson means).

    Per megapixel for pixel-like defects, per tile for columns, trails and
    persistence ghosts. ``known_bad_fraction`` is the probability that a static
    defect (dead/hot pixel or column) is in the upstream bad-pixel map (``dq`` bit
    ``bad``, inverse variance 0); the others are truth-only.
    """

    cosmic_ray_per_mpix: float = 40.0
    hot_pixel_per_mpix: float = 20.0
    hot_column_per_tile: float = 0.5
    dead_pixel_per_mpix: float = 20.0
    dead_column_per_tile: float = 0.5
    trail_per_tile: float = 0.3
    persistence_per_tile: float = 0.5
    known_bad_fraction: float = 0.7

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"defect rate {f.name}={v!r}: must be a finite number >= 0")
        if self.known_bad_fraction > 1:
            raise ConfigError(
                f"defect rate known_bad_fraction={self.known_bad_fraction!r}: must be <= 1")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "DefectRates":
        """Build from a mapping of field name -> value (missing keys take defaults).

        Raises
        ------
        ConfigError
            On an unknown key or a negative / non-finite value.
        """
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown defect rate key(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**{k: float(v) for k, v in d.items()})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"defect rates {d!r}: {exc}") from exc

    @classmethod
    def coadd(cls) -> "DefectRates":
        """Rates for coadd-like tiles: most transients rejected by stacking."""
        return cls(cosmic_ray_per_mpix=4.0, hot_pixel_per_mpix=2.0, hot_column_per_tile=0.05,
                   dead_pixel_per_mpix=2.0, dead_column_per_tile=0.05, trail_per_tile=0.05,
                   persistence_per_tile=0.05)

    @classmethod
    def none(cls) -> "DefectRates":
        """All rates zero (saturation and bleed still apply to bright pixels)."""
        return cls(**{f.name: 0.0 for f in dataclasses.fields(cls)})

    def scaled(self, factor: float) -> "DefectRates":
        """All rates multiplied by ``factor`` (``known_bad_fraction`` unchanged)."""
        return dataclasses.replace(self, **{
            f.name: getattr(self, f.name) * factor
            for f in dataclasses.fields(self) if f.name != "known_bad_fraction"})


@dataclass
class DefectResult:
    """Output of :func:`inject_defects`; all arrays have the input's shape (ny, nx).

    Attributes
    ----------
    image : ndarray, float32
        Image with defects, same flux unit as the input.
    invvar : ndarray, float32
        Inverse variance; 0 where the upstream pipeline knows the pixel is bad or
        where the input had no data.
    truth : ndarray, uint16
        Bits of ``DEFECT_CLASSES`` for every injected defect pixel.
    dq : ndarray, uint16
        What an upstream pipeline knows: bits ``bad``, ``saturated``, ``nodata``.
    counts : dict
        Number of injected defects per kind (diagnostics).
    """

    image: np.ndarray
    invvar: np.ndarray
    truth: np.ndarray
    dq: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers

def _poisson(rng: np.random.Generator, mean: float) -> int:
    return int(rng.poisson(mean)) if mean > 0 else 0


def _splat(shape: tuple[int, int], xs: np.ndarray, ys: np.ndarray,
           q: np.ndarray) -> np.ndarray:
    """Deposit point charges bilinearly (sub-pixel charge sharing).

    Pixel (i, j) is centred on (x=j, y=i). Returns a float64 (ny, nx) layer.
    """
    ny, nx = shape
    x0 = np.floor(xs).astype(np.int64)
    y0 = np.floor(ys).astype(np.int64)
    fx = xs - x0
    fy = ys - y0
    flat = []
    wts = []
    for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                      (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny) & (w > 0)
        flat.append(yi[ok] * nx + xi[ok])
        wts.append((q * w)[ok])
    idx = np.concatenate(flat) if flat else np.zeros(0, np.int64)
    layer = np.bincount(idx, weights=np.concatenate(wts), minlength=ny * nx)
    return layer.reshape(ny, nx)


def _cr_amplitude(rng: np.random.Generator, sky_sigma: float, sat: float) -> float:
    """Charge per pixel of a cosmic ray: mostly 10-100 sigma, from 3 sigma to saturating."""
    if rng.random() < 0.15:  # faint tail, hard to see
        a = sky_sigma * 10 ** rng.uniform(math.log10(3.0), 1.0)
    else:
        a = sky_sigma * 10 ** rng.normal(1.5, 0.5)
    hi = 3.0 * sat if math.isfinite(sat) else 1e4 * sky_sigma
    return float(min(max(a, 3.0 * sky_sigma), hi))


def _cosmic_ray_samples(rng: np.random.Generator, shape: tuple[int, int], sky_sigma: float,
                        sat: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Charge samples (x, y, q) of one cosmic ray and its morphology name."""
    ny, nx = shape
    a = _cr_amplitude(rng, sky_sigma, sat)
    x = rng.uniform(-0.5, nx - 0.5)
    y = rng.uniform(-0.5, ny - 0.5)
    u = rng.random()
    if u < 0.35:  # point: one pixel, or shared over up to 4
        if rng.random() < 0.5:
            x, y = float(np.round(x)), float(np.round(y))
        q = a * rng.uniform(1.0, 2.5)
        return np.array([x]), np.array([y]), np.array([q]), "point"
    step = 0.2
    if u < 0.85:  # worm: short curved track
        length = rng.uniform(2.0, 8.0)
        n = max(int(length / step), 2)
        theta = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0.0, 0.12, n))
        kind = "worm"
    else:  # grazing track: long and straight
        length = rng.uniform(15.0, 80.0)
        n = max(int(length / step), 2)
        theta = np.full(n, rng.uniform(0, 2 * np.pi))
        kind = "track"
    xs = x + np.concatenate([[0.0], np.cumsum(np.cos(theta[:-1]) * step)])
    ys = y + np.concatenate([[0.0], np.cumsum(np.sin(theta[:-1]) * step)])
    # dE/dx with Landau-like fluctuations along the path
    q = a * step * rng.lognormal(0.0, 0.35, n)
    return xs, ys, q, kind


def _trail_layer(rng: np.random.Generator, shape: tuple[int, int], sky_sigma: float,
                 centre: tuple[float, float] | None = None) -> tuple[np.ndarray, str]:
    """One satellite/airplane trail crossing the whole image (float32 layer).

    The trail passes through ``centre`` (x, y) if given, else through a random pixel.
    """
    ny, nx = shape
    x0 = rng.uniform(0, nx - 1)
    y0 = rng.uniform(0, ny - 1)
    if centre is not None:
        x0, y0 = centre
    ang = rng.uniform(0, np.pi)
    c, s = math.cos(ang), math.sin(ang)
    fwhm = rng.uniform(1.0, 5.0)
    sig = fwhm / 2.3548
    peak = sky_sigma * 10 ** rng.uniform(0.0, 2.0)  # 1 to 100 sigma per pixel
    yy = (np.arange(ny, dtype=np.float32) - y0)[:, None]
    xx = (np.arange(nx, dtype=np.float32) - x0)[None, :]
    t = xx * c + yy * s  # along the trail, px
    u = rng.random()
    if u < 0.5:
        kind = "plain"
        mod: np.ndarray | float = 1.0
    elif u < 0.75:  # satellite glint: a flare along the trail
        kind = "flaring"
        tc = rng.uniform(-0.5, 0.5) * max(nx, ny)
        w = rng.uniform(20.0, 200.0)
        mod = 1.0 + rng.uniform(2.0, 10.0) * np.exp(-0.5 * ((t - tc) / w) ** 2)
    else:  # airplane: blinking lights -> dotted
        kind = "dotted"
        period = rng.uniform(10.0, 60.0)
        duty = rng.uniform(0.2, 0.6)
        phase = rng.uniform(0, period)
        mod = (np.mod(t + phase, period) < duty * period).astype(np.float32)
    offsets = [0.0]
    if kind == "dotted" and rng.random() < 0.5:  # second navigation light
        offsets.append(float(rng.choice([-1, 1]) * rng.uniform(3.0, 10.0)))
    layer = np.zeros(shape, np.float32)
    for off in offsets:
        d = -xx * s + yy * c - off  # perpendicular distance, px
        layer += np.exp(-0.5 * (d / sig) ** 2, dtype=np.float32)
    layer *= np.float32(peak)
    layer *= mod
    return layer, kind


def _persistence_ghost(rng: np.random.Generator, shape: tuple[int, int], sky_sigma: float,
                       psf_fwhm_pix: float,
                       bright_star_xy: Sequence[tuple[float, float]]) -> np.ndarray:
    """Residual image (persistence) of a star that saturated in the previous exposure.

    Physics: where a pixel's fluence ``F0`` in the previous exposure exceeded a
    threshold ``T = FW / K`` below the full well ``FW``, charge was trapped and is
    released during this exposure. The residual per pixel rises with the fluence and
    saturates at full well (trap occupancy saturates)::

        R = A * clip(ln(F0 / T) / ln(K), 0, 1)

    so the ghost is flat-topped over the previously saturated core, falls to exactly
    0 where ``F0 < T`` (compact support, no Gaussian wings), and — since ``F0`` is the
    previous star after saturation and bleeding along its column (the same
    :func:`_saturate_and_bleed` as the current exposure) — a saturated star's bleed
    trail leaves a ghost column whose length its excess charge sets.

    Draws: previous peak fluence ``u = F0_peak / FW`` log-uniform in [1, 30] (the
    simulator's bright stars: saturated up to ~30x), ``K`` log-uniform in [1.5, 20]
    (sharp to gradual response), previous seeing 0.8-1.25 x the current PSF FWHM,
    Moffat beta 2.5-4.5, plateau ``A`` 1-8 sky sigmas (decay since that exposure).
    Half the ghosts (when bright stars are given) sit at a dither offset of 10-60
    pixels from a current bright star (the same star in the previous pointing).

    Returns
    -------
    ndarray, float32, shape ``shape``: the added charge (flux units).
    """
    ny, nx = shape
    if len(bright_star_xy) and rng.random() < 0.5:  # dither offset from a current star
        sx, sy = bright_star_xy[int(rng.integers(len(bright_star_xy)))]
        r, phi = rng.uniform(10.0, 60.0), rng.uniform(0, 2 * np.pi)
        xc, yc = sx + r * math.cos(phi), sy + r * math.sin(phi)
    else:
        xc, yc = rng.uniform(0, nx - 1), rng.uniform(0, ny - 1)
    amp = sky_sigma * rng.uniform(1.0, 8.0)
    u = 10 ** rng.uniform(0.0, math.log10(30.0))
    k = 10 ** rng.uniform(math.log10(1.5), math.log10(20.0))
    beta = rng.uniform(2.5, 4.5)
    fwhm = max(psf_fwhm_pix, 1.0) * rng.uniform(0.8, 1.25)
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    r_t = alpha * math.sqrt((u * k) ** (1.0 / beta) - 1.0)  # radius where F0 = T
    layer = np.zeros(shape, np.float32)
    x_lo = max(int(math.floor(xc - r_t)) - 1, 0)
    x_hi = min(int(math.ceil(xc + r_t)) + 2, nx)
    if x_lo >= x_hi:
        return layer
    # previous fluence in units of full well, on the whole height of the ghost's
    # columns (its bleed trail may run along them)
    yy = (np.arange(ny, dtype=np.float64) - yc)[:, None]
    xx = (np.arange(x_lo, x_hi, dtype=np.float64) - xc)[None, :]
    f0 = (u * (1.0 + (xx**2 + yy**2) / alpha**2) ** (-beta)).astype(np.float32)
    _saturate_and_bleed(f0, np.float32(1.0))
    with np.errstate(divide="ignore"):
        resp = np.log(np.maximum(f0.astype(np.float64), 1e-30) * k) / math.log(k)
    layer[:, x_lo:x_hi] = (amp * np.clip(resp, 0.0, 1.0)).astype(np.float32)
    return layer


def _column_span(rng: np.random.Generator, ny: int) -> tuple[int, int]:
    """Rows covered by a bad column: whole, or from a random row to one edge."""
    if rng.random() < 0.5:
        return 0, ny
    r = int(rng.integers(0, ny))
    return (r, ny) if rng.random() < 0.5 else (0, r + 1)


def _saturate_and_bleed(img: np.ndarray, sat: np.float32) -> np.ndarray:
    """Clip pixels above ``sat`` and bleed the excess along columns (in place).

    Each maximal run of over-saturated pixels in a column is clipped; half its excess
    charge fills the pixels above it to ``sat`` one after another, half the pixels
    below; charge reaching the image edge is lost. Returns the added bleed charge
    (float64 layer, >= 0) so the caller can mark it.
    """
    ny = img.shape[0]
    added = np.zeros(img.shape, np.float64)
    over = img > sat
    if not over.any():
        return added
    satf = float(sat)
    for c in np.unique(np.nonzero(over)[1]):
        col = img[:, c].astype(np.float64)
        m = np.concatenate([[False], col > satf, [False]])
        edges = np.flatnonzero(np.diff(m.astype(np.int8)))
        runs = list(zip(edges[0::2], edges[1::2]))
        excesses = [float(np.sum(col[a:b] - satf)) for a, b in runs]
        for a, b in runs:
            col[a:b] = satf
        before = col.copy()
        for (a, b), exc in zip(runs, excesses):
            for start, stepdir in ((a - 1, -1), (b, 1)):
                e = exc / 2.0
                j = start
                while e > 0 and 0 <= j < ny:
                    room = max(satf - col[j], 0.0)
                    if room >= e:
                        col[j] += e
                        e = 0.0
                    else:
                        col[j] = satf
                        e -= room
                    j += stepdir
        added[:, c] = col - before
        img[:, c] = col.astype(np.float32)
        # float32 rounding must not leave a filled pixel a hair above/below sat
        full = col >= satf
        img[full, c] = sat
    return added


# ------------------------------------------------------------------------------ main

def inject_defects(image: np.ndarray, invvar: np.ndarray, rng: np.random.Generator | int,
                   rates: DefectRates, *, pixscale: float, sky_sigma: float,
                   sky_level: float, saturation_level: float, psf_fwhm_pix: float,
                   read_sigma: float = 0.0,
                   bright_star_xy: Sequence[tuple[float, float]] = ()) -> DefectResult:
    """Inject defects into a copy of ``image``; return image, invvar, truth and dq.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Noisy, sky-subtracted image (flux per pixel, e.g. nanomaggies). Not modified.
    invvar : ndarray, shape (ny, nx)
        Inverse variance (flux^-2). Not modified; 0 means no data.
    rng : numpy.random.Generator or int
        Random stream (an int seeds ``numpy.random.default_rng``).
    rates : DefectRates
        Expected defect counts.
    pixscale : float
        Pixel scale, arcsec/pixel (recorded for scale-aware shapes; the defects
        themselves are pixel-level phenomena).
    sky_sigma : float
        Background noise per pixel, flux units (> 0): sets defect amplitudes and the
        truth threshold.
    sky_level : float
        Sky level per pixel that was subtracted from ``image``, flux units (>= 0). A
        dead pixel collects none of it: it reads ``-sky_level`` (plus read noise).
    saturation_level : float
        Flux per pixel above which pixels saturate (clip + bleed along columns).
        ``inf`` disables saturation.
    psf_fwhm_pix : float
        PSF FWHM in pixels (sizes persistence ghosts).
    read_sigma : float
        Read noise per pixel, flux units (>= 0): the only noise of a dead pixel.
    bright_star_xy : sequence of (x, y)
        0-based pixel centres of bright stars; persistence ghosts may appear at a
        dither offset from them.

    Returns
    -------
    DefectResult
    """
    img_in = np.asarray(image)
    iv_in = np.asarray(invvar)
    if img_in.ndim != 2 or img_in.shape != iv_in.shape:
        raise ValueError(f"image {img_in.shape} and invvar {iv_in.shape} must be equal 2-D shapes")
    if not (sky_sigma > 0 and math.isfinite(sky_sigma)):
        raise ValueError(f"sky_sigma must be finite and > 0, got {sky_sigma!r}")
    for name, v in (("sky_level", sky_level), ("read_sigma", read_sigma)):
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
    if not pixscale > 0:
        raise ValueError(f"pixscale must be > 0, got {pixscale!r}")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    shape = img_in.shape
    ny, nx = shape
    mpix = ny * nx / 1e6
    sat_f = float(saturation_level) if saturation_level is not None else math.inf
    sat = np.float32(sat_f)
    thr = TRUTH_THRESHOLD_SIGMA * sky_sigma

    img = img_in.astype(np.float32, copy=True)
    iv = iv_in.astype(np.float32, copy=True)
    truth = np.zeros(shape, np.uint16)
    known_bad = np.zeros(shape, bool)
    counts: dict[str, int] = {}
    # sum of all injected charge and, per pixel, the class that contributed most, so
    # that pixels above threshold only through several faint contributions get a bit
    total_add = np.zeros(shape, np.float32)
    best_val = np.zeros(shape, np.float32)
    best_cls = np.zeros(shape, np.uint16)

    def _add(layer: np.ndarray, cls: int) -> None:
        layer = layer.astype(np.float32, copy=False)
        img[...] += layer
        total_add[...] += layer
        truth[layer >= thr] |= cls
        top = layer > best_val
        best_val[top] = layer[top]
        best_cls[top] = cls

    # 1. additive charge --------------------------------------------------------------
    n_pers = _poisson(rng, rates.persistence_per_tile)
    for _ in range(n_pers):
        layer = _persistence_ghost(rng, shape, sky_sigma, psf_fwhm_pix, bright_star_xy)
        _add(layer, _PERS)
    counts["persistence"] = n_pers

    n_cr = _poisson(rng, rates.cosmic_ray_per_mpix * mpix)
    if n_cr:
        parts = [_cosmic_ray_samples(rng, shape, sky_sigma, sat_f) for _ in range(n_cr)]
        for kind in ("point", "worm", "track"):
            counts[f"cosmic_ray_{kind}"] = sum(p[3] == kind for p in parts)
        layer = _splat(shape, np.concatenate([p[0] for p in parts]),
                       np.concatenate([p[1] for p in parts]),
                       np.concatenate([p[2] for p in parts]))
        _add(layer, _CR)
    counts["cosmic_ray"] = n_cr

    n_trail = _poisson(rng, rates.trail_per_tile)
    for _ in range(n_trail):
        layer, kind = _trail_layer(rng, shape, sky_sigma)
        _add(layer, _TRAIL)
        counts[f"trail_{kind}"] = counts.get(f"trail_{kind}", 0) + 1
    counts["trail"] = n_trail

    n_hot = _poisson(rng, rates.hot_pixel_per_mpix * mpix)
    if n_hot:
        ys = rng.integers(0, ny, n_hot)
        xs = rng.integers(0, nx, n_hot)
        amp = sky_sigma * 10 ** rng.uniform(math.log10(3.0), 2.5, n_hot)
        known = rng.random(n_hot) < rates.known_bad_fraction
        layer = np.zeros(shape, np.float32)
        np.add.at(layer, (ys, xs), amp.astype(np.float32))
        _add(layer, _HOT)
        known_bad[ys[known], xs[known]] = True
    counts["hot_pixel"] = n_hot

    n_hotcol = _poisson(rng, rates.hot_column_per_tile)
    for _ in range(n_hotcol):
        c = int(rng.integers(0, nx))
        width = 2 if rng.random() < 0.2 else 1
        y0, y1 = _column_span(rng, ny)
        cs = slice(c, min(c + width, nx))
        layer = np.zeros(shape, np.float32)
        layer[y0:y1, cs] = np.float32(sky_sigma * rng.uniform(1.0, 8.0))
        _add(layer, _HOT)
        if rng.random() < rates.known_bad_fraction:
            known_bad[y0:y1, cs] = True
    counts["hot_column"] = n_hotcol

    # 2. saturation and bleed -------------------------------------------------------
    if math.isfinite(sat_f):
        added = _saturate_and_bleed(img, sat)
        truth[added >= thr] |= _BLEED
        total_add += np.maximum(added, 0).astype(np.float32)
        top = added > best_val
        best_cls[top] = _BLEED
    faint = (truth == 0) & (total_add >= thr)
    truth[faint] |= best_cls[faint]

    # 3. dead pixels and columns overwrite the signal ------------------------------------
    # no charge collected: the sky-subtracted image reads 0 - sky, plus read noise
    def _no_charge(shape_: tuple[int, ...]) -> np.ndarray:
        return (read_sigma * rng.standard_normal(shape_) - sky_level).astype(np.float32)

    dead = np.zeros(shape, bool)
    n_dead = _poisson(rng, rates.dead_pixel_per_mpix * mpix)
    if n_dead:
        ys = rng.integers(0, ny, n_dead)
        xs = rng.integers(0, nx, n_dead)
        known = rng.random(n_dead) < rates.known_bad_fraction
        dead[ys, xs] = True
        img[ys, xs] = _no_charge((n_dead,))
        known_bad[ys[known], xs[known]] = True
    counts["dead_pixel"] = n_dead

    n_deadcol = _poisson(rng, rates.dead_column_per_tile)
    for _ in range(n_deadcol):
        c = int(rng.integers(0, nx))
        width = 2 if rng.random() < 0.2 else 1
        y0, y1 = _column_span(rng, ny)
        cs = slice(c, min(c + width, nx))
        img[y0:y1, cs] = _no_charge(img[y0:y1, cs].shape)
        dead[y0:y1, cs] = True
        if rng.random() < rates.known_bad_fraction:
            known_bad[y0:y1, cs] = True
    counts["dead_column"] = n_deadcol
    if dead.any():
        truth[dead] = _DEAD  # no other signal survives in a dead pixel

    if math.isfinite(sat_f):
        truth[img >= sat] |= _SAT

    # upstream knowledge ----------------------------------------------------------------
    iv[known_bad] = 0.0
    dq = np.zeros(shape, np.uint16)
    dq[known_bad] |= _BAD
    if math.isfinite(sat_f):
        dq[img >= sat] |= _SAT
    dq[~(np.isfinite(iv) & (iv > 0)) | ~np.isfinite(img)] |= _NODATA
    return DefectResult(image=img, invvar=iv, truth=truth, dq=dq, counts=counts)
