"""Render one simulated tile: place objects, draw them per band, add noise and defects.

Randomness: tile ``k`` of a survey with seed ``S`` uses ``numpy.random.SeedSequence([S, k])``
only, spawned into one child stream per purpose (conditions, galaxies, stars,
positions, noise, defects, no-data), so a tile is identical whether it is simulated
alone or with any number of others, and in any process.

Pixel convention: 0-based pixel coordinates with pixel centres at integers (numpy,
sep, astropy ``origin=0``); GalSim images use origin (0, 0) so that GalSim positions are
the same numbers. The WCS is a TAN projection, north up (+y), east left (-x).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bits import bit
from ..tiles import OBJECTS_PER_TILE
from .conditions import BandConditions, draw_conditions
from .config import tile_shape
from .galaxies import GalaxyModel, build_galaxy, measure_structure, shape_truth
from .photometry import LSST_BANDS, REFERENCE_BAND, flux_to_mag
from .population import draw_galaxies, labels
from .stars import StarSpec, draw_stars, star_stamp_radius

__all__ = ["TileResult", "tile_id", "tile_index", "tile_seed", "tile_center", "tile_wcs",
           "render_tile", "STREAMS"]

#: Child streams of a tile's SeedSequence, in spawn order.
STREAMS: tuple[str, ...] = ("conditions", "galaxies", "stars", "positions", "noise",
                            "defects", "nodata")



@dataclass
class TileResult:
    """A rendered tile, in memory.

    Attributes
    ----------
    tile : str
        Tile id.
    index : int
    seed : int
        The tile's seed (first word of its SeedSequence state).
    bands : list of str
    conditions : dict band -> BandConditions
    wcs : astropy.wcs.WCS
    image, invvar : dict band -> ndarray (ny, nx) float32
        Flux (nanomaggies, sky subtracted) and inverse variance (nanomaggy^-2).
    dq, defects : dict band -> ndarray (ny, nx) uint16
        Upstream data-quality bits and truth defect bits.
    truth : list of dict
        One row per object (columns of truth.parquet), sorted by id.
    noiseless : dict band -> ndarray (ny, nx) float64, or None
        Noise- and defect-free model (only with ``keep_noiseless``).
    """

    tile: str
    index: int
    seed: int
    bands: list[str]
    conditions: dict[str, BandConditions]
    wcs: Any
    image: dict[str, np.ndarray]
    invvar: dict[str, np.ndarray]
    dq: dict[str, np.ndarray]
    defects: dict[str, np.ndarray]
    truth: list[dict[str, Any]]
    noiseless: dict[str, np.ndarray] | None = None
    center: tuple[float, float] = (0.0, 0.0)
    defect_counts: dict[str, dict] = field(default_factory=dict)


def tile_id(cfg: dict[str, Any], k: int) -> str:
    """Id of tile ``k``: ``<prefix>NNNN`` (e.g. ``sim0002``)."""
    return f"{cfg['survey']['tile_prefix']}{k:04d}"


def tile_index(cfg: dict[str, Any], tile: str) -> int:
    """Inverse of :func:`tile_id`; ValueError if ``tile`` is not a simulated tile id."""
    prefix = cfg["survey"]["tile_prefix"]
    if not tile.startswith(prefix) or not tile[len(prefix):].isdigit():
        raise ValueError(f"{tile!r} is not a simulated tile id ({prefix}NNNN)")
    return int(tile[len(prefix):])


def tile_seed(seed: int, k: int) -> int:
    """The tile's seed as one integer (for the manifest and headers)."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


def tile_center(cfg: dict[str, Any], k: int) -> tuple[float, float]:
    """(ra, dec) in degrees of the centre of tile ``k`` on the survey's tile grid."""
    s = cfg["survey"]
    ny, nx = tile_shape(cfg)
    w = nx * s["pixel_scale"] / 3600.0
    h = ny * s["pixel_scale"] / 3600.0
    col, row = k % s["grid_columns"], k // s["grid_columns"]
    dec = s["dec0"] + row * h
    ra = (s["ra0"] + col * w / np.cos(np.radians(dec))) % 360.0
    return float(ra), float(dec)


def tile_wcs(cfg: dict[str, Any], k: int):  # -> astropy.wcs.WCS
    """TAN WCS of tile ``k`` (all bands share it): north up, east left."""
    from astropy.wcs import WCS

    ny, nx = tile_shape(cfg)
    s = cfg["survey"]["pixel_scale"] / 3600.0
    ra, dec = tile_center(cfg, k)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.cd = np.array([[-s, 0.0], [0.0, s]])
    return w


