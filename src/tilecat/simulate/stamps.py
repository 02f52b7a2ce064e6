"""Training sets: galaxy postage stamps (morphology, structure, photo-z, latent models).

One stamp = one object at the centre (sub-pixel jitter up to +-0.5 pixel) of a
``size x size`` cut, in every survey band, with neighbours at the survey's galaxy and
star densities, sky + Poisson + read noise from the drawn observing conditions,
stored as ``arcsinh(F / sigma_band)`` with ``sigma_band`` the band's background noise
(the same normalisation the pipeline's cutouts get, :func:`tilecat.normalize.asinh_norm`).

Classes are balanced: the morphology kinds of :data:`STAMP_CLASSES` (six galaxy kinds
and ``artifact``: stars and single-band artefacts — cosmic rays, trail segments, hot
pixels — that a detector picks up) get equal numbers of stamps; spirals are half S,
half Z; half of the spirals are barred. Galaxies come from the configured population
(equal morphology weights, so the colour-dependent choice of kind is kept) with a
flattened magnitude distribution (``count_slope`` 0.12 instead of the counts' 0.33) so
that the r-band S/N spans ~5 to >1000. Every group of ``GROUP`` stamps shares one draw
of observing conditions (like objects of one tile).

Every stamp records its band's observing conditions: ``psf_fwhm(object, band)``
[arcsec], ``psf_beta(object, band)`` (Moffat beta, dimensionless), ``depth`` and
``sigma``.

Held-out sets (``heldout=True``) use other observing conditions: PSF FWHM ranges just
above the training ones and 5-sigma depths just shallower (see :func:`heldout_config`),
and should be drawn with another seed.

Rendering goes through :class:`~tilecat.simulate.kspace.KGrid`: each profile is
transformed once and every band costs one inverse FFT.
"""

from __future__ import annotations

import copy
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..normalize import asinh_norm
from .conditions import draw_conditions
from .config import DEFAULTS, SIMVER
from .kspace import KGrid
from .photometry import LSST_BANDS, REFERENCE_BAND, flux_to_mag
from .population import KINDS, PLAIN_KINDS, draw_galaxies, labels, make_plain

__all__ = [
    "STAMP_CLASSES",
    "GROUP",
    "CHUNK",
    "stamp_config",
    "heldout_config",
    "class_plan",
    "render_stamp_chunk",
    "make_galaxy_stamps",
    "write_dataset",
]

#: Balanced classes of the galaxy-stamp set.
STAMP_CLASSES: tuple[str, ...] = KINDS + ("artifact",)
#: Stamps sharing one draw of observing conditions.
GROUP = 16
#: Stamps per work unit (a unit's output depends only on (seed, unit index)).
CHUNK = 128
_ARTIFACT_STAR_FRACTION = 0.6
_SELECTION = ("central_mag_limit", "central_r50_min", "star_mag_range")
_EXCLUDE_ARCSEC = 1.5  # neighbours keep at least this far (and 1 r50) from the centre


# ------------------------------------------------------------------------- settings
def stamp_config(cfg: dict[str, Any], heldout: bool = False) -> dict[str, Any]:
    """Settings used to draw stamp galaxies: equal kind weights, flatter counts, bars 50 %.

    Parameters
    ----------
    cfg : dict
        Validated simulation settings.
    heldout : bool
        Apply :func:`heldout_config` conditions.
    """
    c = copy.deepcopy(cfg)
    p = c["population"]
    p["morphology"] = {k: 1.0 for k in KINDS}
    p["count_slope"] = 0.12
    p["bar_fraction"] = 0.5
    return heldout_config(c) if heldout else c


