"""``tilecat train MODEL``: simulate the recipe's missing sets, run the training stages.

Every stage's trainer writes into a temporary directory beside its final one, which
is renamed into place only when the trainer has written weights and card
(:func:`tilecat.atomic.atomic_dir`), so a killed run never leaves a half-written
model. Intermediate stages (a run that a later stage fine-tunes) live in
``<work>/stages/<model>-<stage>/`` and are reused while their inputs are unchanged
(same stage recipe, sets, scale, threads: the card's ``training_workflow.stage_sha256``).
Only the stages the last one needs are run: walking back along ``init_from``, a
reusable intermediate stage ends the chain (its own ancestors are not trained). At full
scale, an intermediate stage whose recipe ``sha256`` is that of the shipped model's
weights (trained with the same thread count) is taken from the shipped model instead
of being trained again (copied into its stage directory), so a stage appended after the
shipped one fine-tunes the shipped weights directly.

Each card gets a ``training_workflow`` section: model, stage, the sets as simulated,
the scale, ``smoke_run`` (true for any scale < 1: n and epochs shrunk, not a model to
ship) and, when the recipe gives the shipped weights' sha256, whether a full-scale
run reproduced them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .recipe import ModelRecipe, Recipe, SetSpec, StageSpec, load_recipe
from .registry import StageData, TrainerSpec, get_trainer
from .sets import ensure_set, scaled_root, set_path

__all__ = ["run_training", "training_plan", "TrainingPlan", "stage_kwargs", "stage_dir", "packaged_models_dir",
           "SMOKE_WARNING"]

SMOKE_WARNING = ("SMOKE RUN: training sets and epochs scaled down by the training "
                 "workflow's --scale; for tests only, never ship these weights")


def _log(msg: str) -> None:
    print(f"[train] {msg}", file=sys.stderr, flush=True)


def packaged_models_dir() -> Path:
    """``tilecat/data/models``: where the shipped models live."""
    return Path(str(resources.files("tilecat").joinpath("data", "models"))).resolve()


def _inside(path: Path, root: Path) -> bool:
    path = path.resolve()
    return path == root or root in path.parents


def stage_dir(work_dir: str | Path, model: str, stage: str, scale: float = 1.0) -> Path:
    """Where an intermediate stage's model is kept: ``<work>[/scale-F]/stages/<model>-<stage>``."""
    return scaled_root(work_dir, scale) / "stages" / f"{model}-{stage}"


def stage_kwargs(trainer: TrainerSpec, stage: StageSpec, scale: float) -> dict[str, Any]:
    """The recipe's kwargs of ``stage``, scaled for a smoke run.

    At ``scale`` < 1 the epochs (the recipe's, else the trainer's default) become
    ``max(1, round(epochs * scale))`` and a ``recipe`` text gets a smoke-run prefix.
    """
    kwargs = dict(stage.kwargs)
    if scale < 1.0:
        epochs = kwargs.get("epochs", trainer.default("epochs"))
        if epochs is not None:
            kwargs["epochs"] = max(1, round(int(epochs) * scale))
        if isinstance(kwargs.get("recipe"), str):
            kwargs["recipe"] = f"SMOKE RUN (scale {scale:g}, n and epochs shrunk): " \
                               f"{kwargs['recipe']}"
    return kwargs


