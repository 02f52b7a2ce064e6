"""The training recipe (``config/train.yaml``): loading and validation.

A recipe names simulated sets (``sets``: one ``tilecat simulate-stamps`` call each)
and, per model, its training stages (``models.<model>.stages``). It is validated
against ``tilecat/data/train.schema.yaml`` and then against the trainer registry
(:mod:`tilecat.train.registry`): known model, existing sets of the right kind, an
``init_from`` naming an earlier stage, ``kwargs`` the trainer accepts. Every problem
raises :class:`~tilecat.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from math import ceil
from pathlib import Path
from typing import Any

import yaml

from ..config import check_schema, read_yaml
from ..errors import ConfigError

__all__ = ["SetSpec", "StageSpec", "ModelRecipe", "Recipe", "load_recipe", "parse_recipe",
           "schema", "MIN_SCALED_N", "DEFAULT_RECIPE"]

#: Default recipe path (relative to the working directory, as the CLI's --recipe).
DEFAULT_RECIPE = "config/train.yaml"
#: Smallest set size a scaled-down (smoke) run simulates (one masker batch of 16).
MIN_SCALED_N = 16


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The recipe's JSON Schema as a dict."""
    text = resources.files("tilecat").joinpath("data/train.schema.yaml").read_text()
    return yaml.safe_load(text)


@dataclass(frozen=True)
class SetSpec:
    """One simulated set: ``tilecat simulate-stamps --kind KIND -n N --seed S [--heldout]
    [--config CONFIG]``.

    Attributes
    ----------
    name : str
        Store name (``<work>/<name>.zarr``).
    kind : {"galaxy", "defect"}
    n : int
        Number of stamps or patches.
    seed : int
    heldout : bool
        Held-out observing conditions.
    config : Path or None
        Simulation YAML (resolved); ``config_ref`` is the path as the recipe wrote it.
    """

    name: str
    kind: str
    n: int
    seed: int
    heldout: bool = False
    config: Path | None = None
    config_ref: str | None = None

    def scaled(self, scale: float) -> "SetSpec":
        """The set shrunk by ``scale`` (0 < scale <= 1) for smoke runs: ``n`` becomes
        ``ceil(n * scale)`` but at least :data:`MIN_SCALED_N` (and at most ``n``)."""
        if scale >= 1.0:
            return self
        n = min(self.n, max(MIN_SCALED_N, ceil(self.n * scale)))
        return replace(self, n=n)

    def to_json(self) -> dict[str, Any]:
        """JSON form (recorded in cards); the config as the recipe wrote it."""
        out: dict[str, Any] = {"kind": self.kind, "n": self.n, "seed": self.seed,
                               "heldout": self.heldout}
        if self.config_ref is not None:
            out["config"] = self.config_ref
        return out

    def fingerprint(self) -> dict[str, Any]:
        """What determines the set's content: :meth:`to_json` with the config's sha256."""
        out = self.to_json()
        if self.config is not None:
            out["config_sha256"] = hashlib.sha256(self.config.read_bytes()).hexdigest()
        return out


@dataclass(frozen=True)
class StageSpec:
    """One training run of a model.

    Attributes
    ----------
    name : str
    train, heldout : tuple of str
        Set names, in the order given to the trainer.
    init_from : str or None
        Earlier stage whose weights this one starts from.
    kwargs : dict
        Trainer keyword arguments, passed through.
    sha256 : str or None
        Checksum of the shipped weights this stage reproduced.
    """

    name: str
    train: tuple[str, ...]
    heldout: tuple[str, ...] = ()
    init_from: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "train": list(self.train), "heldout": list(self.heldout),
                "init_from": self.init_from, "kwargs": copy.deepcopy(self.kwargs)}


@dataclass(frozen=True)
class ModelRecipe:
    """A model's training stages (the last one is the model) and job resources."""

    name: str
    stages: tuple[StageSpec, ...]
    resources: dict[str, int] = field(default_factory=dict)
    description: str = ""

    def set_names(self) -> list[str]:
        """Every set any stage reads, first use first, no repeats."""
        out: list[str] = []
        for st in self.stages:
            for s in st.train + st.heldout:
                if s not in out:
                    out.append(s)
        return out

    def stage(self, name: str) -> StageSpec:
        for st in self.stages:
            if st.name == name:
                return st
        raise KeyError(name)


