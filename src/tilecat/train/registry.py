"""Registry of trainers: model name -> which sets it reads and how its trainer is called.

Each entry binds the workflow's inputs (set stores, output directory, threads,
warm-start weights) to the trainer's own argument names; everything else comes from
the recipe stage's ``kwargs``, passed through unchanged, so a new trainer option only
needs a recipe edit. Trainers are imported lazily (``"module:function"``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["TrainerSpec", "StageData", "TRAINERS", "get_trainer", "model_names"]


@dataclass(frozen=True)
class StageData:
    """The set stores of one stage: ``(path, n)`` per set, in recipe order."""

    train: tuple[tuple[Path, int], ...]
    heldout: tuple[tuple[Path, int], ...]


def _bind_patches(data: StageData) -> dict[str, Any]:
    """train_masker: one training and one held-out patch store, and their sizes."""
    (tr, n_tr), = data.train
    (ho, n_ho), = data.heldout
    return {"train_data": tr, "heldout_data": ho, "n_patches": n_tr, "n_heldout": n_ho}


def _bind_stamps(single_heldout: bool) -> Callable[[StageData], dict[str, Any]]:
    """Galaxy trainers: ``train`` = list of stores, ``heldout`` = one store or a list."""

    def bind(data: StageData) -> dict[str, Any]:
        held: Any = [p for p, _ in data.heldout] or None
        if held is not None and single_heldout:
            held = held[0]
        return {"train": [p for p, _ in data.train], "heldout": held}

    return bind


@dataclass(frozen=True)
class TrainerSpec:
    """How the workflow calls one model's trainer.

    Attributes
    ----------
    model : str
        Model name (``tilecat train MODEL``).
    function : str
        ``"module:function"`` of the trainer.
    kind : {"galaxy", "defect"}
        Kind of the sets it reads.
    bind : callable
        :class:`StageData` -> the trainer's data arguments.
    data_args : tuple of str
        Argument names ``bind`` fills (not allowed in the recipe's kwargs).
    init_arg : str or None
        Argument taking the model directory to start from (None: no warm start).
    workers_arg : str or None
        Argument taking the simulation worker count, if any.
    train_count : int or None
        Exact number of training sets required (None: at least one).
    heldout_range : (int, int)
        Allowed number of held-out sets (min, max).
    """

    model: str
    function: str
    kind: str
    bind: Callable[[StageData], dict[str, Any]]
    data_args: tuple[str, ...]
    init_arg: str | None = "init"
    workers_arg: str | None = None
    train_count: int | None = None
    heldout_range: tuple[int, int] = (0, 1 << 30)

    def resolve(self) -> Callable[..., dict[str, Any]]:
        """The trainer function."""
        module, attr = self.function.split(":")
        return getattr(importlib.import_module(module), attr)

    def reserved(self) -> set[str]:
        """Arguments the workflow sets itself."""
        out = {"out_dir", "threads", "log", *self.data_args}
        if self.init_arg:
            out.add(self.init_arg)
        if self.workers_arg:
            out.add(self.workers_arg)
        return out

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The trainer's parameters by name."""
        return dict(inspect.signature(self.resolve()).parameters)

    def default(self, name: str) -> Any:
        """The trainer's default of argument ``name`` (None when it has none)."""
        p = self.parameters().get(name)
        return None if p is None or p.default is inspect.Parameter.empty else p.default

    def check_kwargs(self, kwargs: dict[str, Any], source: str, key: str) -> None:
        """Refuse kwargs the workflow sets itself or the trainer does not take.

        Raises
        ------
        ConfigError
            Naming the key (``source``: the recipe; ``key``: dotted path of the kwargs).
        """
        params = self.parameters()
        open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        reserved = self.reserved()
        for name in kwargs:
            if name in reserved:
                raise ConfigError(f"{source}: key '{key}.{name}': set by the training "
                                  f"workflow, not the recipe (reserved: {sorted(reserved)})")
            if name not in params and not open_ended:
                known = sorted(k for k, p in params.items() if k not in reserved
                               and p.kind is not inspect.Parameter.VAR_POSITIONAL)
                raise ConfigError(f"{source}: key '{key}.{name}': {self.function} has no "
                                  f"argument {name!r} (it takes: {known})")

    def check_counts(self, n_train: int, n_heldout: int, source: str, key: str) -> None:
        """Refuse a stage with a number of sets the trainer cannot take (``key``: the stage)."""
        if self.train_count is not None and n_train != self.train_count:
            raise ConfigError(f"{source}: key '{key}.train': {self.model} trains on exactly "
                              f"{self.train_count} set(s), got {n_train}")
        lo, hi = self.heldout_range
        if not lo <= n_heldout <= hi:
            want = f"exactly {lo}" if lo == hi else f"{lo} to {hi}"
            raise ConfigError(f"{source}: key '{key}.heldout': {self.model} takes {want} "
                              f"held-out set(s), got {n_heldout}")


#: The shipped models' trainers.
TRAINERS: dict[str, TrainerSpec] = {
    "masker": TrainerSpec(
        model="masker", function="tilecat.mask.train:train_masker", kind="defect",
        bind=_bind_patches,
        data_args=("train_data", "heldout_data", "n_patches", "n_heldout", "data_dir"),
        init_arg=None, workers_arg="workers", train_count=1, heldout_range=(1, 1)),
    "morphology": TrainerSpec(
        model="morphology", function="tilecat.morphology.train:train_morphology",
        kind="galaxy", bind=_bind_stamps(True), data_args=("train", "heldout"),
        heldout_range=(0, 1)),
    "structure": TrainerSpec(
        model="structure", function="tilecat.structure.train:train_structure",
        kind="galaxy", bind=_bind_stamps(True), data_args=("train", "heldout"),
        heldout_range=(0, 1)),
    "photoz": TrainerSpec(
        model="photoz", function="tilecat.photoz.train:train_photoz", kind="galaxy",
        bind=_bind_stamps(False), data_args=("train", "heldout"), init_arg=None),
    "vae": TrainerSpec(
        model="vae", function="tilecat.latent.train:train_vae", kind="galaxy",
        bind=_bind_stamps(False), data_args=("train", "heldout")),
}


def model_names() -> list[str]:
    """Names of the trainable models."""
    return list(TRAINERS)


def get_trainer(model: str) -> TrainerSpec:
    """The trainer of ``model``.

    Raises
    ------
    KeyError
        Unknown model (the message lists the known ones).
    """
    if model not in TRAINERS:
        raise KeyError(f"unknown model {model!r}; trainable models: {model_names()}")
    return TRAINERS[model]

