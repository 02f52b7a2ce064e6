"""Simulation settings: defaults (the demo survey), loading and validation.

A simulation YAML overrides any subset of :data:`DEFAULTS`; unknown keys, unknown
bands, impossible values and missing catalog files raise
:class:`tilecat.errors.ConfigError` naming the key. Ranges are ``[low, high]``
lists; per-band settings are mappings ``band -> value`` (the defaults cover every
LSST band, so a survey only names its bands).

A few keys are *optional* (:data:`OPTIONAL`): accepted and validated when a YAML gives
them, but absent from :data:`DEFAULTS`, so that the merged settings of YAMLs that do not
name them are what they were before the key existed (the SHA-256 of the merged settings
names cached stamp sets, :func:`tilecat.calibrate.stampsets.sim_config_tag`, and model
cards record those names). Readers use ``cfg[...].get(key, OPTIONAL[...])``.

Example (a 2048 x 2048 LSST-like survey)::

    survey: {name: deep, bands: [u, g, r, i, z, y], pixel_scale: 0.2, tile_size: 2048}
    population: {kind: parametric, mag_limit: 25.5}
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..config import read_yaml
from ..errors import ConfigError
from .photometry import LSST_BANDS
from .population import BAR_MODELS

__all__ = ["DEFAULTS", "OPTIONAL", "SIMVER", "load_sim_config", "validate_sim_config",
           "tile_shape"]

#: Simulator version, written to every FITS header (SIMVER) and survey.yaml.
SIMVER = "1.1"  # 1.1: dead pixels read -sky + read noise; physical persistence ghosts

_KINDS = ("elliptical", "lenticular", "spiral", "edgeon", "irregular", "merger")

#: The demo survey (``tilecat simulate`` without ``--config``).
DEFAULTS: dict[str, Any] = {
    "seed": 1,
    "tiles": 4,
    "survey": {
        "name": "demo",
        "bands": ["g", "r", "i", "z"],
        "pixel_scale": 0.262,  # arcsec / pixel
        "tile_size": 1024,  # int or [ny, nx]
        "zeropoint": 22.5,  # AB mag of 1 nanomaggy (fixed by the on-disk contract)
        "compress": True,  # .fits.fz (RICE) or plain .fits
        "ra0": 150.0,  # deg, centre of tile 0
        "dec0": 2.2,  # deg
        "grid_columns": 8,  # tiles per row of the tile grid (tile k at column k % n)
        "tile_prefix": "sim",
    },
    "population": {
        "kind": "empirical",  # empirical | parametric
        "catalog": None,  # empirical table (TSV: zs u g r i z ...); None = packaged SDSS MGS
        "galaxy_density": 18.0,  # galaxies per arcmin^2 brighter than mag_limit
        "mag_limit": 24.5,  # faint limit, AB mag in LSST r
        "mag_bright": 13.5,  # bright limit (parametric), AB mag in r
        "dim_to_counts": True,  # empirical: dim real galaxies to follow number counts
        "count_slope": 0.33,  # dlog10 N / dm of galaxy counts (empirical dimming)
        "z_max": 1.5,  # parametric: highest redshift
        "schechter": {"m_star": -21.0, "alpha": -1.2, "evolution": -1.0},  # M* - evolution*z
        "morphology": {
            "elliptical": 0.15,
            "lenticular": 0.10,
            "spiral": 0.35,
            "edgeon": 0.12,
            "irregular": 0.18,
            "merger": 0.10,
        },
        "bar_fraction": 0.35,  # of spirals
        "strong_bar_fraction": 0.5,  # of barred spirals
        "clustering": 0.2,  # fraction of galaxies placed next to another one (blends)
        "size_scatter_dex": 0.18,
    },
    "stars": {
        "density": 1.5,  # stars per arcmin^2 in mag_range
        "mag_range": [15.5, 24.5],  # AB mag in r
        "count_slope": 0.15,  # dlog10 N / dm
        "bright_per_tile": 1.5,  # extra Poisson mean of bright (mostly saturated) stars
        "bright_mag_range": [11.0, 15.5],
    },
    "conditions": {
        "psf_fwhm": {  # arcsec; range per band
            "u": [1.1, 1.8], "g": [1.05, 1.7], "r": [1.0, 1.6],
            "i": [0.95, 1.5], "z": [0.9, 1.5], "y": [0.9, 1.5],
        },
        "psf_beta": [2.5, 4.5],  # Moffat beta range
        "depth": {  # 5-sigma point-source AB depth range per band
            "u": [22.8, 23.4], "g": [24.0, 24.6], "r": [23.6, 24.2],
            "i": [23.1, 23.7], "z": [22.6, 23.2], "y": [21.6, 22.2],
        },
        "sky_brightness": {  # AB mag / arcsec^2 range per band
            "u": [22.6, 23.2], "g": [21.9, 22.5], "r": [20.9, 21.5],
            "i": [20.2, 20.8], "z": [19.3, 19.9], "y": [18.3, 18.9],
        },
        "read_noise": [5.0, 9.0],  # electrons per pixel
        "saturation": {"u": 40.0, "g": 40.0, "r": 40.0, "i": 40.0, "z": 40.0, "y": 40.0},
        "nodata_strip_prob": 0.2,  # probability per tile of a no-data strip (chip gap)
    },
    "render": {
        "folding_threshold": 0.005,
        "maxk_threshold": 0.001,
        "max_stamp": 256,  # pixels, galaxy stamps
        "max_star_stamp": 512,
    },
    "defects": {},  # passed to simulate.defects.DefectRates.from_dict
    "stamps": {  # training stamps only (tilecat simulate-stamps); tiles ignore it
        "central_mag_limit": None,  # r-band limit of the central galaxy (None: mag_limit)
        "central_r50_min": None,  # arcsec: smallest central galaxy (bulge/disk flux-weighted)
        "star_mag_range": None,  # r-band range of central stars (None: stars.mag_range)
        # held-out conditions: None = the default shift (worse seeing, shallower), or a
        # mapping with any of psf_fwhm / depth (per band ranges) and psf_beta (range)
        "heldout": None,
    },
}

#: Optional keys (dotted path -> the value used when absent); see the module docstring.
#: ``population.bar_model``: ``faint`` (the bars of simulator 1.1: 3-15 % of the light,
#: arms unrelated to the bar; every training set made before the key existed) or
#: ``visible`` (bars with 7-30 % of the light, spiral arms leaving the bar ends, some
#: barred lenticulars; :mod:`tilecat.simulate.population`).
#: ``stamps.plain_fraction``: the fraction of central disk galaxies (lenticular, spiral,
#: edge-on, irregular stamps) drawn as plain disks: one Sérsic disk, no bulge, arms, bar
#: or knots (:func:`tilecat.simulate.population.make_plain`); 0 keeps every feature.
#: ``conditions.psf_coherence``: the fraction of condition draws in which the bands share
#: one seeing and one PSF shape: one quantile u gives every band's FWHM (``lo + u (hi -
#: lo)`` of its range) and one Moffat beta serves all bands, as in PSF-homogenised coadds
#: or single-night multi-band imaging; otherwise (and at 0) each band draws its own.
OPTIONAL: dict[tuple[str, ...], Any] = {("population", "bar_model"): "faint",
                                        ("stamps", "plain_fraction"): 0.0,
                                        ("conditions", "psf_coherence"): 0.0}

_BAND_MAPS = {("conditions", k) for k in ("psf_fwhm", "depth", "sky_brightness", "saturation")}
_FREE_MAPS = {("defects",), ("population", "morphology"), ("stamps", "heldout")}


def _merge(base: Any, over: Any, path: tuple[str, ...]) -> Any:
    """Deep-merge ``over`` onto ``base``; unknown keys raise ConfigError."""
    if not isinstance(base, dict):
        return over
    if not isinstance(over, dict):
        raise ConfigError(f"simulation config: key '{'.'.join(path)}' must be a mapping")
    out = copy.deepcopy(base)
    for key, val in over.items():
        key = str(key)
        if path in _BAND_MAPS:
            if key not in LSST_BANDS:
                raise ConfigError(
                    f"simulation config: key '{'.'.join(path + (key,))}': unknown band "
                    f"{key!r}; known bands (LSST bandpasses): {list(LSST_BANDS)}"
                )
            out[key] = val
        elif path in _FREE_MAPS:
            out[key] = val
        elif key not in base and path + (key,) in OPTIONAL:
            out[key] = val
        elif key not in base:
            known = ", ".join(sorted(set(base) | {k[-1] for k in OPTIONAL if k[:-1] == path}))
            raise ConfigError(
                f"simulation config: unknown key '{'.'.join(path + (key,))}' (known: {known})"
            )
        else:
            out[key] = _merge(base[key], val, path + (key,))
    return out


def _range(cfg: dict, dotted: str, lo_min: float | None = 0.0, strict: bool = True) -> None:
    keys = dotted.split(".")
    val: Any = cfg
    for k in keys:
        val = val[k]
    ok = (
        isinstance(val, (list, tuple))
        and len(val) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in val)
        and val[0] <= val[1]
    )
    if ok and lo_min is not None:
        ok = val[0] > lo_min if strict else val[0] >= lo_min
    if not ok:
        bound = "" if lo_min is None else f" with low {'>' if strict else '>='} {lo_min}"
        raise ConfigError(
            f"simulation config: key '{dotted}' must be a range [low, high]{bound}, got {val!r}"
        )


def _optional_fraction(cfg: dict, path: tuple[str, str]) -> None:
    """Check an optional key of :data:`OPTIONAL` that holds a fraction in [0, 1]."""
    val = cfg[path[0]].get(path[1], OPTIONAL[path])
    if not isinstance(val, (int, float)) or isinstance(val, bool) or not 0 <= val <= 1:
        raise ConfigError(f"simulation config: key '{'.'.join(path)}' must be a fraction "
                          f"in [0, 1], got {val!r}")


def _positive(cfg: dict, dotted: str, allow_zero: bool = False) -> None:
    val: Any = cfg
    for k in dotted.split("."):
        val = val[k]
    if (
        not isinstance(val, (int, float))
        or isinstance(val, bool)
        or not (val >= 0 if allow_zero else val > 0)
    ):
        what = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"simulation config: key '{dotted}' must be a {what} number, "
                          f"got {val!r}")


def tile_shape(cfg: dict[str, Any]) -> tuple[int, int]:
    """(ny, nx) of a tile in pixels."""
    size = cfg["survey"]["tile_size"]
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def validate_sim_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check values of a merged simulation config; return it.

    Raises
    ------
    ConfigError
        Unknown band, non-positive or inverted ranges, bad population kind or bar
        model, missing catalog file, bad tile size.
    """
    s = cfg["survey"]
    bands = s["bands"]
    if not isinstance(bands, list) or not bands or len(set(bands)) != len(bands):
        raise ConfigError("simulation config: key 'survey.bands' must be a non-empty list of "
                          f"distinct band names, got {bands!r}")
    for b in bands:
        if b not in LSST_BANDS:
            raise ConfigError(
                f"simulation config: key 'survey.bands': unknown band {b!r}; the simulator "
                f"knows the LSST bandpasses {list(LSST_BANDS)}"
            )
    _positive(cfg, "survey.pixel_scale")
    size = s["tile_size"]
    sizes = [size] if isinstance(size, int) else size
    if (
        not isinstance(sizes, list)
        or len(sizes) not in (1, 2)
        or not all(isinstance(v, int) and not isinstance(v, bool) and 32 <= v <= 16384
                   for v in sizes)
    ):
        raise ConfigError("simulation config: key 'survey.tile_size' must be an integer "
                          f"32..16384 or [ny, nx], got {size!r}")
    if s["zeropoint"] != 22.5:
        raise ConfigError("simulation config: key 'survey.zeropoint' must be 22.5 "
                          "(images are in nanomaggies)")
    for k in ("grid_columns",):
        if not isinstance(s[k], int) or s[k] < 1:
            raise ConfigError(f"simulation config: key 'survey.{k}' must be a positive integer")
    if not isinstance(cfg["seed"], int) or cfg["seed"] < 0:
        raise ConfigError(f"simulation config: key 'seed' must be a non-negative integer, "
                          f"got {cfg['seed']!r}")
    if not isinstance(cfg["tiles"], int) or cfg["tiles"] < 1:
        raise ConfigError(f"simulation config: key 'tiles' must be a positive integer, "
                          f"got {cfg['tiles']!r}")

    p = cfg["population"]
    if p["kind"] not in ("empirical", "parametric"):
        raise ConfigError("simulation config: key 'population.kind' must be 'empirical' or "
                          f"'parametric', got {p['kind']!r}")
    if p["catalog"] is not None and not Path(p["catalog"]).is_file():
        raise ConfigError(f"simulation config: key 'population.catalog': file "
                          f"{p['catalog']} does not exist")
    for k in ("galaxy_density", "z_max", "count_slope"):
        _positive(cfg, f"population.{k}")
    for k in ("clustering", "bar_fraction", "strong_bar_fraction"):
        if not 0 <= p[k] <= 1:
            raise ConfigError(f"simulation config: key 'population.{k}' must be in [0, 1]")
    _positive(cfg, "population.size_scatter_dex", allow_zero=True)
    if not p["mag_bright"] < p["mag_limit"]:
        raise ConfigError("simulation config: 'population.mag_bright' must be < 'mag_limit'")
    for k, v in p["morphology"].items():
        if k not in _KINDS:
            raise ConfigError(f"simulation config: key 'population.morphology.{k}': unknown "
                              f"kind; known: {list(_KINDS)}")
        if not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"simulation config: key 'population.morphology.{k}' must be >= 0")
    if sum(p["morphology"].values()) <= 0:
        raise ConfigError("simulation config: 'population.morphology' fractions sum to 0")
    bar_model = p.get("bar_model", OPTIONAL[("population", "bar_model")])
    if bar_model not in BAR_MODELS:
        raise ConfigError(f"simulation config: key 'population.bar_model' must be one of "
                          f"{list(BAR_MODELS)}, got {bar_model!r}")
    unknown = set(p["schechter"]) - {"m_star", "alpha", "evolution"}
    if unknown:
        raise ConfigError(f"simulation config: unknown key(s) in 'population.schechter': "
                          f"{sorted(unknown)}")

    _positive(cfg, "stars.density", allow_zero=True)
    _positive(cfg, "stars.bright_per_tile", allow_zero=True)
    _range(cfg, "stars.mag_range", lo_min=None)
    _range(cfg, "stars.bright_mag_range", lo_min=None)

    c = cfg["conditions"]
    for b in bands:
        _range(cfg, f"conditions.psf_fwhm.{b}")
        _range(cfg, f"conditions.depth.{b}", lo_min=None)
        _range(cfg, f"conditions.sky_brightness.{b}", lo_min=None)
        _positive(cfg, f"conditions.saturation.{b}")
    _range(cfg, "conditions.psf_beta", lo_min=1.1, strict=False)
    _optional_fraction(cfg, ("conditions", "psf_coherence"))
    _range(cfg, "conditions.read_noise", lo_min=0.0, strict=False)
    if not 0 <= c["nodata_strip_prob"] <= 1:
        raise ConfigError("simulation config: key 'conditions.nodata_strip_prob' must be in [0, 1]")
    for k in ("folding_threshold", "maxk_threshold", "max_stamp", "max_star_stamp"):
        _positive(cfg, f"render.{k}")
    _validate_stamps(cfg)
    if not isinstance(cfg["defects"], dict):
        raise ConfigError("simulation config: key 'defects' must be a mapping")
    try:
        from .defects import DefectRates
    except ImportError:  # pragma: no cover - defects.py is written by another module owner
        DefectRates = None
    if DefectRates is not None:
        try:
            DefectRates.from_dict(cfg["defects"])
        except ConfigError as exc:
            raise ConfigError(f"simulation config: key 'defects': {exc}") from exc
    return cfg


