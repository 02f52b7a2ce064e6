"""Injected anomalies for testing the latent outlier scores (none occur in training).

Each function takes arcsinh stamps ``x`` (B, S, S) of one object (``x =
arcsinh(F / sigma_b)``), adds light in flux space (``s = sinh(x)``, in units of each
band's background noise) and returns the new arcsinh stamp:

* :func:`add_trail` - a satellite/airplane trail (PSF-wide line) across the galaxy,
  in one band;
* :func:`add_cosmic_ray` - a sharp, unconvolved track of a few pixels, one band;
* :func:`add_blend` - two more galaxies (other stamps) overlapping the central one,
  a blend of three;
* :func:`add_ring` - a ring (Gaussian annulus) around the galaxy, in every band;
* :func:`add_arc` - a blue, thin lensed arc (part of an annulus) next to the galaxy.

Amplitudes are in S/N per pixel (units of the background noise). Everything is
driven by a numpy Generator, so a given seed gives the same anomalies.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["KINDS", "add_trail", "add_cosmic_ray", "add_blend", "add_ring", "add_arc",
           "inject"]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = size // 2
    y, x = np.mgrid[:size, :size].astype(np.float64)
    return y - c, x - c


def add_trail(x: np.ndarray, rng: np.random.Generator, snr: tuple[float, float] = (8, 40),
              width: float = 1.3) -> np.ndarray:
    """A straight trail with a Gaussian profile (sigma ``width`` px) through the centre
    region (offset <= 4 px), peak S/N per pixel drawn log-uniformly in ``snr``, one band."""
    s = np.sinh(x.astype(np.float64))
    yy, xx = _grid(x.shape[-1])
    ang = rng.uniform(0, np.pi)
    off = rng.uniform(-4, 4)
    d = -np.sin(ang) * xx + np.cos(ang) * yy - off
    amp = np.exp(rng.uniform(np.log(snr[0]), np.log(snr[1])))
    b = int(rng.integers(x.shape[0]))
    s[b] += amp * np.exp(-0.5 * (d / width) ** 2)
    return np.arcsinh(s).astype(np.float32)


def add_cosmic_ray(x: np.ndarray, rng: np.random.Generator,
                   snr: tuple[float, float] = (20, 300)) -> np.ndarray:
    """A cosmic-ray track of 2-10 pixels crossing the galaxy (within 6 px of the centre),
    pixel S/N log-uniform in ``snr``, one band, not convolved with the PSF."""
    s = np.sinh(x.astype(np.float64))
    size = x.shape[-1]
    c = size // 2
    n = int(rng.integers(2, 11))
    ang = rng.uniform(0, 2 * np.pi)
    y0, x0 = c + rng.uniform(-6, 6, 2)
    t = np.arange(n) - (n - 1) / 2
    ys = np.clip(np.round(y0 + t * np.sin(ang)).astype(int), 0, size - 1)
    xs = np.clip(np.round(x0 + t * np.cos(ang)).astype(int), 0, size - 1)
    b = int(rng.integers(x.shape[0]))
    s[b, ys, xs] += np.exp(rng.uniform(np.log(snr[0]), np.log(snr[1]), n))
    return np.arcsinh(s).astype(np.float32)


def add_blend(x: np.ndarray, rng: np.random.Generator, others: np.ndarray,
              sigma: np.ndarray | None = None, sigma_others: np.ndarray | None = None
              ) -> np.ndarray:
    """Add two galaxies (stamps ``others`` (2, B, S, S)) shifted 5-12 px from the centre.

    Only the pixels of each other galaxy's footprint are added (not its background
    noise, which would double the noise level and give the blend away).

    ``sigma`` (B,) and ``sigma_others`` (2, B) convert the others' S/N units to this
    stamp's (equal noise assumed when omitted).
    """
    from scipy.ndimage import binary_dilation, gaussian_filter

    s = np.sinh(x.astype(np.float64))
    for k in range(2):
        o = np.sinh(others[k].astype(np.float64))
        # keep only the other galaxy's footprint (band-summed S/N smoothed over 1.5 px
        # above 0.6, ~3 sigma of the smoothed noise), so the blend does not add noise
        det = gaussian_filter(o.sum(axis=0) / np.sqrt(o.shape[0]), 1.5)
        o = o * binary_dilation(det > 0.6, iterations=2)[None]
        if sigma is not None and sigma_others is not None:
            o = o * (np.asarray(sigma_others[k], float) / np.asarray(sigma, float))[:, None, None]
        r = rng.uniform(5, 12)
        ang = rng.uniform(0, 2 * np.pi)
        dy, dx = int(round(r * np.sin(ang))), int(round(r * np.cos(ang)))
        s += np.roll(o, (dy, dx), axis=(-2, -1))
    return np.arcsinh(s).astype(np.float32)


def _annulus(x: np.ndarray, rng: np.random.Generator, radius: tuple[float, float],
             width: float, snr: tuple[float, float], colour: np.ndarray,
             span: float | None) -> np.ndarray:
    s = np.sinh(x.astype(np.float64))
    yy, xx = _grid(x.shape[-1])
    r0 = rng.uniform(*radius)
    rr = np.hypot(yy, xx)
    prof = np.exp(-0.5 * ((rr - r0) / width) ** 2)
    if span is not None:
        phi0 = rng.uniform(-np.pi, np.pi)
        dphi = np.angle(np.exp(1j * (np.arctan2(yy, xx) - phi0)))
        prof = prof * np.exp(-0.5 * (dphi / (span / 2.355)) ** 2)
    amp = np.exp(rng.uniform(np.log(snr[0]), np.log(snr[1])))
    s += amp * colour[:, None, None] * prof[None]
    return np.arcsinh(s).astype(np.float32)


def add_ring(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A ring of radius 6-12 px, width 1.5 px, peak S/N 3-15 per pixel, in every band."""
    return _annulus(x, rng, (6, 12), 1.5, (3, 15), np.ones(x.shape[0]), None)


