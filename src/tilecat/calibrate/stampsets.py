"""Cached labelled stamp sets of the calibration and prior benchmarks.

``benchmarks/calibration.py`` and ``benchmarks/priors.py`` run the trained models over
held-out galaxy stamps simulated with ``tilecat simulate-stamps`` and cache them. A
model applies to the population it was trained on (the morphology model to the
morphology sample of ``config/stamps/morphology-bars.yaml``, the photo-z model to the demo
survey's population), so the cache name encodes the simulation settings: a set made
with other settings is never reused by mistake.

Names: ``<role>-<tag>-s<seed>-n<n>[-train].zarr`` with ``tag`` from :func:`sim_config_tag`
(the YAML's stem, or ``demo``, plus the first 8 hex digits of the SHA-256 of the *merged*
settings, so an edit of the YAML or of the simulator defaults changes the name) and
``-train`` for a set in training (not held-out) conditions.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["sim_config_tag", "stamp_set_path", "ensure_stamp_set", "cached_stamp_set",
           "shipped_models_with_stamps"]


def sim_config_tag(config: str | Path | None) -> str:
    """Short name of simulation settings: ``<stem>-<sha8>`` (``demo-<sha8>`` for None).

    Parameters
    ----------
    config : path or None
        Simulation YAML (``tilecat simulate-stamps --config``); None: the demo survey.

    Raises
    ------
    ConfigError
        The YAML does not load or validate.
    """
    from ..simulate.config import load_sim_config

    merged = load_sim_config(config)
    digest = hashlib.sha256(json.dumps(merged, sort_keys=True, default=str).encode())
    stem = "demo" if config is None else Path(config).stem
    return f"{stem}-{digest.hexdigest()[:8]}"


def stamp_set_path(cache: str | Path, role: str, config: str | Path | None, seed: int,
                   n: int, *, heldout: bool = True) -> Path:
    """Cache path of a stamp set (see the module docstring for the name)."""
    suffix = "" if heldout else "-train"
    return Path(cache) / f"{role}-{sim_config_tag(config)}-s{int(seed)}-n{int(n)}{suffix}.zarr"


def ensure_stamp_set(path: str | Path, config: str | Path | None, n: int, seed: int, *,
                     heldout: bool = True, workers: int = 2, nice: int = 10) -> Path:
    """Simulate the galaxy stamp set ``path`` unless it exists (atomic: the CLI writes it).

    Parameters
    ----------
    path : path
        Output Zarr store.
    config : path or None
        Simulation YAML (None: the demo survey).
    n, seed : int
        Number of stamps and seed.
    heldout : bool
        Held-out observing conditions (``--heldout``).
    workers : int
        Simulation processes.
    nice : int
        Niceness increment of the simulation (the benchmarks share the machine).
    """
    path = Path(path)
    if path.exists():
        return path
    cmd = [sys.executable, "-m", "tilecat.cli", "simulate-stamps", "--kind", "galaxy",
           "-n", str(int(n)), "--seed", str(int(seed)), "--workers", str(int(workers)),
           "--out", str(path)]
    if heldout:
        cmd.append("--heldout")
    if config is not None:
        cmd += ["--config", str(config)]
    print(f"simulating {n} {'held-out' if heldout else 'training-condition'} galaxy stamps "
          f"({'demo survey' if config is None else config}) -> {path}", flush=True)
    pre = (lambda: os.nice(int(nice))) if nice else None
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, preexec_fn=pre)
    return path


def cached_stamp_set(cache: str | Path, role: str, config: str | Path | None, seed: int,
                     n: int, *, heldout: bool = True, workers: int = 2) -> Path:
    """The stamp set :func:`stamp_set_path` names, simulated by :func:`ensure_stamp_set`
    unless it is already in ``cache``.

    Parameters
    ----------
    cache : path
        Cache directory.
    role : str
        Name prefix (e.g. ``calib-cal``, ``calib-survey``).
    config : path or None
        Simulation YAML (None: the demo survey).
    seed, n : int
        Seed and number of stamps.
    heldout : bool
        Held-out observing conditions.
    workers : int
        Simulation processes.

    Returns
    -------
    Path
        The Zarr store.
    """
    path = stamp_set_path(cache, role, config, seed, n, heldout=heldout)
    return ensure_stamp_set(path, config, n, seed, heldout=heldout, workers=workers)


def shipped_models_with_stamps(
    cache: str | Path, n_cal: int, seed: int, configs: Mapping[str, str | Path | None], *,
    workers: int = 2, models: tuple[str, ...] = ("morphology", "photoz"),
    log: Callable[[str], Any] = print,
) -> Iterator[tuple[str, Path, dict[str, Any], Path]]:
    """Each shipped model with its held-out labelled stamp set (role ``calib-cal``).

    A model that is not shipped (or whose card does not load) is logged and skipped.

    Parameters
    ----------
    cache : path
        Cache directory of the stamp sets.
    n_cal, seed : int
        Number of stamps and seed of the labelled set.
    configs : mapping
        Model -> simulation YAML of its stamp sets (missing or None: the demo survey).
    workers : int
        Simulation processes.
    models : tuple of str
        Model names, in the order yielded.
    log : callable
        Receives the "not shipped" messages.

    Yields
    ------
    tuple
        ``(model, model directory, card, labelled stamp set)``; the set is simulated
        (unless cached) before the tuple is yielded.
    """
    from ..models import load_card, model_dir

    for model in models:
        try:
            mdir = model_dir(model)
            card = load_card(mdir)
        except Exception:
            log(f"\n--- trained {model} model: not shipped yet, skipped")
            continue
        stamps = cached_stamp_set(cache, "calib-cal", configs.get(model), seed, n_cal,
                                  workers=workers)
        yield model, mdir, card, stamps
