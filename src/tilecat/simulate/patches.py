"""Training set of the defect masker: single-band patches with injected defects.

Each patch is a small simulated tile (``size x size`` pixels, one band drawn at random)
rendered like :mod:`tilecat.simulate.tile` renders tiles — galaxies and stars of the
configured population at survey density, Moffat PSF, sky + Poisson + read noise, the
same inverse variance — then passed through
:func:`tilecat.simulate.defects.inject_defects`. The stored pixels are exactly what the
pipeline's ``tile.zarr`` would hold (``flux`` sky-subtracted in nanomaggies, ``invvar``,
``dq`` with only upstream knowledge), so the masker's own input preparation is the
single normalisation in training and inference; ``truth`` holds the defect bits.

Rare classes are oversampled: every patch has a *focus* drawn uniformly from
:data:`FOCI` that raises the rate of one defect family (trails, bad columns,
persistence, saturated stars with bleed trails, ...) above a common base rate. The
resulting pixel class frequencies ``P_T`` (fraction of pixels carrying each bit, and
of clean pixels) are recorded in the store attributes for prior correction.
"""

from __future__ import annotations

import copy
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..bits import DEFECT_CLASSES, bit
from ..errors import ConfigError
from .conditions import draw_conditions
from .config import SIMVER
from .defects import DEFECTS_VERSION, DefectRates, inject_defects
from .kspace import KGrid
from .photometry import LSST_BANDS, mag_to_flux

__all__ = ["FOCI", "BASE_RATES", "focus_rates", "render_patch_chunk", "make_defect_patches",
           "pixel_class_frequencies"]

#: Patch foci, drawn with equal probability.
FOCI: tuple[str, ...] = ("clean", "cosmic_ray", "pixels", "columns", "trail", "persistence",
                         "saturated")
#: Rates common to every patch (per megapixel / per patch).
BASE_RATES: dict[str, float] = dict(
    cosmic_ray_per_mpix=150.0, hot_pixel_per_mpix=60.0, hot_column_per_tile=0.04,
    dead_pixel_per_mpix=60.0, dead_column_per_tile=0.04, trail_per_tile=0.04,
    persistence_per_tile=0.04)
_BOOST: dict[str, dict[str, float]] = {
    "clean": {},
    "cosmic_ray": dict(cosmic_ray_per_mpix=1200.0),
    "pixels": dict(hot_pixel_per_mpix=800.0, dead_pixel_per_mpix=800.0),
    "columns": dict(hot_column_per_tile=0.8, dead_column_per_tile=0.8),
    "trail": dict(trail_per_tile=1.3),
    "persistence": dict(persistence_per_tile=1.5),
    "saturated": {},
}
CHUNK = 32
_NODATA_PROB = 0.08


def focus_rates(focus: str, known_bad_fraction: float = 0.7) -> DefectRates:
    """Defect rates of a patch with the given focus."""
    if focus not in _BOOST:
        raise ConfigError(f"unknown patch focus {focus!r}; known: {list(FOCI)}")
    r = dict(BASE_RATES)
    if focus == "clean":
        r = {k: v * 0.1 for k, v in r.items()}
    r.update(_BOOST[focus])
    return DefectRates(known_bad_fraction=known_bad_fraction, **r)


def _moffat_peak(flux: float, fwhm_pix: float, beta: float) -> float:
    alpha = fwhm_pix / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return flux * (beta - 1.0) / (math.pi * alpha**2)


