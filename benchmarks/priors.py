"""Prior correction acceptance experiment: a survey whose class mix differs from training.

Two parts, each run through the real code path (``tilecat calibrate`` on a labelled
set drawn with the training mix, then the aggregate step with EM over the tiles):

A. **Synthetic exact classifier** (always): every object has a feature drawn from
   known class-conditional densities, so P_T(c|x) is exact; raw outputs are it
   distorted by a temperature (overconfident). Morphology decision tree + photo-z
   PDFs on the model grid. Surveys: *shifted* (mergers 10x rarer, edge-on 3x more
   common, N(z) shifted to higher z) and *training mix*.
B. **Trained models** (when shipped in ``tilecat/data/models``): held-out galaxy
   stamps (``tilecat simulate-stamps --heldout``, cached in ``--cache``) run through
   the model; the shifted survey is a rejection resample of a balanced held-out set
   by class (merger kind x0.1, edge-on kind x3) and by redshift (weight exp(2.5 z)).
   The shipped model is never modified (it is copied before recalibration).

Figures: ECE (15 bins, top-label, count-weighted over questions, on the objects each
question applies to by truth) of ``_raw``, ``_cal`` and ``_post``; relative error of
the EM class fractions for answers with >= 1% prevalence; PIT KS of the photo-z PDFs;
KS distance between summed PDFs and the true N(z).

    python benchmarks/priors.py [--tiles 20 --per-tile 5000] [--no-real] [--n-survey 20000]

The last line is a JSON object: ece_raw, ece_cal, ece_post, prior_max_rel_err,
pit_ks_raw, pit_ks_post, nz_ks_raw, nz_ks_post (synthetic, shifted survey), the
training-mix checks (trainmix_*), and the trained models' figures (model_*; null when
a model is not shipped).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tilecat.aggregate import run_aggregate
from tilecat.calibrate import run_calibrate
from tilecat.calibrate.groups import group_values
from tilecat.config import load_config
from tilecat.morphology.labels import encode
from tilecat.morphology.tree import QUESTIONS
from tilecat.photoz.grid import DEFAULT_GRID, ZGrid
from tilecat.priors import synthetic as syn
from tilecat.priors.simsurvey import write_survey, write_synthetic_survey
from tilecat.qa.scores import (catalog_groups, morphology_scores, nz_distances, photoz_scores,
                               prior_errors, true_fractions)

LABELS = [q.truth for q in QUESTIONS]


def evaluate(catalog: Path, truth: pa.Table) -> dict[str, Any]:
    """Scores of a survey catalog against ``truth`` (rows in the catalog's order)."""
    table = pq.read_table(catalog)
    meta = json.loads(table.schema.metadata[b"tilecat.priors"])
    groups = catalog_groups(table.schema)
    out: dict[str, Any] = {"n": table.num_rows, "em": {k: v for k, v in meta["em"].items()
                                                       if k != "log"}}
    morph = [g for g in groups if not g.list_column]
    if morph:
        targets = encode({c: np.asarray(truth[c].to_pylist()) for c in LABELS})
        ms = morphology_scores(table, targets, morph)
        true = true_fractions(targets)
        used = {q: v["used"] for q, v in meta["groups"].items() if q != "z"}
        pe = prior_errors(used, true)
        train = {q: v["train"] for q, v in meta["groups"].items() if q != "z"}
        out.update(ece=ms["ece"], brier=ms["brier"], prior=pe, true=true, used=used,
                   train=train, per_question={q: {s: round(v["ece"], 4) for s, v in d.items()}
                                              for q, d in ms["questions"].items()})
        cal = np.concatenate([group_values(table, g, "cal") for g in morph], axis=1)
        post = np.concatenate([group_values(table, g, "post") for g in morph], axis=1)
        out["mean_abs_post_minus_cal"] = float(np.abs(post - cal).mean())
        out["max_prior_shift"] = max(float(np.max(np.abs(np.subtract(used[q], train[q]))))
                                     for q in used)
    zg = [g for g in groups if g.list_column]
    if zg:
        grid = ZGrid.from_meta(json.loads(table.schema.metadata[b"tilecat.z_grid"]))
        z = np.asarray(truth["z_true"].to_pylist(), float)
        gal = (np.asarray(truth["t_class"].to_pylist()) != "artifact"
               if "t_class" in truth.column_names else None)
        ps = photoz_scores(table, z, zg[0], grid, gal)
        nz = nz_distances(table, z, zg[0], grid, gal)
        out["pit_ks"] = {s: v["pit_ks"] for s, v in ps.items()}
        out["crps"] = {s: v["crps"] for s, v in ps.items()}
        out["nz_ks"] = {s: nz[s] for s in ps}
        used_nz = np.asarray(meta["groups"]["z"]["used"])
        out["nz_ks_prior"] = float(np.abs(np.cumsum(used_nz) - np.cumsum(nz["true"])).max())
    return out


def _print_eval(title: str, ev: dict[str, Any]) -> None:
    print(f"\n--- {title}: {ev['n']} objects, EM {ev['em']}")
    if "ece" in ev:
        print("  ECE (count-weighted over questions): " + ", ".join(
            f"{s} {v:.4f}" for s, v in ev["ece"].items()))
        print("  Brier: " + ", ".join(f"{s} {v:.4f}" for s, v in ev["brier"].items()))
        print(f"  {'question':12s} {'ECE raw':>8s} {'cal':>8s} {'post':>8s}   "
              f"{'train prior':28s} {'EM estimate':28s} {'true fraction':28s}")
        for q, d in ev["per_question"].items():
            fmt = " ".join(f"{v:.3f}" for v in ev["train"][q])
            est = " ".join(f"{v:.3f}" for v in ev["used"][q])
            tru = " ".join(f"{v:.3f}" for v in ev["true"][q])
            print(f"  {q:12s} {d.get('raw', float('nan')):8.4f} {d.get('cal', float('nan')):8.4f}"
                  f" {d.get('post', float('nan')):8.4f}   {fmt:28s} {est:28s} {tru:28s}")
        print(f"  largest relative error of EM fractions (answers >= 1%): "
              f"{ev['prior']['max_rel_err']:.4f}")
        print(f"  mean |post - cal| = {ev['mean_abs_post_minus_cal']:.4f}, largest "
              f"|estimated - training prior| = {ev['max_prior_shift']:.4f}")
    if "pit_ks" in ev:
        print("  photo-z PIT KS: " + ", ".join(f"{s} {v:.4f}" for s, v in ev["pit_ks"].items())
              + "; CRPS: " + ", ".join(f"{s} {v:.4f}" for s, v in ev["crps"].items()))
        print("  N(z) KS (summed PDFs vs true): " + ", ".join(
            f"{s} {v:.4f}" for s, v in ev["nz_ks"].items())
              + f"; EM N(z) vs true {ev['nz_ks_prior']:.4f}")


def synthetic_part(work: Path, tiles: int, per_tile: int, seed: int) -> dict[str, Any]:
    """Part A: both surveys; returns their evaluations."""
    res = {}
    for name, mix, nz in (("shifted", syn.shifted_mix(), syn.nz_shape(DEFAULT_GRID, 0.5)),
                          ("training mix", syn.TRAIN_MIX, syn.nz_shape(DEFAULT_GRID, 0.35))):
        t0 = time.perf_counter()
        s = write_synthetic_survey(work / name.replace(" ", "_"), mix=mix, nz=nz, n_tiles=tiles,
                                   per_tile=per_tile, seed=seed)
        for m in ("morphology", "photoz"):
            run_calibrate(s.models[m], s.labelled, log=lambda msg: None)
        cat = run_aggregate(load_config(s.config))
        ev = evaluate(cat, pq.read_table(s.truth))
        ev["seconds"] = round(time.perf_counter() - t0, 1)
        _print_eval(f"synthetic exact classifier, {name} survey ({ev['seconds']} s)", ev)
        res[name] = ev
    return res


# --------------------------------------------------------------------- trained models
def _ensure_stamps(path: Path, n: int, seed: int) -> None:
    if path.exists():
        return
    print(f"simulating {n} held-out galaxy stamps -> {path}", flush=True)
    subprocess.run([sys.executable, "-m", "tilecat.cli", "simulate-stamps", "--kind", "galaxy",
                    "--heldout", "-n", str(n), "--seed", str(seed), "--out", str(path)],
                   check=True, stdout=subprocess.DEVNULL)


def _outputs(model: str, mdir: Path, stamps: Path, cache: Path) -> pa.Table:
    """Raw model outputs + truth labels of a stamp set (cached by weights checksum)."""
    from tilecat.calibrate.labelled import run_head
    from tilecat.models import load_card

    sha = str(load_card(mdir)["sha256"])[:12]
    out = cache / f"{model}-{sha}-{stamps.stem}.parquet"
    if out.exists():
        return pq.read_table(out)
    t0 = time.perf_counter()
    if model == "photoz":
        from tilecat.photoz.data import load_photoz_set

        ps = load_photoz_set(stamps)
        cols = run_head(mdir, ps.stamps, {"sigma": ps.sigma})
        truth = {"z_true": ps.z, "t_class": ps.labels.get("t_class")}
    else:
        from tilecat.morphology.dataset import load_stamps

        ss = load_stamps(stamps)
        cols = run_head(mdir, ss.stamps, {})
        truth = {c: ss.labels[c] for c in LABELS + ["kind", "redshift"] if c in ss.labels}
    print(f"ran {model} over {stamps.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    arrays = {}
    for k, v in cols.items():
        v = np.asarray(v)
        arrays[k] = pa.array(list(v)) if v.ndim == 2 else pa.array(v)
    for k, v in truth.items():
        if v is not None:
            arrays[k] = pa.array(np.asarray(v).tolist())
    table = pa.table(arrays)
    pq.write_table(table, out)
    return table


def _resample(table: pa.Table, weights: np.ndarray, seed: int) -> pa.Table:
    """Rejection resample: keep row i with probability w_i / max(w)."""
    rng = np.random.default_rng(seed)
    keep = rng.random(len(weights)) < weights / weights.max()
    return table.filter(pa.array(keep))


def real_part(work: Path, cache: Path, n_cal: int, n_survey: int, seed: int
              ) -> dict[str, Any]:
    """Part B with whatever trained models are shipped."""
    from tilecat.models import load_card, model_dir

    import torch

    torch.set_num_threads(1)
    res: dict[str, Any] = {}
    cal_set = cache / f"calib-cal-s{seed}-n{n_cal}.zarr"
    sur_set = cache / f"calib-survey-s{seed + 1}-n{n_survey}.zarr"
    for model in ("morphology", "photoz"):
        try:
            src = model_dir(model)
            card = load_card(src)
        except Exception:
            print(f"\n--- trained {model} model: not shipped yet, skipped")
            continue
        _ensure_stamps(cal_set, n_cal, seed)
        _ensure_stamps(sur_set, n_survey, seed + 1)
        mdir = work / "models" / model
        shutil.copytree(src, mdir, dirs_exist_ok=True)
        lab = _outputs(model, src, cal_set, cache)
        labelled = work / f"{model}-labelled.parquet"
        meta = {}
        if model == "photoz":
            meta = {b"tilecat.z_grid": json.dumps(card["z_grid"]).encode()}
        pq.write_table(lab.replace_schema_metadata(meta), labelled)
        # photo-z: the PIT-CDF map (the acceptance figure is PIT uniformity)
        run_calibrate(mdir, labelled, pdf_method="pit", log=print)
        survey = _outputs(model, src, sur_set, cache)
        if model == "photoz":
            z = np.asarray(survey["z_true"].to_pylist(), float)
            shifted = _resample(survey, np.exp(2.5 * z), seed)
        else:
            kind = np.asarray(survey["kind"].to_pylist())
            w = np.where(kind == "merger", 0.1, np.where(kind == "edgeon", 3.0, 1.0))
            shifted = _resample(survey, w, seed)
        out_cols = [c for c in survey.column_names
                    if c.startswith("morph_") or (c.startswith("z_") and c != "z_true")]
        for name, tab in (("shifted", shifted), ("training mix", survey)):
            root = work / f"{model}-{name.replace(' ', '_')}"
            grid = ZGrid.from_meta(card["z_grid"]) if model == "photoz" else None
            cfg = write_survey(root, tab.select(out_cols), {model: mdir},
                               [{"name": model, "version": card.get("version"),
                                 "sha256": card["sha256"]}], per_tile=2000, grid=grid)
            cat = run_aggregate(load_config(cfg))
            ev = evaluate(cat, tab)
            _print_eval(f"trained {model} model, {name} survey", ev)
            res[f"{model} {name}"] = ev
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=20, help="synthetic tiles")
    p.add_argument("--per-tile", type=int, default=5000, help="synthetic objects per tile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-real", action="store_true", help="skip the trained models")
    p.add_argument("--n-cal", type=int, default=4000, help="held-out stamps for calibration")
    p.add_argument("--n-survey", type=int, default=16000, help="held-out stamps for the survey")
    p.add_argument("--cache", default="benchmarks/.cache", help="stamp sets and model outputs")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tilecat-priors-"))
    try:
        syn_res = synthetic_part(work / "synthetic", a.tiles, a.per_tile, a.seed)
        real: dict[str, Any] = {}
        if not a.no_real:
            cache = Path(a.cache)
            cache.mkdir(parents=True, exist_ok=True)
            real = real_part(work / "real", cache, a.n_cal, a.n_survey, 7101 + a.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s, t = syn_res["shifted"], syn_res["training mix"]
    m_s = real.get("morphology shifted", {})
    m_t = real.get("morphology training mix", {})
    z_s = real.get("photoz shifted", {})

    def r(v: Any) -> Any:
        return None if v is None else round(float(v), 5)

    figures = {
        "ece_raw": r(s["ece"]["raw"]), "ece_cal": r(s["ece"]["cal"]),
        "ece_post": r(s["ece"]["post"]), "prior_max_rel_err": r(s["prior"]["max_rel_err"]),
        "pit_ks_raw": r(s["pit_ks"]["raw"]), "pit_ks_cal": r(s["pit_ks"]["cal"]),
        "pit_ks_post": r(s["pit_ks"]["post"]), "nz_ks_raw": r(s["nz_ks"]["raw"]),
        "nz_ks_post": r(s["nz_ks"]["post"]), "nz_ks_em": r(s["nz_ks_prior"]),
        "em_iterations": s["em"]["n_iter"],
        "trainmix_ece_cal": r(t["ece"]["cal"]), "trainmix_ece_post": r(t["ece"]["post"]),
        "trainmix_mean_abs_post_minus_cal": r(t["mean_abs_post_minus_cal"]),
        "trainmix_max_prior_shift": r(t["max_prior_shift"]),
        "trainmix_pit_ks_cal": r(t["pit_ks"]["cal"]),
        "trainmix_pit_ks_post": r(t["pit_ks"]["post"]),
        "model_morph_ece_raw": r(m_s.get("ece", {}).get("raw")),
        "model_morph_ece_cal": r(m_s.get("ece", {}).get("cal")),
        "model_morph_ece_post": r(m_s.get("ece", {}).get("post")),
        "model_morph_prior_max_rel_err": r(m_s.get("prior", {}).get("max_rel_err")),
        "model_morph_trainmix_mean_abs_post_minus_cal": r(m_t.get("mean_abs_post_minus_cal")),
        "model_pit_ks_raw": r(z_s.get("pit_ks", {}).get("raw")),
        "model_pit_ks_post": r(z_s.get("pit_ks", {}).get("post")),
        "model_nz_ks_raw": r(z_s.get("nz_ks", {}).get("raw")),
        "model_nz_ks_post": r(z_s.get("nz_ks", {}).get("post")),
    }
    print()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
