"""Simulated training sets: where they live, and simulating the missing ones.

A set is one ``tilecat simulate-stamps`` call (:class:`~tilecat.train.recipe.SetSpec`)
written as ``<work>/<name>.zarr``; sets of a scaled-down smoke run go to
``<work>/scale-<F>/<name>.zarr`` so they never mix with full-size ones. Stores are
written atomically by the simulator; an existing store is reused when its size,
seed, held-out flag, population and simulator version match the spec and, if this
module simulated it, the fingerprint recorded beside it (``<name>.set.json``: the spec
with its simulation config's sha256) is still the spec's; otherwise it is simulated
again. (Under Snakemake, an edited simulation config reruns the set's job.)
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .recipe import SetSpec

__all__ = ["scaled_root", "set_path", "fingerprint_path", "store_matches", "ensure_set",
           "simulate_args"]


def _log(msg: str) -> None:
    print(f"[train] {msg}", file=sys.stderr, flush=True)


def scaled_root(work_dir: str | Path, scale: float) -> Path:
    """Directory of the sets (and intermediate stages) of a run at ``scale``."""
    work = Path(work_dir)
    return work if scale >= 1.0 else work / f"scale-{scale:g}"


def set_path(work_dir: str | Path, name: str, scale: float = 1.0) -> Path:
    """The store of set ``name``: ``<work>[/scale-F]/<name>.zarr``."""
    return scaled_root(work_dir, scale) / f"{name}.zarr"


def fingerprint_path(store: str | Path) -> Path:
    """The fingerprint file beside a set's store: ``<name>.set.json``."""
    store = Path(store)
    return store.with_name(store.name.removesuffix(".zarr") + ".set.json")


def _population(spec: SetSpec) -> str | None:
    if spec.kind != "galaxy":
        return None
    from ..simulate.config import load_sim_config

    return str(load_sim_config(str(spec.config) if spec.config else None)["population"]["kind"])


def store_matches(spec: SetSpec, path: str | Path) -> bool:
    """Whether the store at ``path`` holds ``spec``'s set (size, seed, held-out flag,
    simulator version, for galaxy stamps the population, and the fingerprint file when
    there is one)."""
    import json

    import xarray as xr

    from ..simulate.config import SIMVER

    path = Path(path)
    if not (path / "zarr.json").is_file():
        return False
    fp = fingerprint_path(path)
    if fp.is_file():
        try:
            if json.loads(fp.read_text()) != spec.fingerprint():
                return False
        except ValueError:
            return False
    try:
        with warnings.catch_warnings():  # Snakemake's .snakemake_timestamp in the store
            warnings.simplefilter("ignore")
            ds = xr.open_zarr(str(path), consolidated=False)
    except (OSError, ValueError, KeyError):
        return False
    dim = "object" if spec.kind == "galaxy" else "patch"
    attrs: dict[str, Any] = dict(ds.attrs)
    if (ds.sizes.get(dim) != spec.n or attrs.get("seed") != spec.seed
            or bool(attrs.get("heldout")) != spec.heldout or attrs.get("simver") != SIMVER):
        return False
    pop = _population(spec)
    return pop is None or (attrs.get("recipe") or {}).get("population") == pop


def simulate_args(spec: SetSpec) -> list[str]:
    """The ``tilecat simulate-stamps`` arguments of ``spec`` (without ``--out``/``--workers``)."""
    args = ["--kind", spec.kind, "-n", str(spec.n), "--seed", str(spec.seed)]
    if spec.heldout:
        args.append("--heldout")
    if spec.config is not None:
        args += ["--config", str(spec.config)]
    return args


def ensure_set(spec: SetSpec, path: str | Path, workers: int = 1,
               log: Callable[[str], None] = _log) -> Path:
    """Simulate ``spec`` into ``path`` unless a matching store is there.

    Runs the simulator's own entry point (:func:`tilecat.simulate.cli.simulate_stamps_main`,
    as ``tilecat simulate-stamps`` does), which writes the store atomically.

    Returns
    -------
    Path
        The store.
    """
    import json

    from ..atomic import atomic_path
    from ..simulate.cli import simulate_stamps_main

    path = Path(path)
    if store_matches(spec, path):
        return path
    if path.exists():
        log(f"{path} does not match the recipe's set {spec.name} {spec.to_json()}: "
            "simulating it again")
    log(f"simulating set {spec.name}: tilecat simulate-stamps {' '.join(simulate_args(spec))} "
        f"--out {path}")
    args = argparse.Namespace(out=str(path), kind=spec.kind,
                              config=None if spec.config is None else str(spec.config),
                              number=spec.n, seed=spec.seed, heldout=spec.heldout,
                              workers=int(workers))
    fp = fingerprint_path(path)
    fp.unlink(missing_ok=True)
    simulate_stamps_main(args)
    with atomic_path(fp) as tmp:
        Path(tmp).write_text(json.dumps(spec.fingerprint(), indent=2, sort_keys=True) + "\n")
    return path
