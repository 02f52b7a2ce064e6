"""The training workflow: recipe (config/train.yaml) validation, smoke runs of
`tilecat train` at a tiny scale, and the Snakemake rules (rules/train.smk)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tilecat.errors import ConfigError
from tilecat.train import load_recipe, packaged_models_dir, parse_recipe, run_training
from tilecat.train.rules import model_resource

from workflow_helpers import BIN, REPO, env

RECIPE = REPO / "config" / "train.yaml"
SCALE = 0.01  # ~20 stamps per set, 1 epoch per stage


@pytest.fixture(scope="module")
def raw_recipe() -> dict:
    return yaml.safe_load(RECIPE.read_text())


def _parse(raw: dict):
    return parse_recipe(raw, source="train.yaml", base_dir=RECIPE.parent)


def test_recipe_reproduces_shipped_cards():
    """The recipe's last stage of every model is the shipped card's training run."""
    recipe = load_recipe(RECIPE)
    assert set(recipe.models) == {"masker", "morphology", "structure", "photoz", "vae"}
    for name, model in recipe.models.items():
        card = json.loads((packaged_models_dir() / name / "card.json").read_text())
        final, tr = model.stages[-1], card["training"]
        assert final.sha256 == card["sha256"], name
        for key in ("epochs", "lr", "seed", "batch_size"):
            assert final.kwargs[key] == tr[key], (name, key)
        # the train rule runs the trainer with the thread count the weights came from
        assert model_resource(recipe, name, "threads") == (tr.get("threads") or 1), name
        if name != "masker":  # galaxy trainers record their sets, in the order read
            assert [f"{s}.zarr" for s in final.train] == \
                [p["path"] for p in tr["data"]["parts"]], name
            for s in final.train:
                spec = recipe.sets[s]
                part = next(p for p in tr["data"]["parts"] if p["path"] == f"{s}.zarr")
                assert spec.seed == part["seed"] and not spec.heldout
    # fine-tuned models are two-stage recipes
    assert recipe.model("morphology").stages[-1].init_from == "init"
    vst = recipe.model("vae").stages  # a chain: each stage starts from the one before
    assert [s.init_from for s in vst[1:]] == [s.name for s in vst[:-1]]
    vae = json.loads((packaged_models_dir() / "vae" / "card.json").read_text())
    assert vst[-2].sha256 == vae["training"]["init"]["sha256"]


def _edit(raw: dict, path: str, value):
    out = copy.deepcopy(raw)
    keys = path.split(".")
    node = out
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


@pytest.mark.parametrize("path, value, match", [
    ("surprise", 1, r"key '\(top level\)': unknown key"),
    ("sets.galaxy-heldout.kind", "star", r"key 'sets.galaxy-heldout.kind'"),
    ("sets.galaxy-train-0.n", 0, r"key 'sets.galaxy-train-0.n'"),
    ("sets.train-empirical.config", "sim/nope.yaml",
     r"key 'sets.train-empirical.config'.*does not exist"),
    ("models.morphology.stages.1.train", ["galaxy-train-0", "no-such-set"],
     r"key 'models.morphology.stages.1.train': unknown set 'no-such-set'"),
    ("models.masker.stages.0.train", ["galaxy-train-0"],
     r"key 'models.masker.stages.0.train': set 'galaxy-train-0' is of kind 'galaxy'"),
    ("models.masker.stages.0.heldout", [],
     r"key 'models.masker.stages.0.heldout': masker takes exactly 1"),
    ("models.morphology.stages.1.init_from", "final",
     r"key 'models.morphology.stages.1.init_from': 'final' is not an earlier stage"),
    ("models.photoz.stages.0.init_from", "x",
     r"key 'models.photoz.stages.0.init_from': the photoz trainer cannot"),
    ("models.morphology.stages.0.kwargs.epoch", 3,
     r"key 'models.morphology.stages.0.kwargs.epoch': .*train_morphology has no argument"),
    ("models.vae.stages.1.kwargs.threads", 4,
     r"key 'models.vae.stages.1.kwargs.threads': set by the training workflow"),
    ("models.structure.stages.0.kwargs.train", ["x"],
     r"key 'models.structure.stages.0.kwargs.train': set by the training workflow"),
    ("models.photoz.stages.0.sha256", "abc", r"key 'models.photoz.stages.0.sha256'"),
    ("models.galaxynet", {"stages": [{"name": "a", "train": ["galaxy-train-0"]}]},
     r"key 'models.galaxynet': unknown model 'galaxynet'"),
    ("models.vae.stages", [], r"key 'models.vae.stages'"),
])
def test_recipe_errors_name_the_key(raw_recipe, path, value, match):
    with pytest.raises(ConfigError, match=match):
        _parse(_edit(raw_recipe, path, value))


def test_missing_recipe_and_unknown_model(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "train.yaml")
    with pytest.raises(ConfigError, match="no recipe for model 'galaxynet'"):
        run_training("galaxynet", RECIPE, tmp_path, tmp_path / "out")


def test_smoke_run_never_written_to_shipped_models(tmp_path):
    shipped = packaged_models_dir() / "masker"
    before = (shipped / "card.json").read_bytes()
    with pytest.raises(ConfigError, match="shipped models directory"):
        run_training("masker", RECIPE, tmp_path, shipped, scale=0.5)
    assert (shipped / "card.json").read_bytes() == before
    assert not any(tmp_path.iterdir())  # refused before simulating anything


def _smoke_card(card: dict) -> None:
    wf = card["training_workflow"]
    assert wf["smoke_run"] is True and wf["scale"] == SCALE and "SMOKE RUN" in wf["warning"]
    assert wf["sha256_matches_shipped"] is None  # never compared at a reduced scale
    assert card["training"]["epochs"] == 1
    assert card["training"]["recipe"].startswith("SMOKE RUN")


def test_train_morphology_smoke(tmp_path, monkeypatch):
    """`tilecat train morphology` at a tiny scale: both stages, a card + weights that the
    model loader accepts and that the morphology head runs."""
    import torch

    from tilecat.cli import main
    from tilecat.infer.registry import get_head
    from tilecat.models import load_model
    from tilecat.morphology.dataset import load_stamps
    from tilecat.morphology.model import build

    monkeypatch.chdir(REPO)  # the default --recipe is config/train.yaml
    work, out = tmp_path / "work", tmp_path / "morph"
    assert main(["train", "morphology", "--work", str(work), "--out", str(out),
                 "--scale", str(SCALE), "--threads", "1"]) == 0
    card = json.loads((out / "card.json").read_text())
    _smoke_card(card)
    assert card["training_workflow"]["stages"] == ["init", "final"]
    assert card["training"]["init_from"]["epochs"] == 1  # fine-tuned from the init stage
    assert (work / "scale-0.01" / "stages" / "morphology-init" / "weights.safetensors").is_file()
    assert card["training"]["data"]["n_objects"] == 12 * 16  # ceil(1024 * 0.01) -> min 16
    assert not list(tmp_path.glob(".morph.*"))  # no temporary directory left behind

    _, card2 = load_model(out, build)
    assert card2["sha256"] == card["sha256"]
    head = get_head("morphology")
    lh = head.load({"infer": {"model_dirs": {"morphology": str(out)}}}, torch.device("cpu"))
    held = load_stamps(work / "scale-0.01" / "morphb-heldout.zarr")
    extra = [torch.from_numpy(np.asarray(held.psf_fwhm[:8], np.float32))
             for k in lh.inputs if k == "psf_fwhm"]
    assert len(extra) == len(lh.inputs)
    with torch.inference_mode():
        raw = lh.module(torch.from_numpy(np.ascontiguousarray(held.stamps[:8])), *extra).numpy()
    cols = head.postprocess(raw, lh)
    probs = np.stack(list(cols.values()), axis=1)
    assert probs.shape[0] == 8 and np.all(np.isfinite(probs))
    assert np.all((probs >= 0) & (probs <= 1))


def test_train_photoz_smoke(tmp_path):
    """run_training('photoz') at a tiny scale: simulated sets (two populations) are reused
    on a second call, and the photo-z head turns the model's output into PDFs."""
    import torch

    from tilecat.infer.registry import get_head
    from tilecat.photoz.data import load_photoz_sets
    from tilecat.train.sets import ensure_set, fingerprint_path, set_path

    recipe = load_recipe(RECIPE)
    work, out = tmp_path / "work", tmp_path / "photoz"
    card = run_training("photoz", recipe, work, out, threads=1, scale=SCALE,
                        log=lambda m: None)
    _smoke_card(card)
    assert card["training_workflow"]["sets"]["train-parametric"] == {
        "kind": "galaxy", "n": 80, "seed": 102, "heldout": False,
        "config": "sim/parametric.yaml"}
    parts = {p["path"]: p["population"] for p in card["training"]["data"]["parts"]}
    assert parts == {"train-empirical.zarr": "empirical", "train-parametric.zarr": "parametric",
                     **{f"galaxy-train-{k}.zarr": "empirical" for k in range(4)},
                     "train-parametric-2.zarr": "parametric",
                     "train-parametric-bright.zarr": "parametric"}

    store = set_path(work, "heldout-parametric", SCALE)
    spec = recipe.sets["heldout-parametric"].scaled(SCALE)
    mtime = (store / "zarr.json").stat().st_mtime_ns
    ensure_set(spec, store, log=lambda m: None)
    assert (store / "zarr.json").stat().st_mtime_ns == mtime  # matching store reused
    fp = fingerprint_path(store)  # made with another simulation config: simulated again
    fp.write_text(fp.read_text().replace(spec.fingerprint()["config_sha256"], "0" * 64))
    ensure_set(spec, store, log=lambda m: None)
    assert (store / "zarr.json").stat().st_mtime_ns != mtime
    assert json.loads(fp.read_text()) == spec.fingerprint()

    head = get_head("photoz")
    lh = head.load({"infer": {"model_dirs": {"photoz": str(out)}}}, torch.device("cpu"))
    data = load_photoz_sets([set_path(work, "heldout-empirical", SCALE)])
    extra = {"sigma": data.sigma, "psf_fwhm": data.psf_fwhm}
    args = [torch.from_numpy(np.ascontiguousarray(extra[k][:6], np.float32))
            for k in lh.inputs]
    with torch.inference_mode():
        raw = lh.module(torch.from_numpy(np.ascontiguousarray(data.stamps[:6])), *args)
    cols = head.postprocess(raw.float().numpy(), lh)
    pdf = cols["z_pdf"].astype(np.float64)
    assert pdf.shape == (6, 60) and np.allclose(pdf.sum(axis=1), 1.0, atol=1e-2)
    assert np.all((cols["z_median"] >= 0) & (cols["z_median"] <= 1.5))


