"""Simulate a whole survey: many tiles (optionally in a process pool), manifest, survey.yaml.

``out/tiles.tsv`` lists ``tile index ra dec seed`` (readable by
:func:`tilecat.tiles.read_manifest`); ``out/survey.yaml`` holds a ``survey:`` mapping
usable as the ``survey`` section of a tilecat config (file patterns relative to the
working directory, i.e. built from ``out`` as given) and a ``simulation:`` mapping with
the full settings used.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_path
from ..errors import ConfigError
from .tile import render_tile, tile_center, tile_id, tile_index, tile_seed
from .writer import write_tile

__all__ = ["simulate_survey", "simulate_one", "write_manifest", "write_survey_yaml",
           "survey_section"]


def survey_section(cfg: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """The ``survey:`` mapping (tilecat config form) of a simulated survey in ``out``."""
    s = cfg["survey"]
    ext = ".fits.fz" if s["compress"] else ".fits"
    pattern = f"{Path(out).as_posix()}/{{tile}}/{{tile}}-{{band}}{ext}"
    return {
        "name": s["name"],
        "bands": list(s["bands"]),
        "pixel_scale": float(s["pixel_scale"]),
        "flux_unit": "nanomaggy",
        "zeropoints": {b: 22.5 for b in s["bands"]},
        "files": {
            "image": {"pattern": pattern, "hdu": "IMAGE"},
            "weight": {"pattern": pattern, "hdu": "INVVAR", "kind": "invvar"},
            "dq": {"pattern": pattern, "hdu": "DQ", "kind": "bits"},
        },
    }


def write_manifest(cfg: dict[str, Any], out: str | Path) -> Path:
    """Write ``out/tiles.tsv`` for tiles 0 .. cfg['tiles'] - 1 (atomic)."""
    path = Path(out) / "tiles.tsv"
    lines = ["tile\tindex\tra\tdec\tseed"]
    for k in range(cfg["tiles"]):
        ra, dec = tile_center(cfg, k)
        lines.append(f"{tile_id(cfg, k)}\t{k}\t{ra:.8f}\t{dec:.8f}\t{tile_seed(cfg['seed'], k)}")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def write_survey_yaml(cfg: dict[str, Any], out: str | Path) -> Path:
    """Write ``out/survey.yaml`` (survey section + full simulation settings; atomic)."""
    path = Path(out) / "survey.yaml"
    doc = {"survey": survey_section(cfg, out), "simulation": cfg}
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None))
    return path


def simulate_one(cfg: dict[str, Any], k: int, out: str | Path) -> str:
    """Render and write tile ``k``; return its id."""
    res = render_tile(cfg, k)
    write_tile(res, out, cfg)
    return res.tile


def simulate_survey(cfg: dict[str, Any], out: str | Path, *, only: str | None = None,
                    workers: int = 1, progress: bool = False) -> list[str]:
    """Simulate the survey ``cfg`` into directory ``out``.

    Parameters
    ----------
    cfg : dict
        Validated simulation settings.
    out : str or Path
        Output directory (created).
    only : str, optional
        Regenerate only this tile id (must be one of the survey's tiles).
    workers : int
        Processes (tiles are independent, so the output does not depend on it).
    progress : bool
        Print one line per finished tile.

    Returns
    -------
    list of str
        The tile ids written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if only is not None:
        try:
            k = tile_index(cfg, only)
        except ValueError as exc:
            raise ConfigError(f"--only {only}: {exc}") from exc
        if k >= cfg["tiles"]:
            raise ConfigError(f"--only {only}: the survey has {cfg['tiles']} tiles "
                              f"({tile_id(cfg, 0)} .. {tile_id(cfg, cfg['tiles'] - 1)})")
        indices = [k]
    else:
        indices = list(range(cfg["tiles"]))
    write_survey_yaml(cfg, out)
    write_manifest(cfg, out)
    done = []
    if workers > 1 and len(indices) > 1:
        # spawn, not fork: a forked child of a process that already ran GalSim's OpenMP
        # code (libgomp) can hang forever
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(simulate_one, cfg, k, out) for k in indices]
            for f in futures:
                done.append(f.result())
                if progress:
                    print(f"simulated {done[-1]}", flush=True)
    else:
        for k in indices:
            done.append(simulate_one(cfg, k, out))
            if progress:
                print(f"simulated {done[-1]}", flush=True)
    return done