def add_arc(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A lensed arc: radius 7-13 px, width 1.2 px, ~100 deg long, blue (S/N falling
    from the first band to the last), peak S/N 5-25 per pixel in the first band."""
    nb = x.shape[0]
    colour = np.linspace(1.0, 0.35, nb)
    return _annulus(x, rng, (7, 13), 1.2, (5, 25), colour, np.deg2rad(100.0))


#: anomaly kinds -> function(x, rng) (``blend`` needs ``others`` and is handled by inject)
KINDS: dict[str, Callable[..., np.ndarray]] = {
    "trail": add_trail,
    "cosmic_ray": add_cosmic_ray,
    "blend3": add_blend,
    "ring": add_ring,
    "arc": add_arc,
}


def inject(stamps: np.ndarray, sigma: np.ndarray | None, kind: str, seed: int,
           pool: np.ndarray | None = None, pool_sigma: np.ndarray | None = None
           ) -> np.ndarray:
    """Inject anomaly ``kind`` into every stamp of ``stamps`` (N, B, S, S) -> new array.

    Parameters
    ----------
    stamps : ndarray (N, B, S, S)
    sigma : ndarray (N, B) or None
        Background noise per band (for blends).
    kind : str
        One of :data:`KINDS`.
    seed : int
    pool, pool_sigma : ndarray, optional
        Galaxies to blend in (``blend3``); two drawn per stamp.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown anomaly {kind!r}; known: {sorted(KINDS)}")
    rng = np.random.default_rng([seed, sorted(KINDS).index(kind)])
    out = np.empty_like(stamps, dtype=np.float32)
    for i in range(stamps.shape[0]):
        if kind == "blend3":
            if pool is None:
                raise ValueError("blend3 needs a pool of galaxies")
            j = rng.choice(pool.shape[0], 2, replace=False)
            out[i] = add_blend(stamps[i], rng, pool[j],
                               None if sigma is None else sigma[i],
                               None if pool_sigma is None else pool_sigma[j])
        else:
            out[i] = KINDS[kind](stamps[i], rng)
    return out