def _dry_run_workdir(tmp_path: Path) -> Path:
    """A one-tile survey config whose input files exist (empty: enough for a dry run)."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for ref in cfg["survey"]["files"].values():
        ref["pattern"] = "raw/{tile}/{tile}-{band}.fits.fz"
    cfg["tiles"] = "raw/tiles.tsv"
    cfg["results"] = "results/dry"
    (tmp_path / "raw" / "sim0000").mkdir(parents=True)
    (tmp_path / "raw" / "tiles.tsv").write_text("tile\tindex\nsim0000\t0\n")
    for band in cfg["survey"]["bands"]:
        (tmp_path / "raw" / "sim0000" / f"sim0000-{band}.fits.fz").touch()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp_path


def _job_stats(tmp_path: Path, *targets: str) -> dict[str, int]:
    proc = subprocess.run(
        [str(BIN / "snakemake"), "-n", "--forceall", "--snakefile", str(REPO / "Snakefile"),
         "--configfile", "config.yaml", "--directory", str(tmp_path), *targets],
        env=env(), capture_output=True, text=True, cwd=tmp_path)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    stats = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", stats, re.MULTILINE)}


def test_snakemake_train_all_dry_run_and_default_target(tmp_path):
    recipe = load_recipe(RECIPE)
    root = _dry_run_workdir(tmp_path)
    jobs = _job_stats(root, "train_all")
    # one simulation job per set that a stage which trains reads (the plan of each model,
    # as `tilecat train` decides it): none for stages taken from the shipped weights
    from tilecat.train.rules import model_set_paths

    needed = {p for m in recipe.models
              for p in model_set_paths(recipe, m, root / "data/train", root / "results/m")}
    assert 0 < len(needed) <= len(recipe.sets)
    assert jobs == {"simulate_training_set": len(needed), "train_model": 5, "train_all": 1}
    default = _job_stats(root)
    assert "all" in default and "ingest" in default
    assert not {"train_all", "train_model", "simulate_training_set"} & set(default)


def test_only_needed_stages_run_and_shipped_weights_are_reused():
    """A stage appended after the shipped one: walking back along init_from stops at
    the first cached stage (earlier ones are not trained), and at full scale a stage
    whose recipe sha256 is the shipped weights' is taken from the shipped model, not
    at a smoke scale or with another thread count."""
    from tilecat.train.recipe import StageSpec
    from tilecat.train.run import _needed_stages, _shipped_match

    chain = (StageSpec("init", ("a",)), StageSpec("ft1", ("a",), init_from="init"),
             StageSpec("final", ("a",), init_from="ft1"),
             StageSpec("ft3", ("a",), init_from="final"))
    assert _needed_stages(chain, set()) == {"init", "ft1", "final", "ft3"}
    assert _needed_stages(chain, {"final"}) == {"final", "ft3"}
    assert _needed_stages(chain, {"ft1", "final"}) == {"final", "ft3"}
    assert _needed_stages(chain, {"ft3"}) == {"init", "ft1", "final", "ft3"}  # last: retrained

    card = json.loads((packaged_models_dir() / "vae" / "card.json").read_text())
    shipped = StageSpec("final", ("a",), sha256=card["sha256"])
    threads = int(card["training"].get("threads") or 1)
    assert _shipped_match("vae", shipped, 1.0, threads) == packaged_models_dir() / "vae"
    assert _shipped_match("vae", shipped, 0.5, threads) is None
    assert _shipped_match("vae", shipped, 1.0, threads + 1) is None
    other = StageSpec("final", ("a",), sha256="0" * 64)
    assert _shipped_match("vae", other, 1.0, threads) is None


def test_sets_simulated_only_for_stages_that_train(tmp_path, monkeypatch):
    """run_training('structure') with the stage before the last one matching shipped
    weights: the stages it replaces need no simulated sets; only the last stage's sets
    are simulated (ensure_set calls)."""
    import tilecat.train.run as run_mod

    recipe = load_recipe(RECIPE)
    mrec = recipe.model("structure")
    last, before = mrec.stages[-1], mrec.stages[-2]
    threads = 1
    monkeypatch.setattr(run_mod, "_shipped_match", lambda model, st, scale, th: (
        tmp_path / "shipped" if st.name == before.name else None))
    asked: list[str] = []
    monkeypatch.setattr(run_mod, "ensure_set",
                        lambda spec, store, workers, log: asked.append(Path(store).stem)
                        or Path(store))
    monkeypatch.setattr(run_mod, "_train_stage", lambda *a, **k: {
        "training_workflow": {"sha256_matches_shipped": None}})
    monkeypatch.setattr(run_mod, "_copy_shipped", lambda *a, **k: None)
    run_training("structure", RECIPE, tmp_path / "work", tmp_path / "out", threads=threads,
                 log=lambda m: None)
    assert sorted(asked) == sorted(set(last.train + last.heldout))
    assert len(set(mrec.set_names())) > len(asked)  # earlier stages' sets were not made
    # the training rule's inputs (what Snakemake simulates) are the same sets
    from tilecat.train.rules import model_set_paths

    rule_sets = model_set_paths(recipe, "structure", tmp_path / "work", tmp_path / "out")
    assert sorted(Path(p).stem for p in rule_sets) == sorted(asked)
