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


def model_set_paths(recipe: Recipe, model: str, work_dir: str | Path,
                    out_dir: str | Path) -> list[str]:
    """The full-size set stores ``model``'s training run will read (``<work>/<name>.zarr``).

    Only the sets of the stages that will train (:func:`tilecat.train.run.training_plan`
    at the recipe's thread count): a stage taken from the shipped weights or reused from
    ``<work>/stages/`` needs none, so the workflow does not simulate them.
    """
    from .run import training_plan

    plan = training_plan(model, recipe, work_dir, out_dir,
                         threads=model_resource(recipe, model, "threads"))
    return [str(set_path(work_dir, s)) for s in plan.set_names()]


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
