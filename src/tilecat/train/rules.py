"""Helpers of ``rules/train.smk``: the recipe's sets and models as Snakemake inputs/params.

The rules stay thin: one ``tilecat simulate-stamps`` job per set, one ``tilecat train``
job per model; what each needs is read from the recipe here.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .recipe import Recipe
from .sets import set_path, simulate_args

__all__ = ["model_set_paths", "simulate_command_args", "set_config_inputs",
           "model_resource", "DEFAULT_RESOURCES"]

#: Resources of a training job whose recipe gives none (MB, minutes, torch threads).
DEFAULT_RESOURCES = {"mem_mb": 4000, "runtime": 60, "threads": 1}


def model_set_paths(recipe: Recipe, model: str, work_dir: str | Path) -> list[str]:
    """The full-size set stores ``model``'s stages read (``<work>/<name>.zarr``)."""
    return [str(set_path(work_dir, s)) for s in recipe.model(model).set_names()]


def simulate_command_args(recipe: Recipe, name: str) -> str:
    """``tilecat simulate-stamps`` arguments of set ``name`` (shell-quoted), without
    ``--out`` and ``--workers``."""
    return " ".join(shlex.quote(a) for a in simulate_args(recipe.sets[name]))


def set_config_inputs(recipe: Recipe, name: str) -> list[str]:
    """The simulation YAML of set ``name`` as a job input (empty without one)."""
    cfg = recipe.sets[name].config
    return [] if cfg is None else [str(cfg)]


def model_resource(recipe: Recipe, model: str, key: str) -> int:
    """Resource ``key`` (``mem_mb``, ``runtime`` in minutes, ``threads``) of ``model``'s
    training job."""
    return int(recipe.model(model).resources.get(key, DEFAULT_RESOURCES[key]))