def heldout_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Held-out observing conditions.

    If the settings give ``stamps.heldout`` (any of ``psf_fwhm`` and ``depth`` per band,
    ``psf_beta``), those ranges replace the training ones. Otherwise conditions move
    outside the training ranges: for every band, PSF FWHM range ``[lo, hi]`` ->
    ``[hi, hi + (hi - lo) + 0.1]`` and depth range ``[lo, hi]`` ->
    ``[lo - (hi - lo) - 0.3, lo]``.
    """
    c = copy.deepcopy(cfg)
    cond = c["conditions"]
    held = (c.get("stamps") or {}).get("heldout")
    if held:
        for key in ("psf_fwhm", "depth"):
            for b, rng in (held.get(key) or {}).items():
                cond[key][b] = [float(v) for v in rng]
        if "psf_beta" in held:
            cond["psf_beta"] = [float(v) for v in held["psf_beta"]]
        return c
    for b in c["survey"]["bands"]:
        lo, hi = cond["psf_fwhm"][b]
        cond["psf_fwhm"][b] = [float(hi), float(hi + (hi - lo) + 0.1)]
        lo, hi = cond["depth"][b]
        cond["depth"][b] = [float(lo - (hi - lo) - 0.3), float(lo)]
    return c


def class_plan(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced class index per stamp and spin per stamp (S/Z alternate among spirals).

    Returns
    -------
    classes : ndarray (n,) int
        Index into :data:`STAMP_CLASSES`; counts differ by at most one.
    spins : ndarray (n,) of str
        ``S``/``Z`` for spirals (alternating in plan order), ``none`` otherwise.
    """
    k = len(STAMP_CLASSES)
    classes = np.arange(n) % k
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    classes = classes[rng.permutation(n)]
    spins = np.full(n, "none", dtype=object)
    sp = np.flatnonzero(classes == STAMP_CLASSES.index("spiral"))
    spins[sp] = np.where(np.arange(sp.size) % 2 == 0, "Z", "S")
    return classes, spins


# ------------------------------------------------------------------------- helpers
def _gsparams(cfg: dict[str, Any]) -> Any:
    import galsim

    r = cfg["render"]
    return galsim.GSParams(folding_threshold=r["folding_threshold"],
                           maxk_threshold=r["maxk_threshold"])


def _quantise(spec: Any) -> None:
    """Round Sérsic indices to 0.1 (GalSim tabulates each index once; truth keeps it)."""
    for s in (spec, spec.companion):
        if s is None:
            continue
        s.n_bulge = float(np.round(s.n_bulge, 1))
        if s.n_disk != 1.0:
            s.n_disk = float(np.round(s.n_disk, 1))


class _Pool:
    """Galaxy specs drawn in batches, handed out by kind (keeps draw order deterministic)."""

    def __init__(self, cfg: dict[str, Any], rng: np.random.Generator, batch: int = 64,
                 r50_min: float | None = None):
        self.cfg, self.rng, self.batch = cfg, rng, batch
        self.r50_min = r50_min
        self.queues: dict[str, list] = {k: [] for k in KINDS}
        self.any: list = []

    def _fill(self) -> None:
        for s in draw_galaxies(self.batch, self.rng, self.cfg):
            if self.r50_min is not None and _r50_proxy(s) < self.r50_min:
                continue
            self.queues[s.kind].append(s)
            self.any.append(s)

    def take(self, kind: str | None) -> Any:
        for _ in range(1000):
            q = self.any if kind is None else self.queues[kind]
            if q:
                s = q.pop(0)
                if kind is None:
                    self.queues[s.kind].remove(s)
                else:
                    self.any.remove(s)
                return s
            self._fill()
        raise ConfigError(f"stamp simulation: the population never yields kind {kind!r}")


def _r50_proxy(spec: Any) -> float:
    """Flux-weighted mean of bulge and disk half-light radii (arcsec): a cheap size for
    selecting central galaxies before rendering (the truth r50 is measured later)."""
    bt = float(spec.bulge_to_total)
    return bt * float(spec.r50_bulge) + (1.0 - bt) * float(spec.r50_disk)


def _r50_n(model: Any, ref: str) -> tuple[float, float]:
    """Intrinsic half-light radius (arcsec) and effective Sérsic index in band ``ref``
    (:func:`tilecat.simulate.galaxies.measure_structure`, the tiles' truth definition)."""
    from .galaxies import measure_structure

    return measure_structure(model, ref)