# ----------------------------------------------------------------------------- placement
def _positions(n_gal: int, r50s: np.ndarray, n_star: int, shape: tuple[int, int],
               pixscale: float, clustering: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions (x, y) of galaxies (some next to others: blends) and stars."""
    ny, nx = shape
    gx = rng.uniform(-0.5, nx - 0.5, n_gal)
    gy = rng.uniform(-0.5, ny - 0.5, n_gal)
    near = rng.random(n_gal) < clustering
    for i in np.flatnonzero(near):
        if i == 0:
            continue
        j = int(rng.integers(0, i))
        d = (rng.uniform(0.8, 3.0) * (r50s[i] + r50s[j]) + rng.uniform(0.5, 2.0)) / pixscale
        a = rng.uniform(0, 2 * np.pi)
        gx[i] = np.clip(gx[j] + d * np.cos(a), -0.5, nx - 0.5)
        gy[i] = np.clip(gy[j] + d * np.sin(a), -0.5, ny - 0.5)
    sx = rng.uniform(-0.5, nx - 0.5, n_star)
    sy = rng.uniform(-0.5, ny - 0.5, n_star)
    return np.column_stack([gx, gy]), np.column_stack([sx, sy])


# ----------------------------------------------------------------------------- drawing
def _gsparams(cfg: dict[str, Any]):
    import galsim

    r = cfg["render"]
    return galsim.GSParams(folding_threshold=r["folding_threshold"],
                           maxk_threshold=r["maxk_threshold"], maximum_fft_size=4096)


class _GalaxyPainter:
    """Adds PSF-convolved galaxies to every band's image in one pass per galaxy.

    Each part's Fourier transform is evaluated once on an ``n x n`` k-grid
    (:class:`~tilecat.simulate.kspace.KGrid`, GalSim ``drawKImage``), shifted to the
    galaxy's sub-pixel position, weighted by the part's flux in each band, multiplied
    by the band's pixel-sampled Moffat PSF and inverse transformed: one FFT per band
    instead of one GalSim FFT draw per band. ``n`` is GalSim's good image size of the
    PSF-convolved reference-band profile (its folding criterion), capped at
    ``max_stamp``.
    """

    def __init__(self, images: dict[str, np.ndarray], conds: dict[str, BandConditions],
                 pixscale: float, max_stamp: int, gsparams: Any) -> None:
        self.images = images
        self.conds = conds
        self.bands = list(images)
        self.scale = pixscale
        self.max_stamp = int(max_stamp) // 2 * 2
        self.gsparams = gsparams
        self._psf_k: dict[int, np.ndarray] = {}
        self._ref_psf = max(conds.values(), key=lambda c: c.psf_fwhm).psf(gsparams)
        self._ib = [LSST_BANDS.index(b) for b in self.bands]

    def psf_k(self, grid: Any) -> np.ndarray:
        if grid.n not in self._psf_k:
            self._psf_k[grid.n] = np.stack([
                grid.psf_k(self.conds[b].psf_fwhm, self.conds[b].psf_beta) for b in self.bands])
        return self._psf_k[grid.n]

    def add(self, model: GalaxyModel, x: float, y: float) -> None:
        import galsim

        from .kspace import KGrid

        prof = model.profile(REFERENCE_BAND, self.gsparams)
        conv = galsim.Convolve(prof, self._ref_psf, gsparams=self.gsparams)
        n = int(min(max(conv.getGoodImageSize(self.scale), 16), self.max_stamp))
        n += n % 2
        grid = KGrid(n, self.scale)
        ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        phase = grid.shift_phase((x - ix) * self.scale, (y - iy) * self.scale)
        kparts = np.stack([grid.kimage(obj) * phase for obj, _ in model.parts])
        fluxes = np.array([[f[i] for i in self._ib] for _, f in model.parts])
        stamps = grid.to_images(kparts, fluxes, self.psf_k(grid))
        ny, nx = next(iter(self.images.values())).shape
        x0, y0 = ix - n // 2, iy - n // 2  # image pixel of stamp pixel (0, 0)
        xa, xb = max(x0, 0), min(x0 + n, nx)
        ya, yb = max(y0, 0), min(y0 + n, ny)
        if xa >= xb or ya >= yb:
            return
        for ib, band in enumerate(self.bands):
            self.images[band][ya:yb, xa:xb] += stamps[ib, ya - y0:yb - y0, xa - x0:xb - x0]


def _draw_star(full: Any, star: StarSpec, band: str, x: float, y: float,
               cond: BandConditions, cap: int) -> None:
    import galsim

    flux = float(star.flux[LSST_BANDS.index(band)])
    r = star_stamp_radius(flux, cond.psf_fwhm_pix, cond.psf_beta, cond.sky_sigma, cap)
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    b = galsim.BoundsI(ix - r, ix + r, iy - r, iy + r) & full.bounds
    if not b.isDefined():
        return
    psf = galsim.Moffat(beta=cond.psf_beta, fwhm=cond.psf_fwhm, flux=flux)
    psf.drawImage(image=full[b], add_to_image=True, method="no_pixel",
                  center=galsim.PositionD(x, y))


def _star_peak(flux: float, cond: BandConditions) -> float:
    alpha = cond.psf_fwhm_pix / (2.0 * np.sqrt(2.0 ** (1.0 / cond.psf_beta) - 1.0))
    return flux * (cond.psf_beta - 1.0) / (np.pi * alpha**2)


# ----------------------------------------------------------------------------- defects
def _defects_module():
    """SIM-B's defect injector, or None while it is unavailable."""
    try:
        from . import defects
    except ImportError:  # pragma: no cover - only while defects.py is being written
        return None
    return defects


def _apply_defects(image: np.ndarray, invvar: np.ndarray, rng: np.random.Generator,
                   cfg: dict[str, Any], cond: BandConditions,
                   bright_xy: list[tuple[float, float]]):
    """(image, invvar, truth, dq, counts) after defects (or saturation only, as fallback)."""
    mod = _defects_module()
    if mod is not None:
        rates = mod.DefectRates.from_dict(cfg["defects"])
        res = mod.inject_defects(image, invvar, rng, rates, pixscale=cond.pixscale,
                                 sky_sigma=cond.sky_sigma, sky_level=cond.sky,
                                 read_sigma=cond.read_noise / cond.gain,
                                 saturation_level=cond.saturation,
                                 psf_fwhm_pix=cond.psf_fwhm_pix, bright_star_xy=bright_xy)
        return res.image, res.invvar, res.truth, res.dq, dict(res.counts)
    img = image.astype(np.float32, copy=True)
    sat = img >= np.float32(cond.saturation)
    img[sat] = np.float32(cond.saturation)
    truth = np.where(sat, bit("saturated"), 0).astype(np.uint16)
    dq = truth.copy()
    dq[invvar <= 0] |= bit("nodata")
    return img, invvar.astype(np.float32), truth, dq, {}


def _nodata_mask(shape: tuple[int, int], prob: float, rng: np.random.Generator) -> np.ndarray:
    """A chip-gap-like strip of missing data with probability ``prob`` (else empty)."""
    mask = np.zeros(shape, bool)
    if rng.random() >= prob:
        return mask
    ny, nx = shape
    vertical = rng.random() < 0.5
    n = nx if vertical else ny
    width = int(rng.integers(max(n // 64, 4), max(n // 16, 8)))
    start = int(rng.integers(-width // 2, n - width // 2))
    sl = slice(max(start, 0), max(min(start + width, n), 0))
    if vertical:
        mask[:, sl] = True
    else:
        mask[sl, :] = True
    return mask


# ----------------------------------------------------------------------------- main
def render_tile(cfg: dict[str, Any], k: int, *, keep_noiseless: bool = False,
                galaxies: list | None = None) -> TileResult:
    """Simulate tile ``k`` of the survey described by ``cfg``.

    Parameters
    ----------
    cfg : dict
        Validated simulation settings (:func:`~tilecat.simulate.config.load_sim_config`).
    k : int
        Tile index (0-based).
    keep_noiseless : bool
        Also return the noiseless model images (for tests and benchmarks).
    galaxies : list of GalaxySpec, optional
        Use these galaxies instead of drawing the population (tests).

    Returns
    -------
    TileResult
    """
    import galsim

    seed = int(cfg["seed"])
    streams = dict(zip(STREAMS, np.random.SeedSequence([seed, k]).spawn(len(STREAMS))))
    rng = {name: np.random.default_rng(ss) for name, ss in streams.items()}
    shape = tile_shape(cfg)
    ny, nx = shape
    pixscale = float(cfg["survey"]["pixel_scale"])
    bands = list(cfg["survey"]["bands"])
    area = nx * ny * (pixscale / 60.0) ** 2
    gsp = _gsparams(cfg)
    rcfg = cfg["render"]

    conds = draw_conditions(cfg, rng["conditions"])
    if galaxies is None:
        n_gal = int(rng["galaxies"].poisson(cfg["population"]["galaxy_density"] * area))
        specs = draw_galaxies(n_gal, rng["galaxies"], cfg)
    else:
        specs = list(galaxies)
    stars = draw_stars(area, rng["stars"], cfg)
    models = [build_galaxy(s, gsp) for s in specs]
    r50_guess = np.array([m.size_hint() for m in models])
    gpos, spos = _positions(len(models), r50_guess, len(stars), shape, pixscale,
                            cfg["population"]["clustering"], rng["positions"])

    wcs = tile_wcs(cfg, k)
    tid = tile_id(cfg, k)

    # truth rows -------------------------------------------------------------------
    truth: list[dict[str, Any]] = []
    n = 0
    for model, (x, y) in zip(models, gpos):
        n += 1
        spec = model.spec
        r50, n_eff = measure_structure(model, REFERENCE_BAND)
        row = dict(id=k * OBJECTS_PER_TILE + n, x=float(x), y=float(y), is_star=False,
                   kind=spec.kind, redshift=float(spec.redshift), r50=r50, sersic_n=n_eff,
                   bulge_to_total=spec.bulge_to_total, population=spec.population)
        row.update(shape_truth(spec))
        row.update({f"flux_{b}": model.flux(b) for b in bands})
        row.update(labels(spec))
        truth.append(row)
    for star, (x, y) in zip(stars, spos):
        n += 1
        row = dict(id=k * OBJECTS_PER_TILE + n, x=float(x), y=float(y), is_star=True,
                   kind="star", redshift=0.0, r50=0.0, sersic_n=float("nan"),
                   bulge_to_total=0.0, population="star", q=1.0, e1=0.0, e2=0.0, pa_deg=0.0)
        row.update({f"flux_{b}": float(star.flux[LSST_BANDS.index(b)]) for b in bands})
        row.update(labels(None))
        truth.append(row)
    if truth:
        xy = np.array([[r["x"], r["y"]] for r in truth])
        radec = wcs.wcs_pix2world(xy, 0)
        for r, (ra, dec) in zip(truth, radec):
            r["ra"], r["dec"] = float(ra), float(dec)
            for b in bands:
                r[f"mag_{b}"] = float(flux_to_mag(r[f"flux_{b}"]))

    # pixels ------------------------------------------------------------------------
    noise_rngs = [np.random.default_rng(s) for s in streams["noise"].spawn(len(bands))]
    defect_rngs = [np.random.default_rng(s) for s in streams["defects"].spawn(len(bands))]
    nodata = _nodata_mask(shape, cfg["conditions"]["nodata_strip_prob"], rng["nodata"])
    out: dict[str, dict[str, np.ndarray]] = {"image": {}, "invvar": {}, "dq": {}, "defects": {}}
    noiseless: dict[str, np.ndarray] = {}
    counts: dict[str, dict] = {}
    model_imgs = {b: np.zeros(shape, np.float64) for b in bands}
    painter = _GalaxyPainter(model_imgs, conds, pixscale, rcfg["max_stamp"], gsp)
    for model, (x, y) in zip(models, gpos):
        painter.add(model, float(x), float(y))
    for ib, band in enumerate(bands):
        cond = conds[band]
        full = galsim.ImageD(model_imgs[band], xmin=0, ymin=0, scale=pixscale)
        bright = []
        for star, (x, y) in zip(stars, spos):
            _draw_star(full, star, band, x, y, cond, rcfg["max_star_stamp"])
            if _star_peak(float(star.flux[LSST_BANDS.index(band)]), cond) > cond.saturation:
                bright.append((float(x), float(y)))
        model_img = full.array
        nrng = noise_rngs[ib]
        lam = np.clip((cond.sky + model_img) * cond.gain, 0.0, None)
        counts_e = nrng.poisson(lam).astype(np.float64)
        counts_e += nrng.normal(0.0, cond.read_noise, shape)
        image = (counts_e / cond.gain - cond.sky).astype(np.float32)
        invvar = (1.0 / cond.variance(model_img)).astype(np.float32)
        img, iv, tr, dq, cnt = _apply_defects(image, invvar, defect_rngs[ib], cfg, cond, bright)
        if nodata.any():
            img = img.copy()
            img[nodata] = 0.0
            iv = iv.copy()
            iv[nodata] = 0.0
            dq = dq.copy()
            dq[nodata] = bit("nodata")
            tr = tr.copy()
            tr[nodata] = 0
        out["image"][band] = img.astype(np.float32)
        out["invvar"][band] = iv.astype(np.float32)
        out["dq"][band] = dq.astype(np.uint16)
        out["defects"][band] = tr.astype(np.uint16)
        counts[band] = cnt
        if keep_noiseless:
            noiseless[band] = model_img.copy()

    truth.sort(key=lambda r: r["id"])
    return TileResult(
        tile=tid, index=k, seed=tile_seed(seed, k), bands=bands, conditions=conds, wcs=wcs,
        image=out["image"], invvar=out["invvar"], dq=out["dq"], defects=out["defects"],
        truth=truth, noiseless=noiseless if keep_noiseless else None,
        center=tile_center(cfg, k), defect_counts=counts,
    )
