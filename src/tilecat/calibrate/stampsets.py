"""Cached labelled stamp sets of the calibration and prior benchmarks.

``benchmarks/calibration.py`` and ``benchmarks/priors.py`` run the trained models over
held-out galaxy stamps simulated with ``tilecat simulate-stamps`` and cache them. A
model applies to the population it was trained on (the morphology model to the
morphology sample of ``config/stamps/morphology.yaml``, the photo-z model to the demo
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
from pathlib import Path

__all__ = ["sim_config_tag", "stamp_set_path", "ensure_stamp_set"]


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