def _artifact_layer(rng: np.random.Generator, size: int, sigma: float, jx: float,
                    jy: float) -> tuple[np.ndarray, str]:
    """A single-band artefact centred on the stamp: cosmic ray, trail segment or hot pixels."""
    from .defects import _cosmic_ray_samples, _splat, _trail_layer

    c = size // 2
    u = rng.random()
    if u < 0.5:
        xs, ys, q, kind = _cosmic_ray_samples(rng, (size, size), sigma, math.inf)
        xs = xs - xs.mean() + c + jx
        ys = ys - ys.mean() + c + jy
        return _splat((size, size), xs, ys, q).astype(np.float32), f"cosmic_ray_{kind}"
    if u < 0.8:
        layer, kind = _trail_layer(rng, (size, size), sigma, centre=(c + jx, c + jy))
        return layer, f"trail_{kind}"
    layer = np.zeros((size, size), np.float32)
    m = int(rng.integers(1, 4))
    for i in range(m):
        layer[c + int(rng.integers(-1, 2)) * (i > 0), c + int(rng.integers(-1, 2)) * (i > 0)] += (
            sigma * 10 ** rng.uniform(0.7, 2.5))
    return layer, "hot"


# ------------------------------------------------------------------------- rendering
def render_stamp_chunk(cfg: dict[str, Any], seed: int, unit: int, classes: np.ndarray,
                       spins: np.ndarray, size: int = 64) -> dict[str, Any]:
    """Render one work unit of stamps (see :func:`_render_chunk`), BLAS single-threaded.

    The per-stamp matrix products are tiny: multi-threaded BLAS only adds contention.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return _render_chunk(cfg, seed, unit, classes, spins, size)
    with threadpool_limits(limits=1):
        return _render_chunk(cfg, seed, unit, classes, spins, size)


def _render_chunk(cfg: dict[str, Any], seed: int, unit: int, classes: np.ndarray,
                  spins: np.ndarray, size: int = 64) -> dict[str, Any]:
    """Render one work unit of stamps.

    Parameters
    ----------
    cfg : dict
        Stamp settings (:func:`stamp_config`).
    seed : int
        Data-set seed; the unit draws from ``SeedSequence([seed, unit])`` only.
    unit : int
        Work-unit index.
    classes, spins : ndarray (m,)
        This unit's slice of :func:`class_plan`.
    size : int
        Stamp size, pixels (even).

    Returns
    -------
    dict of arrays along the unit's objects (``stamps`` (m, B, size, size) float32,
    ``sigma``, ``psf_fwhm`` [arcsec], ``psf_beta`` (Moffat beta) and ``depth`` (m, B),
    labels).
    """
    from .galaxies import build_galaxy
    from .stars import draw_stars

    bands = list(cfg["survey"]["bands"])
    ib = [LSST_BANDS.index(b) for b in bands]
    nb = len(bands)
    scale = float(cfg["survey"]["pixel_scale"])
    ref = REFERENCE_BAND if REFERENCE_BAND in bands else bands[len(bands) // 2]
    iref = bands.index(ref)
    ss = np.random.SeedSequence([seed, unit])
    r_pop, r_nb, r_cond, r_pos, r_noise, r_art = (np.random.default_rng(s) for s in ss.spawn(6))
    gsp = _gsparams(cfg)
    sel = cfg.get("stamps") or {}
    central = copy.deepcopy(cfg)
    if sel.get("central_mag_limit") is not None:
        central["population"]["mag_limit"] = float(sel["central_mag_limit"])
    r50_min = sel.get("central_r50_min")
    pool = _Pool(central, r_pop, r50_min=None if r50_min is None else float(r50_min))
    # plain disks draw from a 7th stream, so sets without them stay as they were
    plain = float(sel.get("plain_fraction") or 0.0)
    r_plain = np.random.default_rng(ss.spawn(1)[0]) if plain > 0 else None
    natural = copy.deepcopy(cfg)
    natural["population"]["morphology"] = dict(DEFAULTS["population"]["morphology"])
    natural["population"]["count_slope"] = DEFAULTS["population"]["count_slope"]
    nb_pool = _Pool(natural, r_nb)
    star_cfg = copy.deepcopy(cfg)
    star_cfg["stars"]["bright_per_tile"] = 0.0
    central_star_cfg = copy.deepcopy(star_cfg)
    if sel.get("star_mag_range") is not None:
        central_star_cfg["stars"]["mag_range"] = [float(v) for v in sel["star_mag_range"]]
    grids = {2 * size: KGrid(2 * size, scale)}
    m = len(classes)
    stamps = np.empty((m, nb, size, size), np.float32)
    out: dict[str, Any] = {k: [] for k in (
        "kind", "population", "is_star", "redshift", "r50", "sersic_n", "bulge_to_total", "q",
        "e1", "e2", "pa_deg", "t_class", "edge_on", "spiral_arms", "spin", "bar", "bulge_size",
        "merger", "roundness", "snr", "n_neighbours", "offset_x", "offset_y", "artifact")}
    mags = np.full((m, nb), np.nan)
    sig_all = np.empty((m, nb), np.float32)
    fwhm_all = np.empty((m, nb), np.float32)
    beta_all = np.empty((m, nb), np.float32)
    depth_all = np.empty((m, nb), np.float32)
    dens = float(natural["population"]["galaxy_density"])
    psf_cache: dict[int, np.ndarray] = {}
    conds = None
    for i in range(m):
        if i % GROUP == 0:
            conds = draw_conditions(cfg, r_cond)
            psf_cache = {}
        cls = STAMP_CLASSES[int(classes[i])]
        jx, jy = r_pos.uniform(-0.5, 0.5, 2)
        main_model = None
        star_flux = None
        if cls == "artifact":
            if r_art.random() < _ARTIFACT_STAR_FRACTION:
                st = draw_stars(1.0, r_art, central_star_cfg)
                while not st:
                    st = draw_stars(1.0, r_art, central_star_cfg)
                star_flux = st[0].flux
        else:
            spec = pool.take(cls)
            if cls == "spiral":
                spec.spin = str(spins[i])
            if r_plain is not None and cls in PLAIN_KINDS and r_plain.random() < plain:
                make_plain(spec)
            _quantise(spec)
            main_model = build_galaxy(spec, gsp)
        # grid size from the object's extent
        hint = main_model.size_hint() if main_model is not None else 0.0
        # light wraps into the stamp from (n - size/2) pixels away: keep 6 r50 inside
        n = 2 * size if hint * 6.0 < 1.5 * size * scale else 4 * size
        if n not in grids:
            grids[n] = KGrid(n, scale)
        g = grids[n]
        if n not in psf_cache:
            psf_cache[n] = np.stack([g.psf_k(conds[b].psf_fwhm, conds[b].psf_beta)
                                     for b in bands])
        pk = psf_cache[n]
        kparts, fluxes = [], []
        phase = g.shift_phase(jx * scale, jy * scale)
        if main_model is not None:
            for obj, f in main_model.parts:
                kparts.append(g.kimage(obj) * phase)
                fluxes.append(f[ib])
        elif star_flux is not None:
            kparts.append(g.point_k(jx * scale, jy * scale))
            fluxes.append(star_flux[ib])
        n_main = len(kparts)
        # neighbours: galaxies and stars at the survey densities
        n_nb = _add_neighbours(g, kparts, fluxes, ib, size, max(_EXCLUDE_ARCSEC, hint),
                               dens, nb_pool, star_cfg, r_pos, gsp)
        if kparts:
            model = g.to_images(np.stack(kparts), np.asarray(fluxes, float), pk, crop=size)
        else:
            model = np.zeros((nb, size, size), np.float32)
        # noise per band and S/N of the main object in the reference band
        img = np.empty((nb, size, size), np.float32)
        for j, b in enumerate(bands):
            c = conds[b]
            var = c.variance(model[j].astype(np.float64))
            img[j] = model[j] + np.sqrt(var) * r_noise.standard_normal((size, size))
            sig_all[i, j] = c.sky_sigma
            fwhm_all[i, j] = c.psf_fwhm
            beta_all[i, j] = c.psf_beta
            depth_all[i, j] = c.depth
        snr = 0.0
        if n_main:
            mk = np.stack(kparts[:n_main])
            mf = np.asarray(fluxes[:n_main], float)[:, [iref]]
            mref = g.to_images(mk, mf, pk[[iref]], crop=size)[0].astype(np.float64)
            snr = float(np.sqrt(np.sum(mref**2 / conds[ref].variance(mref))))
        art = "none"
        if cls == "artifact" and star_flux is None:
            jb = int(r_art.integers(nb))
            layer, art = _artifact_layer(r_art, size, conds[bands[jb]].sky_sigma, jx, jy)
            img[jb] += layer
            snr = float(np.sqrt(np.sum((layer / conds[bands[jb]].sky_sigma) ** 2)))
        stamps[i] = asinh_norm(img, sig_all[i][:, None, None])
        # labels
        out["offset_x"].append(float(jx))
        out["offset_y"].append(float(jy))
        out["n_neighbours"].append(n_nb)
        out["snr"].append(snr)
        out["artifact"].append(art)
        row = _label_row(main_model, star_flux is not None, ref)
        if main_model is not None:
            mags[i] = flux_to_mag(np.array([main_model.flux(b) for b in bands]))
        elif star_flux is not None:
            mags[i] = flux_to_mag(star_flux[ib])
        for k, v in row.items():
            out[k].append(v)
    res = {k: np.asarray(v) for k, v in out.items()}
    for k in ("kind", "population", "t_class", "spin", "bar", "bulge_size", "roundness",
              "artifact"):
        res[k] = np.asarray(out[k], dtype=object)
    res.update(stamps=stamps, sigma=sig_all, psf_fwhm=fwhm_all, psf_beta=beta_all,
               depth=depth_all, mags=mags)
    return res


def _add_neighbours(g: KGrid, kparts: list, fluxes: list, ib: list[int], size: int,
                    exclude: float, density: float, pool: _Pool, star_cfg: dict[str, Any],
                    rng: np.random.Generator, gsp: Any) -> int:
    """Append neighbour galaxies and stars (transforms and band fluxes) to the scene.

    Objects are placed uniformly over the stamp plus an 8-pixel border, at the
    population's galaxy density and the stars' density, but not within ``exclude``
    arcsec of the centre. Returns the number added.
    """
    from .galaxies import build_galaxy
    from .stars import draw_stars

    scale = g.scale
    region = (size + 16) * scale
    area = (region / 60.0) ** 2
    n_gal = int(rng.poisson(density * area))
    stars = draw_stars(area, rng, star_cfg)
    added = 0
    for k in range(n_gal + len(stars)):
        x, y = rng.uniform(-region / 2, region / 2, 2)
        if math.hypot(x, y) < exclude:
            continue
        ph = g.shift_phase(x, y)
        if k < n_gal:
            spec = pool.take(None)
            _quantise(spec)
            model = build_galaxy(spec, gsp)
            if model.size_hint() * 6.0 > (g.n - size) * scale:  # too big for the grid
                continue
            for obj, f in model.parts:
                kparts.append(g.kimage(obj) * ph)
                fluxes.append(f[ib])
        else:
            kparts.append(ph)  # a point source at (x, y)
            fluxes.append(stars[k - n_gal].flux[ib])
        added += 1
    return added


def _label_row(model: Any, is_star: bool, ref: str) -> dict[str, Any]:
    """Truth labels and structure of the central object (galaxy model, star or artefact)."""
    from .galaxies import shape_truth

    if model is not None:
        spec = model.spec
        r50, n_eff = _r50_n(model, ref)
        row: dict[str, Any] = dict(kind=spec.kind, population=spec.population, is_star=False,
                                   redshift=float(spec.redshift), r50=r50, sersic_n=n_eff,
                                   bulge_to_total=float(spec.bulge_to_total))
        row.update(shape_truth(spec))
        row.update(labels(spec))
        return row
    nan = math.nan
    row = dict(kind="star" if is_star else "artifact",
               population="star" if is_star else "artifact", is_star=is_star,
               redshift=0.0, r50=0.0 if is_star else nan, sersic_n=nan,
               bulge_to_total=0.0, q=1.0 if is_star else nan,
               e1=0.0 if is_star else nan, e2=0.0 if is_star else nan,
               pa_deg=0.0 if is_star else nan)
    row.update(labels(None))
    return row


def _unit_task(args: tuple) -> dict[str, Any]:
    return render_stamp_chunk(*args)


def _to_dataset(res: dict[str, Any], bands: list[str], start: int) -> Any:
    import xarray as xr

    size = res["stamps"].shape[-1]
    data: dict[str, Any] = {
        "stamps": (("object", "band", "y", "x"), res["stamps"]),
        "sigma": (("object", "band"), res["sigma"]),
        "psf_fwhm": (("object", "band"), res["psf_fwhm"]),
        "psf_beta": (("object", "band"), res["psf_beta"]),
        "depth": (("object", "band"), res["depth"]),
    }
    for j, b in enumerate(bands):
        data[f"mag_{b}"] = (("object",), res["mags"][:, j].astype(np.float64))
    skip = {"stamps", "sigma", "psf_fwhm", "psf_beta", "depth", "mags"}
    for k, v in res.items():
        if k in skip:
            continue
        data[k] = (("object",), v)
    n = res["stamps"].shape[0]
    ds = xr.Dataset(data, coords={
        "object": np.arange(start, start + n, dtype=np.int64),
        "band": np.asarray(bands, dtype=object),
        "y": np.arange(size, dtype=np.int32), "x": np.arange(size, dtype=np.int32)})
    units = {"sigma": "nanomaggy", "psf_fwhm": "arcsec", "psf_beta": "dimensionless",
             "r50": "arcsec", "pa_deg": "deg",
             "stamps": "arcsinh(F / sigma_band)", "depth": "mag(AB), 5-sigma point source",
             "offset_x": "pixel", "offset_y": "pixel",
             **{f"mag_{b}": "mag(AB)" for b in bands}}
    for k, u in units.items():
        ds[k].attrs["units"] = u
    return ds


def write_dataset(parts: Any, out: str | Path, attrs: dict[str, Any],
                  chunks: dict[str, tuple[int, ...]]) -> Path:
    """Write datasets (an iterable, appended along ``object``/``patch``) atomically as Zarr v3.

    Parameters
    ----------
    parts : iterable of xarray.Dataset
        Consecutive pieces; the first creates the store, the others are appended.
    out : path
        Final store directory (replaced atomically).
    attrs : dict
        Group attributes (JSON-serialisable).
    chunks : dict
        Zarr chunk shape per variable name (others: one chunk per piece).

    Returns
    -------
    Path
    """
    import shutil
    import tempfile

    from ..atomic import replace_dir
    from ..store import compressors

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    store = tmp / "data.zarr"
    try:
        first = True
        for ds in parts:
            dim = "object" if "object" in ds.dims else "patch"
            if first:
                enc = {}
                for name in ds.data_vars:
                    e: dict[str, Any] = {"compressors": compressors(3)}
                    if name in chunks:
                        e["chunks"] = chunks[name]
                    elif ds[name].dims[0] == dim:
                        e["chunks"] = (4096,) + ds[name].shape[1:]
                    enc[name] = e
                enc[dim] = {"chunks": (4096,)}
                ds.to_zarr(store, mode="w", zarr_format=3, consolidated=False, encoding=enc)
                first = False
            else:
                ds.to_zarr(store, mode="a", append_dim=dim, zarr_format=3, consolidated=False)
        if first:
            raise ConfigError("stamp simulation: nothing to write (number must be >= 1)")
        import zarr

        # appends rewrite the group attributes: set them once, at the end
        zarr.open_group(store, mode="r+", zarr_format=3).attrs.put(_jsonable(attrs))
        replace_dir(store, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _jsonable(obj: Any) -> Any:
    """Plain JSON types (numpy scalars/arrays -> Python), recursively."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _freq(values: np.ndarray) -> dict[str, float]:
    u, c = np.unique(np.asarray(values, dtype=str), return_counts=True)
    return {str(k): round(float(v) / max(len(values), 1), 6) for k, v in zip(u, c)}