def _nodata(size: int, rng: np.random.Generator) -> np.ndarray:
    """An edge strip of missing data (chip gap / survey edge) with probability 8 %."""
    mask = np.zeros((size, size), bool)
    if rng.random() >= _NODATA_PROB:
        return mask
    w = int(rng.integers(4, size // 4))
    side = int(rng.integers(4))
    if side == 0:
        mask[:, :w] = True
    elif side == 1:
        mask[:, -w:] = True
    elif side == 2:
        mask[:w, :] = True
    else:
        mask[-w:, :] = True
    return mask


def render_patch_chunk(cfg: dict[str, Any], seed: int, unit: int, foci: list[str],
                       size: int = 128) -> dict[str, np.ndarray]:
    """Render one work unit of patches (BLAS single-threaded).

    Parameters
    ----------
    cfg : dict
        Validated simulation settings (held-out conditions already applied).
    seed : int
        Data-set seed; the unit draws from ``SeedSequence([seed, unit])`` only.
    unit : int
        Work-unit index.
    foci : list of str
        Focus of each patch of the unit.
    size : int
        Patch size in pixels (even).

    Returns
    -------
    dict of arrays along the unit's patches.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return _render(cfg, seed, unit, foci, size)
    with threadpool_limits(limits=1):
        return _render(cfg, seed, unit, foci, size)


def _render(cfg: dict[str, Any], seed: int, unit: int, foci: list[str],
            size: int) -> dict[str, np.ndarray]:
    import galsim

    from .galaxies import build_galaxy
    from .population import draw_galaxies
    from .stamps import _quantise
    from .stars import draw_stars

    bands = list(cfg["survey"]["bands"])
    scale = float(cfg["survey"]["pixel_scale"])
    ss = np.random.SeedSequence([seed, unit])
    r_cond, r_pop, r_pos, r_noise, r_def = (np.random.default_rng(s) for s in ss.spawn(5))
    gsp = galsim.GSParams(folding_threshold=cfg["render"]["folding_threshold"],
                          maxk_threshold=cfg["render"]["maxk_threshold"])
    n = 2 * size
    grid = KGrid(n, scale)
    margin = 16
    region = (size + 2 * margin) * scale  # arcsec
    area = (region / 60.0) ** 2
    star_cfg = copy.deepcopy(cfg)
    star_cfg["stars"]["bright_per_tile"] = 0.0
    m = len(foci)
    out = {k: np.empty((m, size, size), t) for k, t in
           (("flux", np.float32), ("invvar", np.float32), ("dq", np.uint16),
            ("truth", np.uint16))}
    meta: dict[str, list] = {k: [] for k in ("band", "focus", "psf_fwhm", "pixscale",
                                             "sky_sigma", "saturation", "n_bright")}
    for i, focus in enumerate(foci):
        conds = draw_conditions(cfg, r_cond)
        band = bands[int(r_cond.integers(len(bands)))]
        c = conds[band]
        ib = LSST_BANDS.index(band)
        psf_k = grid.psf_k(c.psf_fwhm, c.psf_beta)[None]
        kparts, fluxes = [], []
        n_gal = int(r_pos.poisson(cfg["population"]["galaxy_density"] * area))
        for spec in draw_galaxies(n_gal, r_pop, cfg):
            _quantise(spec)
            model = build_galaxy(spec, gsp)
            if model.size_hint() * 6.0 > (n - size) * scale:
                continue  # larger than the wrap-free margin of the grid
            x, y = r_pos.uniform(-region / 2, region / 2, 2)
            ph = grid.shift_phase(x, y)
            for obj, f in model.parts:
                kparts.append(grid.kimage(obj) * ph)
                fluxes.append([f[ib]])
        stars = draw_stars(area, r_pos, star_cfg)
        star_flux = [float(s.flux[ib]) for s in stars]
        if focus == "saturated":
            nb = 1 + int(r_pos.random() < 0.3)
            for _ in range(nb):
                lo, hi = cfg["stars"]["bright_mag_range"]
                star_flux.append(float(mag_to_flux(r_pos.uniform(lo, hi))))
        bright = []
        for j, fl in enumerate(star_flux):
            x, y = r_pos.uniform(-region / 2, region / 2, 2)
            if focus == "saturated" and j >= len(stars):  # keep bright stars inside
                x, y = r_pos.uniform(-0.4 * size * scale, 0.4 * size * scale, 2)
            kparts.append(grid.point_k(x, y))
            fluxes.append([fl])
            if _moffat_peak(fl, c.psf_fwhm_pix, c.psf_beta) > c.saturation:
                bright.append((x / scale + size // 2, y / scale + size // 2))
        if kparts:
            model_img = grid.to_images(np.stack(kparts), np.asarray(fluxes), psf_k,
                                       crop=size)[0].astype(np.float64)
        else:
            model_img = np.zeros((size, size))
        # noise exactly as tile.py: Poisson(gain (sky + model)) + read noise, sky subtracted
        lam = np.clip((c.sky + model_img) * c.gain, 0.0, None)
        counts = r_noise.poisson(lam).astype(np.float64)
        counts += r_noise.normal(0.0, c.read_noise, (size, size))
        image = (counts / c.gain - c.sky).astype(np.float32)
        invvar = (1.0 / c.variance(model_img)).astype(np.float32)
        res = inject_defects(image, invvar, r_def, focus_rates(focus), pixscale=scale,
                             sky_sigma=c.sky_sigma, sky_level=c.sky,
                             read_sigma=c.read_noise / c.gain, saturation_level=c.saturation,
                             psf_fwhm_pix=c.psf_fwhm_pix, bright_star_xy=bright)
        img, iv, dq, tr = res.image, res.invvar, res.dq, res.truth
        nod = _nodata(size, r_def)
        if nod.any():
            img, iv, dq, tr = img.copy(), iv.copy(), dq.copy(), tr.copy()
            img[nod] = 0.0
            iv[nod] = 0.0
            dq[nod] = bit("nodata")
            tr[nod] = 0
        out["flux"][i], out["invvar"][i], out["dq"][i], out["truth"][i] = img, iv, dq, tr
        meta["band"].append(band)
        meta["focus"].append(focus)
        meta["psf_fwhm"].append(c.psf_fwhm)
        meta["pixscale"].append(scale)
        meta["sky_sigma"].append(c.sky_sigma)
        meta["saturation"].append(c.saturation)
        meta["n_bright"].append(len(bright))
    res_all: dict[str, np.ndarray] = dict(out)
    for k, v in meta.items():
        res_all[k] = np.asarray(v, dtype=object if k in ("band", "focus") else None)
    return res_all


def _unit_task(args: tuple) -> dict[str, np.ndarray]:
    return render_patch_chunk(*args)


def pixel_class_frequencies(truth: np.ndarray) -> dict[str, float]:
    """Fraction of pixels carrying each defect bit, and of clean pixels (``clean``).

    Parameters
    ----------
    truth : ndarray of uint16, any shape
    """
    t = np.asarray(truth)
    tot = max(t.size, 1)
    freq = {name: float(np.count_nonzero(t & bit(name))) / tot for name in DEFECT_CLASSES}
    freq["clean"] = float(np.count_nonzero(t == 0)) / tot
    return freq


def _to_dataset(res: dict[str, np.ndarray], start: int) -> Any:
    import xarray as xr

    size = res["flux"].shape[-1]
    data: dict[str, Any] = {k: (("patch", "y", "x"), res[k])
                            for k in ("flux", "invvar", "dq", "truth")}
    for k in ("band", "focus", "psf_fwhm", "pixscale", "sky_sigma", "saturation", "n_bright"):
        data[k] = (("patch",), res[k])
    n = res["flux"].shape[0]
    ds = xr.Dataset(data, coords={"patch": np.arange(start, start + n, dtype=np.int64),
                                  "y": np.arange(size, dtype=np.int32),
                                  "x": np.arange(size, dtype=np.int32)})
    for k, u in (("flux", "nanomaggy"), ("invvar", "nanomaggy^-2"), ("psf_fwhm", "arcsec"),
                 ("pixscale", "arcsec/pixel"), ("sky_sigma", "nanomaggy"),
                 ("saturation", "nanomaggy")):
        ds[k].attrs["units"] = u
    ds["truth"].attrs["bits"] = list(DEFECT_CLASSES)
    ds["dq"].attrs["bits"] = "tilecat.bits (bad, saturated, nodata only)"
    return ds


def make_defect_patches(cfg: dict[str, Any], out: str | Path, n: int, seed: int,
                        heldout: bool = False, workers: int = 1, size: int = 128,
                        progress: bool = False) -> Path:
    """Simulate ``n`` defect patches and write them to the Zarr store ``out`` (atomic).

    Parameters
    ----------
    cfg : dict
        Validated simulation settings.
    out : path
        Output store.
    n : int
        Number of patches.
    seed : int
        Data-set seed.
    heldout : bool
        Held-out observing conditions (:func:`tilecat.simulate.stamps.heldout_config`).
    workers : int
        Processes; the output does not depend on it.
    size : int
        Patch size, pixels (even, >= 32).

    Returns
    -------
    Path
    """
    from .stamps import heldout_config, write_dataset

    if n < 1:
        raise ConfigError(f"defect patches: number must be >= 1, got {n}")
    if size < 32 or size % 2:
        raise ConfigError(f"defect patches: size must be even and >= 32, got {size}")
    pcfg = heldout_config(cfg) if heldout else copy.deepcopy(cfg)
    plan_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDEF]))
    foci = [FOCI[i] for i in (np.arange(n) % len(FOCI))[plan_rng.permutation(n)]]
    tasks = [(pcfg, seed, u, foci[s:s + CHUNK], size)
             for u, s in enumerate(range(0, n, CHUNK))]
    counts = np.zeros(len(DEFECT_CLASSES) + 1)
    patch_has = np.zeros(len(DEFECT_CLASSES))
    total = 0

    def results():
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as ex:
                yield from ex.map(_unit_task, tasks)
        else:
            yield from map(_unit_task, tasks)

    def pieces():
        nonlocal total
        done = 0
        for u, res in enumerate(results()):
            t = res["truth"]
            for k, name in enumerate(DEFECT_CLASSES):
                counts[k] += np.count_nonzero(t & bit(name))
                patch_has[k] += np.count_nonzero((t & bit(name)).any(axis=(1, 2)))
            counts[-1] += np.count_nonzero(t == 0)
            total += t.size
            done += t.shape[0]
            if progress:
                print(f"  {done}/{n} patches", flush=True)
            yield _to_dataset(res, u * CHUNK)
        # class frequencies are known once every piece is made; write_dataset reads
        # ``attrs`` after the last piece
        attrs["P_T"] = {name: round(float(counts[k]) / max(total, 1), 8)
                        for k, name in enumerate(DEFECT_CLASSES)}
        attrs["P_T"]["clean"] = round(float(counts[-1]) / max(total, 1), 8)
        attrs["patch_fraction_with_class"] = {
            name: round(float(patch_has[k]) / n, 6) for k, name in enumerate(DEFECT_CLASSES)}
        attrs["focus_frequencies"] = {f: round(foci.count(f) / n, 6) for f in FOCI}

    attrs: dict[str, Any] = {
        "title": "tilecat simulated defect patches",
        "dataset": "defect_patches",
        "bands": list(pcfg["survey"]["bands"]),
        "pixel_scale": float(pcfg["survey"]["pixel_scale"]),
        "patch_size": size,
        "seed": int(seed),
        "heldout": bool(heldout),
        "simver": SIMVER,
        "defects_version": DEFECTS_VERSION,
        "defect_classes": list(DEFECT_CLASSES),
        "recipe": {
            "foci": list(FOCI),
            "focus": "uniform over foci; each focus boosts one defect family",
            "base_rates": BASE_RATES,
            "boosts": _BOOST,
            "known_bad_fraction": 0.7,
            "nodata_prob": _NODATA_PROB,
            "psf_fwhm_ranges": {b: pcfg["conditions"]["psf_fwhm"][b]
                                for b in pcfg["survey"]["bands"]},
            "depth_ranges": {b: pcfg["conditions"]["depth"][b] for b in pcfg["survey"]["bands"]},
            "unit": CHUNK,
        },
    }

    path = write_dataset(pieces(), out, attrs, {
        "flux": (16, size, size), "invvar": (16, size, size), "dq": (16, size, size),
        "truth": (16, size, size)})
    return path