def _validate_stamps(cfg: dict[str, Any]) -> None:
    """Check the ``stamps`` section (training-stamp selection and held-out conditions)."""
    st = cfg["stamps"]
    lim = st["central_mag_limit"]
    if lim is not None and (not isinstance(lim, (int, float)) or isinstance(lim, bool)
                            or not cfg["population"]["mag_bright"] < lim):
        raise ConfigError("simulation config: key 'stamps.central_mag_limit' must be null or "
                          f"a magnitude fainter than population.mag_bright, got {lim!r}")
    r50 = st["central_r50_min"]
    if r50 is not None and (not isinstance(r50, (int, float)) or isinstance(r50, bool)
                            or r50 < 0):
        raise ConfigError("simulation config: key 'stamps.central_r50_min' must be null or a "
                          f"non-negative size in arcsec, got {r50!r}")
    if st["star_mag_range"] is not None:
        _range(cfg, "stamps.star_mag_range", lo_min=None)
    _optional_fraction(cfg, ("stamps", "plain_fraction"))
    held = st["heldout"]
    if held is None:
        return
    if not isinstance(held, dict):
        raise ConfigError("simulation config: key 'stamps.heldout' must be null or a mapping")
    for key, val in held.items():
        if key == "psf_beta":
            _range(cfg, "stamps.heldout.psf_beta", lo_min=1.1, strict=False)
        elif key in ("psf_fwhm", "depth"):
            if not isinstance(val, dict):
                raise ConfigError(f"simulation config: key 'stamps.heldout.{key}' must map "
                                  "bands to ranges")
            for b in val:
                if b not in LSST_BANDS:
                    raise ConfigError(f"simulation config: key 'stamps.heldout.{key}.{b}': "
                                      f"unknown band; known: {list(LSST_BANDS)}")
                _range(cfg, f"stamps.heldout.{key}.{b}",
                       lo_min=0.0 if key == "psf_fwhm" else None)
        else:
            raise ConfigError(f"simulation config: unknown key 'stamps.heldout.{key}' "
                              "(known: depth, psf_beta, psf_fwhm)")


def load_sim_config(
    path: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge a simulation YAML (and ``overrides``) onto :data:`DEFAULTS` and validate.

    Parameters
    ----------
    path : str, Path or None
        Simulation YAML; None means the demo survey's settings.
    overrides : dict, optional
        Nested mapping merged last (e.g. ``{"tiles": 2, "seed": 7}``).

    Returns
    -------
    dict
        The full, validated settings.
    """
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        user = read_yaml(path, "simulation config file")
        if user is None:
            user = {}
        if not isinstance(user, dict):
            raise ConfigError(f"simulation config file {path}: top level must be a mapping")
        # a tilecat config with a 'simulation:' section is accepted too
        if "simulation" in user and isinstance(user["simulation"], dict):
            user = user["simulation"]
        cfg = _merge(cfg, user, ())
    if overrides:
        cfg = _merge(cfg, overrides, ())
    return validate_sim_config(cfg)