def make_galaxy_stamps(cfg: dict[str, Any], out: str | Path, n: int, seed: int,
                       heldout: bool = False, workers: int = 1, size: int = 64,
                       progress: bool = False) -> Path:
    """Simulate ``n`` balanced galaxy stamps and write them to the Zarr store ``out``.

    Parameters
    ----------
    cfg : dict
        Validated simulation settings (survey bands, pixel scale, population, conditions).
    out : path
        Output store (written atomically).
    n : int
        Number of stamps.
    seed : int
        Data-set seed (held-out sets should use another one).
    heldout : bool
        Use held-out observing conditions (:func:`heldout_config`).
    workers : int
        Processes. The output does not depend on it.
    size : int
        Stamp size in pixels (even).

    Returns
    -------
    Path
        The store.
    """
    if n < 1:
        raise ConfigError(f"stamp simulation: number must be >= 1, got {n}")
    if size < 8 or size % 2:
        raise ConfigError(f"stamp simulation: stamp size must be even and >= 8, got {size}")
    scfg = stamp_config(cfg, heldout)
    bands = list(scfg["survey"]["bands"])
    classes, spins = class_plan(n, seed)
    tasks = [(scfg, seed, u, classes[s:s + CHUNK], spins[s:s + CHUNK], size)
             for u, s in enumerate(range(0, n, CHUNK))]
    cond = scfg["conditions"]
    ref = REFERENCE_BAND if REFERENCE_BAND in bands else bands[len(bands) // 2]
    labels_cls = np.array([STAMP_CLASSES[c] for c in classes])
    attrs = {
        "title": "tilecat simulated galaxy stamps",
        "dataset": "galaxy_stamps",
        "bands": bands,
        "pixel_scale": float(scfg["survey"]["pixel_scale"]),
        "zeropoint": 22.5,
        "stamp_size": size,
        "seed": int(seed),
        "heldout": bool(heldout),
        "simver": SIMVER,
        "snr_band": ref,
        "normalisation": "stamps = arcsinh(F / sigma_band), sigma_band = background noise",
        "class_frequencies": _freq(labels_cls),
        "recipe": {
            "classes": list(STAMP_CLASSES),
            "balanced": "equal numbers per class; spirals alternate S/Z; bar_fraction 0.5",
            "artifact": f"{_ARTIFACT_STAR_FRACTION:.0%} stars, rest single-band cosmic rays, "
                        "trail segments, hot pixels",
            "population": scfg["population"]["kind"],
            "count_slope": scfg["population"]["count_slope"],
            "galaxy_density_per_arcmin2": scfg["population"]["galaxy_density"],
            "star_density_per_arcmin2": scfg["stars"]["density"],
            "conditions_group": GROUP,
            "psf_fwhm_ranges": {b: cond["psf_fwhm"][b] for b in bands},
            "depth_ranges": {b: cond["depth"][b] for b in bands},
            "unit": CHUNK,
            **({"selection": {k: scfg["stamps"][k]
                              for k in _SELECTION}}
               if any(scfg.get("stamps", {}).get(k) is not None for k in _SELECTION)
               else {}),
            # only when drawn, so that earlier sets keep their attributes
            **({"plain_fraction": float(scfg["stamps"]["plain_fraction"])}
               if scfg.get("stamps", {}).get("plain_fraction") else {}),
            **({"psf_coherence": float(cond["psf_coherence"])}
               if cond.get("psf_coherence") else {}),
            # held-out sets with their own beta range, and training sets whose beta range
            # is not the default (earlier sets keep their attributes)
            **({"psf_beta_range": cond["psf_beta"]} if (heldout and scfg.get(
                "stamps", {}).get("heldout")) or [float(v) for v in cond["psf_beta"]]
               != [float(v) for v in DEFAULTS["conditions"]["psf_beta"]] else {}),
            # only when not the default, so that earlier sets keep their attributes
            **({"bar_model": scfg["population"]["bar_model"]}
               if scfg["population"].get("bar_model", "faint") != "faint" else {}),
        },
    }
    chunks = {"stamps": (64, len(bands), size, size)}

    def pieces():
        done = 0
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as ex:
                for u, res in enumerate(ex.map(_unit_task, tasks)):
                    done += len(res["kind"])
                    if progress:
                        print(f"  {done}/{n} stamps", flush=True)
                    yield _to_dataset(res, bands, u * CHUNK)
        else:
            for u, t in enumerate(tasks):
                res = _unit_task(t)
                done += len(res["kind"])
                if progress:
                    print(f"  {done}/{n} stamps", flush=True)
                yield _to_dataset(res, bands, u * CHUNK)

    return write_dataset(pieces(), out, attrs, chunks)

