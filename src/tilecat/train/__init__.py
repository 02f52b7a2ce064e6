"""The training workflow: ``tilecat train MODEL`` and ``rules/train.smk``.

The recipe (``config/train.yaml``, :mod:`tilecat.train.recipe`) names the simulated
sets and each model's training stages; the registry (:mod:`tilecat.train.registry`)
maps a model to its trainer; :func:`run_training` simulates missing sets
(:mod:`tilecat.train.sets`) and runs the stages, writing the model atomically.
"""

from __future__ import annotations

from .recipe import DEFAULT_RECIPE, Recipe, SetSpec, StageSpec, load_recipe, parse_recipe
from .registry import TRAINERS, get_trainer, model_names
from .run import SMOKE_WARNING, packaged_models_dir, run_training

__all__ = [
    "DEFAULT_RECIPE",
    "Recipe",
    "SetSpec",
    "StageSpec",
    "load_recipe",
    "parse_recipe",
    "TRAINERS",
    "get_trainer",
    "model_names",
    "run_training",
    "packaged_models_dir",
    "SMOKE_WARNING",
]