def _stage_hash(model: str, trainer: TrainerSpec, stage: StageSpec,
                sets: dict[str, SetSpec], scale: float, threads: int,
                init_hash: str | None) -> str:
    blob = {"model": model, "function": trainer.function, "stage": stage.to_json(),
            "sets": {s: sets[s].fingerprint() for s in stage.train + stage.heldout},
            "scale": scale, "threads": threads, "init": init_hash}
    text = json.dumps(blob, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _reusable(target: Path, stage_hash: str) -> bool:
    from ..models import CARD_NAME, WEIGHTS_NAME, sha256_file

    try:
        card = json.loads((target / CARD_NAME).read_text())
        return ((card.get("training_workflow") or {}).get("stage_sha256") == stage_hash
                and sha256_file(target / WEIGHTS_NAME) == card.get("sha256"))
    except (OSError, ValueError):
        return False


def _shipped_match(model: str, stage: StageSpec, scale: float, threads: int) -> Path | None:
    """The shipped model's directory when it holds ``stage``'s weights, else None.

    It does when the run is at full scale, the recipe gives the stage's ``sha256``, the
    shipped weights have that checksum (as their card says) and the shipped card's
    ``training.threads`` (default 1) is ``threads``.
    """
    from ..models import CARD_NAME, WEIGHTS_NAME, sha256_file

    if scale < 1.0 or stage.sha256 is None:
        return None
    shipped = packaged_models_dir() / model
    try:
        card = json.loads((shipped / CARD_NAME).read_text())
        if card.get("sha256") != stage.sha256:
            return None
        if int((card.get("training") or {}).get("threads") or 1) != threads:
            return None
        if sha256_file(shipped / WEIGHTS_NAME) != stage.sha256:
            return None
    except (OSError, ValueError, TypeError):
        return None
    return shipped


def _copy_shipped(shipped: Path, target: Path, section: dict[str, Any]) -> dict[str, Any]:
    """Copy the shipped weights + card into the stage directory ``target`` (atomically)
    and stamp its ``training_workflow`` section (``from_shipped``: where it came from)."""
    import shutil

    from ..atomic import atomic_dir
    from ..models import CARD_NAME, WEIGHTS_NAME

    with atomic_dir(target) as tmp:
        for name in (WEIGHTS_NAME, CARD_NAME):
            shutil.copyfile(shipped / name, tmp / name)
        card = _stamp_card(tmp, {**section, "sha256_matches_shipped": True,
                                 "from_shipped": str(shipped)})
    return card


def _needed_stages(stages: tuple[StageSpec, ...], cached: set[str]) -> set[str]:
    """Names of the stages to run or reuse: the last one and, walking back along
    ``init_from``, each stage an un-``cached`` needed stage starts from."""
    by_name = {st.name: st for st in stages}
    need: set[str] = set()
    name: str | None = stages[-1].name
    while name is not None:
        need.add(name)
        if name in cached and name != stages[-1].name:
            break
        name = by_name[name].init_from
    return need


def _stamp_card(model_dir: Path, section: dict[str, Any]) -> dict[str, Any]:
    """Add ``training_workflow`` to the card the trainer wrote (same JSON layout as
    :func:`tilecat.models.save_model`; the weights and their sha256 are untouched)."""
    from ..atomic import atomic_path
    from ..models import CARD_NAME

    path = model_dir / CARD_NAME
    card = json.loads(path.read_text())
    card["training_workflow"] = section
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return card


def _check_run(scale: float, threads: int, workers: int, out_dir: Path) -> None:
    if not 0.0 < scale <= 1.0:
        raise ConfigError(f"--scale must be in (0, 1], got {scale:g}")
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if scale < 1.0 and _inside(out_dir, packaged_models_dir()):
        raise ConfigError(f"--out {out_dir} is the shipped models directory: a smoke run "
                          f"(--scale {scale:g}) must not be written there")


def _train_stage(trainer: TrainerSpec, stage: StageSpec, data: StageData, target: Path,
                 threads: int, workers: int, init: Path | None, scale: float,
                 section: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    from ..atomic import atomic_dir

    call = stage_kwargs(trainer, stage, scale)
    call.update(trainer.bind(data))
    call["threads"] = threads
    if trainer.workers_arg:
        call[trainer.workers_arg] = workers
    if init is not None and trainer.init_arg:
        call[trainer.init_arg] = init
    func = trainer.resolve()
    with atomic_dir(target) as tmp:
        call["out_dir"] = tmp
        log(f"{trainer.model} stage {stage.name}: {trainer.function}(" + ", ".join(
            f"{k}={v!r}" for k, v in call.items() if k not in ("out_dir", "recipe")) + ")")
        card = func(**call)
        card = _stamp_card(tmp, {**section, "sha256_matches_shipped": (
            None if stage.sha256 is None or scale < 1.0 else card["sha256"] == stage.sha256)})
    return card


@dataclass(frozen=True)
class TrainingPlan:
    """What a training run of one model will do, decided before it starts.

    Attributes
    ----------
    sets : dict
        Every set of the model's recipe (scaled), by name.
    hashes : dict
        Each stage's recipe hash (chained along ``init_from``).
    targets : dict
        Each stage's output directory (the last stage's is ``out_dir``).
    cached : set of str
        Stages (not the last) whose weights are reused: from the work directory or the
        shipped model.
    needed : set of str
        Stages run or reused: the last and, back along ``init_from``, those it needs.
    stages : tuple of StageSpec
        The model's stages in recipe order.
    """

    sets: dict[str, Any]
    hashes: dict[str, str]
    targets: dict[str, Path]
    cached: set[str]
    needed: set[str]
    stages: tuple[StageSpec, ...]

    def trained(self) -> list[str]:
        """Names of the stages that will train, in recipe order."""
        return [st.name for st in self.stages
                if st.name in self.needed and st.name not in self.cached]

    def set_names(self) -> list[str]:
        """The sets the stages that train read (train and held-out), in recipe order
        without repeats: the only ones the run simulates."""
        out: list[str] = []
        trained = set(self.trained())
        for st in self.stages:
            if st.name in trained:
                out += [s for s in (*st.train, *st.heldout) if s not in out]
        return out


def training_plan(model: str, recipe: str | Path | Recipe, work_dir: str | Path,
                  out_dir: str | Path, *, threads: int = 1,
                  scale: float = 1.0) -> TrainingPlan:
    """Which of ``model``'s stages a run would train, reuse or skip, and their sets.

    The same decision :func:`run_training` acts on, so that the training rule can
    declare as inputs only the sets the run will read (the Snakemake workflow then
    simulates no set a reused stage needs).

    Parameters
    ----------
    model, recipe, work_dir, out_dir, threads, scale
        As for :func:`run_training`.

    Returns
    -------
    TrainingPlan
    """
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    mrec: ModelRecipe = rec.model(model)
    trainer = get_trainer(model)
    sets = {name: rec.sets[name].scaled(scale) for name in mrec.set_names()}
    hashes: dict[str, str] = {}
    for stage in mrec.stages:  # a stage's hash chains its recipe, never its weights
        hashes[stage.name] = _stage_hash(
            model, trainer, stage, sets, scale, threads,
            hashes[stage.init_from] if stage.init_from else None)
    last = mrec.stages[-1].name
    targets = {st.name: Path(out_dir) if st.name == last
               else stage_dir(work_dir, model, st.name, scale) for st in mrec.stages}
    cached = {st.name for st in mrec.stages if st.name != last
              and (_reusable(targets[st.name], hashes[st.name])
                   or _shipped_match(model, st, scale, threads) is not None)}
    return TrainingPlan(sets=sets, hashes=hashes, targets=targets, cached=cached,
                        needed=_needed_stages(mrec.stages, cached), stages=mrec.stages)


def run_training(model: str, recipe: str | Path | Recipe, work_dir: str | Path,
                 out_dir: str | Path, *, threads: int = 1, workers: int = 1,
                 scale: float = 1.0, log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Train ``model`` as its recipe says and write ``weights.safetensors`` + ``card.json``.

    Parameters
    ----------
    model : str
        Model name (``masker``, ``morphology``, ``structure``, ``photoz``, ``vae``).
    recipe : path or Recipe
        The training recipe (``config/train.yaml``).
    work_dir : path
        Where the simulated sets (``<name>.zarr``) and intermediate stages live; a set
        is simulated when a stage that trains needs it and it is missing, matching ones
        are reused (stages taken from the shipped weights or the work directory need
        none).
    out_dir : path
        The model directory written (atomically replaced).
    threads : int
        torch CPU threads of the trainer (results are reproducible for a fixed count;
        the shipped models used 1).
    workers : int
        Simulation processes (the sets do not depend on it).
    scale : float
        In (0, 1]; below 1 a smoke run: every set's n and every stage's epochs are
        scaled down (sets in ``<work>/scale-F/``), and the card says ``smoke_run``.
        Refused when ``out_dir`` is the shipped models directory.
    log : callable
        Progress lines.

    Returns
    -------
    dict
        The card written to ``out_dir``.

    Raises
    ------
    ConfigError
        Unknown model, invalid recipe, bad scale/threads/workers, or a smoke run
        aimed at the shipped models.
    """
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    mrec: ModelRecipe = rec.model(model)
    trainer = get_trainer(model)
    out_dir = Path(out_dir)
    scale, threads, workers = float(scale), int(threads), int(workers)
    _check_run(scale, threads, workers, out_dir)

    plan = training_plan(model, rec, work_dir, out_dir, threads=threads, scale=scale)
    sets, hashes, targets = plan.sets, plan.hashes, plan.targets
    cached, need, last = plan.cached, plan.needed, mrec.stages[-1].name
    paths: dict[str, Path] = {}  # simulated on first use: a reused stage needs no sets

    def path(name: str) -> Path:
        if name not in paths:
            paths[name] = ensure_set(sets[name], set_path(work_dir, name, scale), workers, log)
        return paths[name]

    done: dict[str, tuple[Path, str]] = {}
    card: dict[str, Any] = {}
    for stage in mrec.stages:
        if stage.name not in need:
            log(f"{model} stage {stage.name}: not needed (a later stage is cached)")
            continue
        final = stage.name == last
        init = done[stage.init_from] if stage.init_from and stage.name not in cached else None
        h, target = hashes[stage.name], targets[stage.name]
        section = {
            "model": model, "stage": stage.name, "stages": [s.name for s in mrec.stages],
            "init_from": stage.init_from, "stage_sha256": h,
            "sets": {s: sets[s].to_json() for s in stage.train + stage.heldout},
            "scale": scale, "smoke_run": scale < 1.0, "threads": threads,
        }
        if not final and _reusable(target, h):
            log(f"{model} stage {stage.name}: reusing {target}")
            done[stage.name] = (target, h)
            continue
        shipped = None if final else _shipped_match(model, stage, scale, threads)
        if shipped is not None:
            log(f"{model} stage {stage.name}: the shipped weights {shipped} are this "
                f"stage's (sha256 {stage.sha256[:12]}): copied to {target}")
            _copy_shipped(shipped, target, section)
            done[stage.name] = (target, h)
            continue
        data = StageData(train=tuple((path(s), sets[s].n) for s in stage.train),
                         heldout=tuple((path(s), sets[s].n) for s in stage.heldout))
        if scale < 1.0:
            section["warning"] = SMOKE_WARNING
        card = _train_stage(trainer, stage, data, target, threads, workers,
                            None if init is None else init[0], scale, section, log)
        match = card["training_workflow"]["sha256_matches_shipped"]
        if match is not None:
            log(f"{model} stage {stage.name}: weights sha256 {card['sha256'][:12]} "
                + ("reproduce the shipped ones" if match else
                   f"differ from the shipped {stage.sha256[:12]} (other torch version, "
                   "thread count or trainer code?)"))
        done[stage.name] = (target, h)
    log(f"wrote {out_dir}" + (" (SMOKE RUN, not for shipping)" if scale < 1.0 else ""))
    return card