@dataclass(frozen=True)
class Recipe:
    """A validated training recipe."""

    source: str
    sets: dict[str, SetSpec]
    models: dict[str, ModelRecipe]

    def model(self, name: str) -> ModelRecipe:
        """The recipe of model ``name``.

        Raises
        ------
        ConfigError
            The recipe has no such model.
        """
        if name not in self.models:
            raise ConfigError(f"{self.source}: key 'models': no recipe for model {name!r}; "
                              f"known: {sorted(self.models)}")
        return self.models[name]

    def model_hash(self, name: str) -> str:
        """sha256 of everything that determines model ``name``'s training: its stages
        and the fingerprints of the sets they read (a Snakemake rerun trigger)."""
        m = self.model(name)
        blob = {"stages": [st.to_json() for st in m.stages],
                "sets": {s: self.sets[s].fingerprint() for s in m.set_names()}}
        text = json.dumps(blob, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def _schema_check(raw: Any, source: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    check_schema(raw, schema(), source)
    return raw


def _parse_set(name: str, raw: dict[str, Any], base: Path, source: str) -> SetSpec:
    config = None
    ref = raw.get("config")
    if ref is not None:
        config = (base / ref) if not Path(ref).is_absolute() else Path(ref)
        if not config.is_file():
            raise ConfigError(f"{source}: key 'sets.{name}.config': simulation config "
                              f"{config} does not exist")
    return SetSpec(name=name, kind=raw["kind"], n=int(raw["n"]), seed=int(raw["seed"]),
                   heldout=bool(raw.get("heldout", False)), config=config, config_ref=ref)


def _parse_model(name: str, raw: dict[str, Any], sets: dict[str, SetSpec],
                 source: str) -> ModelRecipe:
    from .registry import get_trainer

    key = f"models.{name}"
    try:
        trainer = get_trainer(name)
    except KeyError as exc:
        raise ConfigError(f"{source}: key '{key}': {exc.args[0]}") from None
    stages: list[StageSpec] = []
    for i, st in enumerate(raw["stages"]):
        skey = f"{key}.stages.{i}"
        if st["name"] in [s.name for s in stages]:
            raise ConfigError(f"{source}: key '{skey}.name': stage {st['name']!r} "
                              "appears twice")
        for part in ("train", "heldout"):
            for s in st.get(part, []):
                if s not in sets:
                    raise ConfigError(f"{source}: key '{skey}.{part}': unknown set {s!r} "
                                      f"(not under 'sets')")
                if sets[s].kind != trainer.kind:
                    raise ConfigError(f"{source}: key '{skey}.{part}': set {s!r} is of kind "
                                      f"{sets[s].kind!r}, {name} trains on {trainer.kind!r} "
                                      "sets")
        trainer.check_counts(len(st["train"]), len(st.get("heldout", [])), source, skey)
        init = st.get("init_from")
        if init is not None:
            if trainer.init_arg is None:
                raise ConfigError(f"{source}: key '{skey}.init_from': the {name} trainer "
                                  "cannot start from saved weights")
            if init not in [s.name for s in stages]:
                raise ConfigError(f"{source}: key '{skey}.init_from': {init!r} is not an "
                                  f"earlier stage of {name} (earlier: "
                                  f"{[s.name for s in stages]})")
        kwargs = dict(st.get("kwargs") or {})
        trainer.check_kwargs(kwargs, source, f"{skey}.kwargs")
        stages.append(StageSpec(name=st["name"], train=tuple(st["train"]),
                                heldout=tuple(st.get("heldout", [])), init_from=init,
                                kwargs=kwargs, sha256=st.get("sha256"), note=st.get("note")))
    return ModelRecipe(name=name, stages=tuple(stages), resources=dict(raw.get("resources", {})),
                       description=str(raw.get("description", "")))


def parse_recipe(raw: Any, source: str = "recipe", base_dir: str | Path = ".") -> Recipe:
    """Validate a recipe given as a dict (as read from YAML).

    Parameters
    ----------
    raw : dict
        The recipe.
    source : str
        Name used in error messages (the file).
    base_dir : path
        Directory that relative ``config`` paths of sets are relative to.

    Raises
    ------
    ConfigError
        Naming the offending key.
    """
    raw = _schema_check(copy.deepcopy(raw), source)
    base = Path(base_dir)
    sets = {name: _parse_set(name, spec, base, source) for name, spec in raw["sets"].items()}
    models = {name: _parse_model(name, spec, sets, source)
              for name, spec in raw["models"].items()}
    return Recipe(source=source, sets=sets, models=models)


def load_recipe(path: str | Path = DEFAULT_RECIPE) -> Recipe:
    """Read and validate a recipe file (relative set configs: relative to its directory)."""
    path = Path(path)
    raw = read_yaml(path, "training recipe")
    return parse_recipe(raw, source=str(path), base_dir=path.parent)
