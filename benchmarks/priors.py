"""Prior correction acceptance experiment: a survey whose class mix differs from training.

Two parts, each run through the real code path (``tilecat calibrate`` on a labelled
set drawn with the training mix, then the aggregate step with EM over the tiles):

A. **Synthetic exact classifier** (always): every object has a feature drawn from
   known class-conditional densities, so P_T(c|x) is exact; raw outputs are it
   distorted by a temperature (overconfident). Morphology decision tree + photo-z
   PDFs on the model grid. Surveys: *shifted* (mergers 10x rarer, edge-on 3x more
   common, N(z) shifted to higher z) and *training mix*.
B. **Trained models** (when shipped in ``tilecat/data/models``): held-out galaxy
   stamps (``tilecat simulate-stamps --heldout``, cached in ``--cache`` under names
   that encode the simulation settings: :mod:`tilecat.calibrate.stampsets`) of the
   population each model applies to: the morphology sample
   (``--morph-sim-config``, default ``config/stamps/morphology-bars.yaml``) for the
   morphology model, the demo survey's (empirical) population for photo-z. A labelled
   set of 4000 stamps recalibrates a copy of the model (the shipped model is never
   modified); the shifted survey is a rejection resample of a balanced held-out set by
   class (merger kind x0.1, edge-on kind x3) and by redshift (weight exp(2.5 z)).
   Morphology is also run with the shipped card's calibration as it is (fitted on a
   labelled set in training conditions: the ``card`` figures), and recalibrated on a
   labelled set in training conditions with the EM transfer test
   (:func:`tilecat.calibrate.selftest.tree_transfer_test`) on the held-out labelled set
   (``tilecat calibrate --check``): the ``transfer`` figures, where EM runs only on the
   questions whose estimate carries over to the held-out conditions.

Figures: ECE (15 bins, top-label, count-weighted over questions, on the objects each
question applies to by truth) of ``_raw``, ``_cal`` and ``_post``; relative error of
the EM class fractions for answers with >= 1% prevalence; PIT KS of the photo-z PDFs;
KS distance between summed PDFs and the true N(z).

Shift test ("detect, then correct", ``aggregate.shift_test_alpha``, default 0.01): every
survey prints, per EM-estimated group, the test that decides whether EM's estimate is
used (:func:`tilecat.priors.em.shift_test`): statistic, dof and p-value. The training-mix
surveys measure its null (calibration residuals included), the shifted ones its power.
Why these tests and the level 0.01: for answers (K <= 4) the likelihood ratio of the
EM estimate follows its asymptotic chi2(K - 1) null (Monte Carlo with the exact
synthetic classifier: size 0.01 at alpha 0.01; MAP shrinkage and fractional tree
weights only make it conservative). For the N(z) on 60 bins it does not: smoothed EM
fits *worse* than the training N(z) on both trained photo-z surveys (log-likelihood
gain < 0, so LR = 0), and unsmoothed ML has LR ~ 70 on both (59 dof of noise, no
power). The N(z) is gated by Neyman's smooth test, the score test of a location/width
tilt of the training N(z) on its CDF scale (2 dof, robust variance; exact size in
Monte Carlo), which separates the trained photo-z surveys (p 0.77 training mix, 6e-6
shifted). 0.01 is the conventional strict level: the cost of a false detection (EM
noise applied to a good catalog) is paid by every object, that of a miss only by
surveys with a small shift.

Calibration method (``--method temperature,bcts,isotonic``): the morphology
``recalibrated`` and ``transfer`` variants are run once per class calibration method
(``tilecat calibrate --method``; default ``bcts``, the card default and the method of the
shipped card). Every morphology survey is also aggregated *ungated* (EM on every
question, whatever the card's self-/transfer tests and the shift test say), and a table
per question and answer prints the true fraction, the prior the catalog uses, the ungated
EM estimate, their relative errors, the EM error over its statistical error and both
runs' shift tests (where the catalog keeps ``P_T``, its error over the sampling error of
two samples, the m labelled answers ``P_T`` was counted on and the survey's n:
se^2 = p (1 - p) (1/m + 1/n), ``model_morph_kept_prior_max_abs_z``); a closing table
compares the variants (worst relative error on the shifted survey, questions with a
significant shift on the training-mix survey). With the
trained morphology model (8000-object surveys) the recalibrated BCTS maps make no false
detection on the training-mix survey; the shipped card's maps (fitted in training
conditions) detect a roundness shift there because their cigar outputs do not carry over
to the held-out conditions (mean calibrated P(cigar) over the true smooth galaxies 0.005
against a true 0.031; 0.044 with maps refitted on held-out stamps): a calibration
transfer failure, not the tree weights. EM over the joint leaves of the tree (product of
per-question priors) was tried and not adopted: better with the exact synthetic
classifier (worst relative error 0.050 -> 0.035), worse with the trained model (shifted
survey, recalibrated maps: t/smooth -1.6% -> +11%, bulge_size/moderate +79% -> +107%),
since it feeds every child question's misfit back into its parents and its product prior
cannot express correlated answers (most mergers have large bulges).
Bulge size is asked of single face-on galaxies, not of mergers (tilecat.priors.tree).
Asked of mergers too (before session 8), EM overestimated "moderate" on the shifted
survey by +79% (seed 0) and +78% (seed 1), recalibrated maps: with mergers 10x rarer,
p(x | bulge size) changes (mergers' primaries are ellipticals and lenticulars, their
bulges moderate or large), which label-shift EM cannot follow. Among single galaxies the
survey's shift leaves p(x | bulge size) alone: ungated EM none/small/moderate/large
+3.7/-25.8/+11.5/+2.6% (seed 0), -5.7/+6.4/-3.2/+5.7% (seed 1), and the shift test keeps
the training prior (p 0.017, 0.11; errors <= 10%).
Bar is asked of single face-on galaxies too (session 9): the simulator gives no merger a
bar, so with mergers in the question a quarter of the balanced face-on sample sat in
"none", and 10x fewer mergers changed p(x | bar = none) (seed 1: ungated EM bar/weak
+107%). Among single galaxies the shift leaves the bar mix alone; ungated EM
strong/weak/none -3.7/-1.1/+0.8% (seed 0), -15.0/+21.3/-1.6% (seed 1, z -1.0/+1.0:
statistical). The seed-0 bar map fails the EM self-test on its 4000-stamp labelled set
(error 0.085, tolerance 0.067) and the catalog keeps P_T (labelled fractions, errors
+11/+21/-5%, about two standard errors of the ~1700 labelled and ~900 surveyed
answers). With larger sets (``--n-cal 8000 --morph-n-survey 32000``; 12372 objects in the
shifted survey) the bar map passes the self-test and EM is used: strong/weak/none
-10.1/+13.9/-0.5% (z -1.3/+1.1), the worst used error of the recalibrated variant; but the
training-mix survey of 32000 objects then rejects P_T for bar, bulge size and roundness
(ungated p 3e-6, 0.006, 8e-7; EM bar/strong -10.6%, z -2.5): calibration residuals of
maps fitted on 8000 labelled stamps, which the shift test (calibration taken as exact)
does not allow for.
The class shift tests are therefore two-sample by default (``aggregate.shift_test_labelled``,
:func:`tilecat.priors.em.shift_test`: LR m / (m + n_eff), m the labelled answers of the
card's calibration set). Default sizes, recalibrated maps: the training-mix surveys make
no detection any more (before: bulge size p 0.00089, seed 0, EM small/moderate
-19/+31%; roundness p 0.0001, seed 1, EM cigar +101%), mean |post - cal| 0.0035 -> 0
(seed 0) and 0.0016 -> 0 (seed 1); the shifted surveys keep every real shift (t,
edge_on, merger, spiral_arms: p <= 0.0024, seed 0; <= 3e-5, seed 1) and their errors.
What stays above 10% is the noise of the labelled fractions that the catalog keeps as
P_T (seed 0 bar/weak +20.5%; seed 1 roundness/cigar +34%, from 21 labelled cigars) and
the card's maps fitted in other observing conditions (roundness/cigar +86% / +77%). With
``--n-cal 8000 --morph-n-survey 32000`` (seed 0) the training mix makes no detection
either (mean |post - cal| 0), bar keeps P_T (LR2 p 0.1; errors +7.9/+13.0/-3.5%, ungated
EM -10.1/+13.9/-0.5%), the worst used error is 13.0% (bar/weak) and the ECE goes from
0.0157 (raw) to 0.0080 (post).
At ``--n-cal 24000 --morph-n-survey 96000`` (~37000 objects in the shifted survey; session
10) the labelled fractions are precise enough for the target to measure the method: every
kept P_T is within 1.7 sampling standard errors (two-sample z above). Seed 0: every used
prior within 10% (worst bulge_size/large +9.4%; merger/yes +1.6%, edge_on/yes -0.1%), ECE
0.0139 -> 0.0044; the training mix detects roundness (p 0.0083; EM cigar +34%). Seed 1:
roundness fails on both surveys (shifted cigar +59%, p 0.0012; training mix cigar +81%,
p 3e-8). With the sampling noise gone, EM's own systematics show, the same in both seeds
and both surveys: roundness/round -8% (z -4 to -7), bulge_size/large +9% (z +4.7),
spiral_arms/yes +6 to +7% (z +4 to +5): the calibrated maps are not calibrated finely
enough for EM at these sizes (the two-sample test allows for the labelled set's sampling
error, not for a misfit of the map's form). Isotonic maps are worse (seed 0: roundness/cigar
+50% on the shifted survey; bar, bulge size and roundness detected on the training mix).
Those systematics were the tree weights leaking (session 11): a conditional question's
map is fitted on the objects it applies to, but EM averages its outputs over every
object weighted by the probability of reaching it, and an object of another branch adds
its outputs for a question that does not apply to it (an edge-on disk 5% "smooth" adds
5% of a "cigar"). On the seed-1 labelled set the reach-weighted mean of the calibrated
roundness was round 0.377 / cigar 0.0375 against fractions 0.402 / 0.030, so EM moved
off P_T on the very set the maps were fitted on. Tree-consistent maps
(:mod:`tilecat.calibrate.reach`: each conditional question's BCTS biases offset so that
P_T is a fixed point of EM on the labelled set; the default with BCTS) remove it. Same
sets, recalibrated variant: the training-mix surveys make no detection in either seed
(roundness p 0.083 / 0.078); shifted surveys, seed 0 / seed 1: every prior EM estimates
within 10% (spiral_arms/yes +8.4% / +7.2%, z +5.7 / +4.9: its "no" answer mixes
featured mergers, lenticulars and irregulars, and with mergers 10x rarer p(x | no)
changes, the largest label-shift violation of the mean calibrated output, 0.030 / 0.027;
merger/yes +1.7% / +3.2%; edge_on/yes +0.1% / -0.5%; t/smooth -3.1% / -3.2%), ungated EM
roundness/round -2.8% / -1.0% (was -8%), bulge_size/large +1.8% / +2.3% (was +9%). What
stays above 10% is a
prior kept at P_T: roundness/cigar, 3% of the 12% smooth galaxies (0.43% of the survey's
objects), whose P_T comes from ~100 labelled cigars (seed 1 -12.4%, z -1.0). Over the
answers that are at least 1% of the survey's objects (``used, >= 1% of objects``;
``model_morph_prevalent_prior_max_rel_err``) the worst used error is 8.4% / 7.2%.
With a labelled set four times larger (``--n-cal 96000``; ~13700 labelled smooth
galaxies, ~460 cigars) every answer >= 1% of its question is within 10% on the shifted
survey in both seeds (seed 0 / seed 1): worst spiral_arms/yes +8.4% / +6.4% (EM),
roundness/cigar +4.0% / -4.3% (kept P_T), merger/yes +2.9% / +1.8%, ECE 0.0139 -> 0.0042 /
0.0142 -> 0.0052; the training mix again makes no detection (_post = _cal).
The shipped card is now calibrated the same way on 24000 training-condition stamps with
the transfer test on 24000 held-out ones (for seed 0 the sets of the ``transfer``
variant): in the held-out conditions its transfer test keeps EM off roundness, bar and
bulge size; worst used error merger/yes +20.5% / +19.0% (a map fitted in other observing
conditions, not precise enough for a 1.4% class); on the training mix it detects merger
and spiral arms (calibration-transfer residuals) but changes little (mean |post - cal|
0.0007 / 0.0006). A survey in other conditions should recalibrate on a labelled
subsample of its own (``tilecat calibrate``), as the ``recalibrated`` variant does.

    python benchmarks/priors.py [--tiles 20 --per-tile 5000] [--no-real] [--n-survey 16000]
        [--morph-n-survey 8000] [--morph-sim-config config/stamps/morphology-bars.yaml]
        [--shift-test-alpha 0.01] [--method bcts] [--models morphology,photoz]

The last line is a JSON object: ece_raw, ece_cal, ece_post, prior_max_rel_err,
pit_ks_raw, pit_ks_post, nz_ks_raw, nz_ks_post (synthetic, shifted survey), the
training-mix checks (trainmix_*), and the trained models' figures (model_*, with
model_morph_card_* for the shipped calibration and model_morph_transfer_* for the
transfer-tested one; null when a model is not shipped), the photo-z model's
training-mix figures (model_trainmix_*), the shift tests' p-values (*_shift_p) and, per
morphology variant (``morph_variants``), the worst relative errors of the priors used and
of ungated EM and the ungated shift tests' p-values on both surveys.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tilecat.aggregate import run_aggregate
from tilecat.atomic import atomic_path
from tilecat.calibrate import run_calibrate
from tilecat.calibrate.fit import METHODS
from tilecat.calibrate.groups import group_values
from tilecat.config import load_config
from tilecat.morphology.labels import encode
from tilecat.morphology.tree import QUESTIONS, question
from tilecat.photoz.grid import DEFAULT_GRID, ZGrid
from tilecat.priors import synthetic as syn
from tilecat.priors.em import SHIFT_TEST_ALPHA
from tilecat.priors.simsurvey import write_survey, write_synthetic_survey
from tilecat.priors.uncertainty import prior_standard_errors
from tilecat.qa.scores import (catalog_groups, morphology_scores, nz_distances, photoz_scores,
                               prior_errors, true_fractions)

LABELS = [q.truth for q in QUESTIONS]


def evaluate(catalog: Path, truth: pa.Table) -> dict[str, Any]:
    """Scores of a survey catalog against ``truth`` (rows in the catalog's order)."""
    table = pq.read_table(catalog)
    meta = json.loads(table.schema.metadata[b"tilecat.priors"])
    groups = catalog_groups(table.schema)
    out: dict[str, Any] = {"n": table.num_rows, "em": {k: v for k, v in meta["em"].items()
                                                       if k not in ("log", "shift_test")}}
    out["shift_tests"] = {q: v["shift_test"] for q, v in meta["groups"].items()
                          if "shift_test" in v}
    morph = [g for g in groups if not g.list_column]
    if morph:
        targets = encode({c: np.asarray(truth[c].to_pylist()) for c in LABELS})
        ms = morphology_scores(table, targets, morph)
        true = true_fractions(targets)
        used = {q: v["used"] for q, v in meta["groups"].items() if q != "z"}
        pe = prior_errors(used, true)
        train = {q: v["train"] for q, v in meta["groups"].items() if q != "z"}
        # each answer's share of all the survey's objects (its prevalence in the survey:
        # the path's share times the conditional fraction), the reading of the target's
        # "classes with >= 1% prevalence" under which a rare answer of a rare branch
        # (roundness/cigar: 3% of 12% smooth galaxies) is not scored
        share = {q.name: [float((targets[:, j] == k).mean()) for k in range(len(q.answers))]
                 for j, q in enumerate(QUESTIONS) if q.name in used}
        out["share"] = share
        out["prior_prevalent"] = _worst(used, true, share)
        out.update(ece=ms["ece"], brier=ms["brier"], prior=pe, true=true, used=used,
                   train=train, per_question={q: {s: round(v["ece"], 4) for s, v in d.items()}
                                              for q, d in ms["questions"].items()})
        # statistical error of each EM estimate (over the objects the question applies
        # to by truth) and the mean calibrated output per true class (label shift
        # assumes these do not change between surveys)
        index = {q.name: j for j, q in enumerate(QUESTIONS)}
        z, means, kept_z = {}, {}, {}
        for g in morph:
            y = targets[:, index[g.name]]
            ok = y >= 0
            pc = group_values(table, g, "cal")[ok]
            means[g.name] = [pc[y[ok] == c].mean(axis=0).tolist() if (y[ok] == c).sum() >= 5
                             else None for c in range(len(g.labels))]
            if meta["groups"][g.name]["source"] != "em":
                # P_T kept: its error against the survey's realised fractions is the
                # sampling noise of two samples, the m labelled answers P_T was counted
                # on and the survey's own answers: se^2 = p (1 - p) (1/m + 1/n)
                m = out["shift_tests"].get(g.name, {}).get("n_labelled", 0.0)
                if m > 0 and ok.sum() >= 20:
                    kept_z[g.name] = [
                        [k, float((used[g.name][k] - p) / np.sqrt(p * (1 - p)
                                                                  * (1 / m + 1 / ok.sum())))]
                        for k, p in enumerate(true[g.name]) if p >= 0.01]
                continue
            if ok.sum() < 20:
                continue
            se = prior_standard_errors(pc, train[g.name], used[g.name])
            z[g.name] = [[k, float((used[g.name][k] - true[g.name][k]) / se[k]), float(se[k])]
                         for k in range(len(g.labels)) if true[g.name][k] >= 0.01]
        out["em_z"] = z
        out["kept_z"] = kept_z
        out["max_abs_z"] = max((abs(v[1]) for rows in z.values() for v in rows), default=None)
        out["class_means"] = means
        out["source"] = {q: v["source"] for q, v in meta["groups"].items()}
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


def _worst(used: dict[str, Any], true: dict[str, Any], share: dict[str, Any] | None = None,
           cut: float = 0.01) -> tuple[float | None, str | None]:
    """Largest relative error of the priors ``used`` and which answer (``question/answer``).

    Over answers whose true fraction among the objects the question applies to is at
    least ``cut`` or, with ``share``, whose share of all the survey's objects is.
    """
    best: tuple[float | None, str | None] = (None, None)
    for q, fractions in true.items():
        for k, tr in enumerate(fractions):
            if (share[q][k] if share is not None else tr) >= cut and tr > 0:
                r = abs(_rel(used[q][k], tr))
                if best[0] is None or r > best[0]:
                    best = (r, f"{q}/{question(q).answers[k]}")
    return best


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
        err, worst = ev["prior_prevalent"]
        if err is not None:
            print(f"  largest relative error of the priors used, answers >= 1% of the survey's "
                  f"objects: {err:.4f} ({worst})")
        gated = [q for q, v in ev["source"].items() if q != "z" and v != "em"]
        if gated:
            print(f"  not estimated by EM (training prior used): {', '.join(gated)}")
        if ev["em_z"]:
            print("  EM error / its statistical error (answers >= 1%): " + "; ".join(
                f"{q} " + " ".join(f"{v[1]:+.1f}" for v in rows)
                for q, rows in ev["em_z"].items()))
        if ev.get("kept_z"):
            print("  training prior kept: its error / the sampling error of labelled set and "
                  "survey (answers >= 1%): " + "; ".join(
                      f"{q} " + " ".join(f"{v[1]:+.1f}" for v in rows)
                      for q, rows in ev["kept_z"].items()))
        print(f"  mean |post - cal| = {ev['mean_abs_post_minus_cal']:.4f}, largest "
              f"|estimated - training prior| = {ev['max_prior_shift']:.4f}")
    if ev.get("shift_tests"):
        print("  shift tests (statistic, dof, p; EM estimate used?): " + "; ".join(
            f"{q} {_TEST_ABBREV.get(t['test'], 'tilt')} {t['statistic']:.2f} "
            f"{t['dof']} {t['p_value']:.2g} {'EM' if t['used_em'] else 'kept'}"
            for q, t in ev["shift_tests"].items()))
    if "pit_ks" in ev:
        print("  photo-z PIT KS: " + ", ".join(f"{s} {v:.4f}" for s, v in ev["pit_ks"].items())
              + "; CRPS: " + ", ".join(f"{s} {v:.4f}" for s, v in ev["crps"].items()))
        print("  N(z) KS (summed PDFs vs true): " + ", ".join(
            f"{s} {v:.4f}" for s, v in ev["nz_ks"].items())
              + f"; EM N(z) vs true {ev['nz_ks_prior']:.4f}")


#: class calibration methods the trained morphology model can be recalibrated with (``--method``)
CLASS_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m not in ("pit", "bcts+pit"))
#: aggregate settings of the "ungated" run: EM on every question, whatever the card's
#: self-/transfer tests and the shift test say (its estimate and test are then printed
#: for every question, also those the catalog keeps at P_T)
UNGATED: dict[str, Any] = {"shift_test_alpha": 0.0, "em_require_self_test": False}


#: short names of the shift tests (tilecat.priors.em.shift_test) in the printed lines
_TEST_ABBREV = {"likelihood ratio": "LR", "two-sample likelihood ratio": "LR2"}


def _rel(est: float, true: float) -> float:
    return (est - true) / true if true > 0 else float("nan")


def _print_classes(ev: dict[str, Any], ungated: dict[str, Any] | None, alpha: float) -> None:
    """Per question and answer: true fraction, the prior the catalog uses and, from the
    ``ungated`` run (EM on every question), the EM estimate, both relative errors, the
    EM error over its statistical error (z) and the shift test of each run (``*``: p <
    ``alpha``)."""
    print("  per class (used: prior of the catalog = EM if estimated and not gated, else P_T; "
          "EM: ungated run, every question by EM; rel = (est - true) / true; "
          "'<1%': not scored by the target)")
    for q, true in ev["true"].items():
        src = ev["source"].get(q, "?")
        t = ev["shift_tests"].get(q)
        gated = (f"test {_TEST_ABBREV.get(t['test'], 'tilt')} {t['statistic']:.2f} "
                 f"dof {t['dof']} p {t['p_value']:.2g}"
                 if t else "no test (not estimated)")
        line = f"  {q:11s} used: {src.split(' (')[0]}; {gated}"
        z_rows: dict[int, float] = {}
        kept = {int(v[0]): v[1] for v in ev.get("kept_z", {}).get(q, [])}
        if ungated is not None:
            tu = ungated["shift_tests"].get(q)
            if tu:
                flag = " *" if tu["p_value"] < alpha else ""
                line += f" | ungated EM: LR {tu['statistic']:.2f} p {tu['p_value']:.2g}{flag}"
            z_rows = {int(v[0]): v[1] for v in ungated.get("em_z", {}).get(q, [])}
        print(line)
        for k, tr in enumerate(true):
            used = ev["used"][q][k]
            row = (f"      {question(q).answers[k]:9s} true {tr:.4f}  P_T {ev['train'][q][k]:.4f}"
                   f"  used {used:.4f} ({_rel(used, tr):+.3f}"
                   + (f", z {kept[k]:+.1f})" if k in kept else ")"))
            if ungated is not None:
                em = ungated["used"][q][k]
                z = z_rows.get(k)
                row += f"  EM {em:.4f} ({_rel(em, tr):+.3f}" + (
                    f", z {z:+.1f})" if z is not None else ")")
            sh = ev["share"][q][k]
            print(row + ("  <1%" if tr < 0.01 else "")
                  + (f"  ({100 * sh:.2f}% of objects)" if sh < 0.01 else ""))


def _class_summary(ev: dict[str, Any], ungated: dict[str, Any] | None,
                   alpha: float) -> dict[str, Any]:
    """Compact per-variant figures: worst relative error (answers >= 1%) of the priors used
    and of the ungated EM, and the ungated shift tests' p-values per question."""
    out: dict[str, Any] = {}
    out["max_rel_err"], out["worst"] = _worst(ev["used"], ev["true"])
    out["prevalent_max_rel_err"], out["prevalent_worst"] = ev["prior_prevalent"]
    if ungated is not None:
        out["em_max_rel_err"], out["em_worst"] = _worst(ungated["used"], ev["true"])
        out["em_shift_p"] = {q: float(f"{t['p_value']:.3g}")
                             for q, t in ungated["shift_tests"].items()}
        out["em_significant"] = sorted(q for q, p in out["em_shift_p"].items() if p < alpha)
    for k in ("max_rel_err", "em_max_rel_err", "prevalent_max_rel_err"):
        if out.get(k) is not None:
            out[k] = round(float(out[k]), 4)
    return out


def _print_method_summary(res: dict[str, Any], alpha: float) -> None:
    """One line per morphology variant: training-mix false detections and shifted errors."""
    print(f"\n--- morphology: calibration variants compared (shift test level {alpha:g}; "
          "'EM' = ungated run, every question by EM; errors over answers >= 1%)")
    print(f"  {'variant':25s} {'method':12s} {'shifted: worst used':30s} "
          f"{'used, >= 1% of objects':30s} {'worst ungated EM':30s} "
          "training mix: p < alpha (ungated EM)")
    for key, v in res.items():
        if not key.endswith(" summary"):
            continue
        t, s = v["training mix"], v["shifted"]
        sig = ", ".join(f"{q} {t['em_shift_p'][q]:.2g}" for q in t.get("em_significant", []))
        used = f"{s['max_rel_err']:.3f} {s['worst']}"
        prevalent = f"{s['prevalent_max_rel_err']:.3f} {s['prevalent_worst']}"
        em = f"{s.get('em_max_rel_err', float('nan')):.3f} {s.get('em_worst') or '-'}"
        print(f"  {key[len('morphology '):-len(' summary')]:25s} {v['method']:12s} "
              f"{used:30s} {prevalent:30s} {em:30s} {sig or 'none'}")


def synthetic_part(work: Path, tiles: int, per_tile: int, seed: int,
                   config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Part A: both surveys (``config``: sections merged over the defaults); returns their
    evaluations."""
    res = {}
    for name, mix, nz in (("shifted", syn.shifted_mix(), syn.nz_shape(DEFAULT_GRID, 0.5)),
                          ("training mix", syn.TRAIN_MIX, syn.nz_shape(DEFAULT_GRID, 0.35))):
        t0 = time.perf_counter()
        s = write_synthetic_survey(work / name.replace(" ", "_"), mix=mix, nz=nz, n_tiles=tiles,
                                   per_tile=per_tile, seed=seed, config=config)
        for m in ("morphology", "photoz"):
            run_calibrate(s.models[m], s.labelled, log=lambda msg: None)
        cat = run_aggregate(load_config(s.config))
        ev = evaluate(cat, pq.read_table(s.truth))
        ev["seconds"] = round(time.perf_counter() - t0, 1)
        _print_eval(f"synthetic exact classifier, {name} survey ({ev['seconds']} s)", ev)
        res[name] = ev
    return res


# --------------------------------------------------------------------- trained models
def _outputs(model: str, mdir: Path, stamps: Path, cache: Path) -> pa.Table:
    """Raw model outputs + truth labels of a stamp set (cached by weights checksum and set)."""
    from tilecat.calibrate.labelled import stamp_outputs
    from tilecat.models import load_card

    card = load_card(mdir)
    out = cache / f"{model}-{str(card['sha256'])[:12]}-{stamps.stem}.parquet"
    if out.exists():
        return pq.read_table(out)
    t0 = time.perf_counter()
    cols, labels = stamp_outputs(card, mdir, stamps, log=lambda msg: None)[:2]
    keep = (["z_true", "t_class", "kind", "snr"] if model == "photoz"
            else LABELS + ["kind", "redshift", "snr"])
    print(f"ran {model} over {stamps.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    arrays = {}
    for k, v in cols.items():
        v = np.asarray(v)
        arrays[k] = pa.array(list(v)) if v.ndim == 2 else pa.array(v)
    for k in keep:
        if k in labels and labels[k] is not None:
            arrays[k] = pa.array(np.asarray(labels[k]).tolist())
    table = pa.table(arrays)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return table


def _resample(table: pa.Table, weights: np.ndarray, seed: int) -> pa.Table:
    """Rejection resample: keep row i with probability w_i / max(w)."""
    rng = np.random.default_rng(seed)
    keep = rng.random(len(weights)) < weights / weights.max()
    return table.filter(pa.array(keep))


def _shift(model: str, survey: pa.Table, seed: int) -> pa.Table:
    """The shifted survey: photo-z weight exp(2.5 z); morphology merger x0.1, edge-on x3."""
    if model == "photoz":
        return _resample(survey, np.exp(2.5 * np.asarray(survey["z_true"].to_pylist(), float)),
                         seed)
    kind = np.asarray(survey["kind"].to_pylist())
    return _resample(survey, np.where(kind == "merger", 0.1,
                                      np.where(kind == "edgeon", 3.0, 1.0)), seed)


def _aggregate(root: Path, model: str, mdir: Path, card: dict[str, Any], tab: pa.Table,
               config: dict[str, Any] | None = None) -> dict[str, Any]:
    out_cols = [c for c in tab.column_names
                if c.startswith("morph_") or (c.startswith("z_") and c != "z_true")]
    grid = ZGrid.from_meta(card["z_grid"]) if model == "photoz" else None
    cfg = write_survey(root, tab.select(out_cols), {model: mdir},
                       [{"name": model, "version": card.get("version"),
                         "sha256": card["sha256"]}], per_tile=2000, grid=grid, config=config)
    return evaluate(run_aggregate(load_config(cfg)), tab)


def _violation(shifted: dict[str, Any], trainmix: dict[str, Any]) -> dict[str, float]:
    """Per question: largest change of the mean calibrated output of a true class between
    the training-mix and the shifted survey (0 under pure label shift, up to noise)."""
    out = {}
    for q, rows in shifted.get("class_means", {}).items():
        pairs = zip(rows, trainmix["class_means"][q])
        diffs = [float(np.max(np.abs(np.subtract(a, b)))) for a, b in pairs
                 if a is not None and b is not None]
        if diffs:
            out[q] = max(diffs)
    return out


def _print_self_tests(card: dict[str, Any], title: str) -> None:
    section = card.get("calibration") or {}
    print(f"\n  --- {title} (class calibration method of the card: "
          f"{section.get('method', 'none')})")
    metrics = section.get("metrics") or {}
    for key in ("em_self_test", "em_transfer_test"):
        tests = {q: m[key] for q, m in metrics.items() if key in m}
        if tests:
            print(f"  {key.replace('_', ' ')} (error / tolerance): " + ", ".join(
                f"{q} {'ok' if t['ok'] else 'FAILED'} ({t['error']:.3f} / {t['tolerance']:.3f})"
                for q, t in tests.items()))


def real_part(work: Path, cache: Path, n_cal: int, n_survey: dict[str, int], seed: int,
              configs: dict[str, str | None], workers: int = 2,
              aggregate: dict[str, Any] | None = None,
              models: tuple[str, ...] = ("morphology", "photoz"),
              pdf_method: str = "bcts+pit",
              methods: tuple[str, ...] = ("bcts",)) -> dict[str, Any]:
    """Part B with whatever trained models are shipped.

    Parameters
    ----------
    n_survey, configs : dict
        Model -> survey stamp count and simulation YAML of its stamp sets (the
        population the model applies to; None: the demo survey).
    aggregate : dict, optional
        ``aggregate`` config settings of the surveys (default: the config defaults).
    pdf_method : str
        Photo-z PDF map of the recalibration (``tilecat calibrate --pdf-method``).
    models : tuple of str
        The trained models to run.
    methods : tuple of str
        Class calibration methods (``tilecat calibrate --method``) of the morphology
        ``recalibrated`` and ``transfer`` variants, one variant each (``bcts``: the plain
        names, others ``recalibrated-<method>``, ``transfer-<method>``). Every
        morphology survey is also aggregated "ungated" (:data:`UNGATED`) to print the
        EM estimate and shift test of every question.
    """
    from tilecat.calibrate.stampsets import cached_stamp_set, shipped_models_with_stamps
    from tilecat.models import load_card

    import torch

    torch.set_num_threads(1)
    res: dict[str, Any] = {}
    for model, src, card, cal_set in shipped_models_with_stamps(cache, n_cal, seed, configs,
                                                                workers=workers,
                                                                models=models):
        cfg = configs.get(model)
        sur_set = cached_stamp_set(cache, "calib-survey", cfg, seed + 1, n_survey[model],
                                   workers=workers)
        print(f"\n=== trained {model} model (sha256 {card['sha256'][:12]}); stamp sets "
              f"{cal_set.name}, {sur_set.name}")
        lab = _outputs(model, src, cal_set, cache)
        survey = _outputs(model, src, sur_set, cache)
        shifted = _shift(model, survey, seed)
        meta = {}
        if model == "photoz":
            meta = {b"tilecat.z_grid": json.dumps(card["z_grid"]).encode()}
        # variant -> (labelled set to calibrate a copy on, check set of the EM transfer
        # test, description, class calibration method); None: the shipped card as it is
        morph = model == "morphology"
        variants: dict[str, Any] = {}
        for m in (methods if morph else ("bcts",)):
            tag = "" if m == "bcts" else f"-{m}"
            variants[f"recalibrated{tag}"] = (
                lab, None, f"recalibrated ({m}) on the held-out labelled set", m)
        if morph:
            section = card.get("calibration") or {}
            if section.get("groups"):
                # the shipped card: calibration fitted on another labelled set (training
                # conditions), applied to the held-out survey
                variants["card"] = (None, None, "the shipped card's calibration",
                                    section.get("method", "none"))
            # as the card, refitted here on a labelled set in training conditions, with
            # the EM transfer test on the held-out labelled set
            train_set = cached_stamp_set(cache, "calib-cal", cfg, seed, n_cal, heldout=False,
                                         workers=workers)
            train_out = _outputs(model, src, train_set, cache)
            for m in methods:
                tag = "" if m == "bcts" else f"-{m}"
                variants[f"transfer{tag}"] = (
                    train_out, lab, f"calibrated ({m}) on training conditions + EM transfer "
                                    "test on the held-out labelled set", m)
        # level at which the printed tables flag a significant shift (the gating level of
        # the surveys, or the default when they run ungated)
        alpha = float((aggregate or {}).get("shift_test_alpha") or SHIFT_TEST_ALPHA)
        for variant, (fit_on, check, what, method) in variants.items():
            if fit_on is None:
                mdir = src
            else:
                mdir = work / "models" / f"{model}-{variant}"
                shutil.copytree(src, mdir, dirs_exist_ok=True)
                labelled = work / f"{model}-{variant}-labelled.parquet"
                pq.write_table(fit_on.replace_schema_metadata(meta), labelled)
                check_path = None
                if check is not None:
                    check_path = work / f"{model}-{variant}-check.parquet"
                    pq.write_table(check.replace_schema_metadata(meta), check_path)
                # photo-z: the PDF map of --pdf-method (default the card default,
                # BCTS + PIT map)
                run_calibrate(mdir, labelled, method=method, pdf_method=pdf_method,
                              check=check_path, log=lambda msg: None)
            used_card = load_card(mdir)
            _print_self_tests(used_card, what)
            summary: dict[str, Any] = {"method": method}
            for name, tab in (("shifted", shifted), ("training mix", survey)):
                root = work / f"{model}-{variant}-{name.replace(' ', '_')}"
                ev = _aggregate(root, model, mdir, used_card, tab,
                                {"aggregate": dict(aggregate)} if aggregate else None)
                _print_eval(f"trained {model} model, {what}, {name} survey", ev)
                res[f"{model} {variant} {name}"] = ev
                if morph:
                    ungated = _aggregate(root.with_name(root.name + "-ungated"), model, mdir,
                                         used_card, tab,
                                         {"aggregate": {**(aggregate or {}), **UNGATED}})
                    _print_classes(ev, ungated, alpha)
                    summary[name] = _class_summary(ev, ungated, alpha)
            if morph:
                res[f"{model} {variant} summary"] = summary
                v = _violation(res[f"{model} {variant} shifted"],
                               res[f"{model} {variant} training mix"])
                res[f"{model} {variant} violation"] = v
                print("  label shift check: largest change of E[p_cal | true class] from the "
                      "training-mix to the shifted survey: " + ", ".join(
                          f"{q} {d:.3f}" for q, d in v.items()))
        if morph:
            _print_method_summary(res, alpha)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=20, help="synthetic tiles")
    p.add_argument("--per-tile", type=int, default=5000, help="synthetic objects per tile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-real", action="store_true", help="skip the trained models")
    p.add_argument("--n-cal", type=int, default=4000, help="held-out stamps for calibration")
    p.add_argument("--n-survey", type=int, default=16000,
                   help="held-out stamps for the photo-z survey")
    p.add_argument("--morph-n-survey", type=int, default=8000,
                   help="held-out stamps for the morphology survey")
    p.add_argument("--morph-sim-config", default="config/stamps/morphology-bars.yaml",
                   help="simulation YAML of the morphology stamp sets: the population the "
                        "morphology model applies to ('demo': the demo survey)")
    p.add_argument("--photoz-sim-config", default="demo",
                   help="simulation YAML of the photo-z stamp sets (default: the demo survey, "
                        "the empirical population the photo-z model was trained on)")
    p.add_argument("--workers", type=int, default=2, help="stamp simulation processes")
    p.add_argument("--models", default="morphology,photoz",
                   help="trained models to run (comma-separated)")
    p.add_argument("--em-prior-strength", type=float, default=None,
                   help="aggregate.em_prior_strength of the trained-model surveys (default: "
                        "the config default)")
    p.add_argument("--nz-prior-strength", type=float, default=None,
                   help="aggregate.nz_prior_strength of the trained-model surveys (default: "
                        "the config default)")
    p.add_argument("--nz-smooth", type=int, default=None,
                   help="aggregate.nz_smooth of the trained-model surveys (default: the "
                        "config default)")
    p.add_argument("--pdf-method", default="bcts+pit", choices=["bcts+pit", "pit", "temperature"],
                   help="photo-z PDF map of the recalibration (default: %(default)s)")
    p.add_argument("--method", default="bcts",
                   help="class calibration method(s) of the morphology 'recalibrated' and "
                        "'transfer' variants, comma-separated, one variant each (tilecat "
                        f"calibrate --method; known: {', '.join(CLASS_METHODS)}; default: "
                        "%(default)s, the card default)")
    p.add_argument("--shift-test-alpha", type=float, default=None,
                   help="aggregate.shift_test_alpha of every survey (default: the config "
                        "default; 0: EM estimates always used, the tests only printed)")
    p.add_argument("--cache", default="benchmarks/.cache", help="stamp sets and model outputs")
    a = p.parse_args()
    methods = tuple(m.strip() for m in a.method.split(",") if m.strip())
    bad = [m for m in methods if m not in CLASS_METHODS]
    if bad or not methods:
        p.error(f"--method: unknown class calibration method(s) {bad}; known: "
                f"{', '.join(CLASS_METHODS)}")
    configs = {"morphology": None if a.morph_sim_config == "demo" else a.morph_sim_config,
               "photoz": None if a.photoz_sim_config == "demo" else a.photoz_sim_config}
    work = Path(tempfile.mkdtemp(prefix="tilecat-priors-"))
    try:
        syn_res = synthetic_part(work / "synthetic", a.tiles, a.per_tile, a.seed,
                                 None if a.shift_test_alpha is None else
                                 {"aggregate": {"shift_test_alpha": a.shift_test_alpha}})
        real: dict[str, Any] = {}
        if not a.no_real:
            cache = Path(a.cache)
            cache.mkdir(parents=True, exist_ok=True)
            real = real_part(work / "real", cache, a.n_cal,
                             {"morphology": a.morph_n_survey, "photoz": a.n_survey},
                             7101 + a.seed, configs, workers=a.workers,
                             aggregate={k: v for k, v in (
                                 ("em_prior_strength", a.em_prior_strength),
                                 ("nz_prior_strength", a.nz_prior_strength),
                                 ("nz_smooth", a.nz_smooth),
                                 ("shift_test_alpha", a.shift_test_alpha)) if v is not None}
                             or None,
                             models=tuple(a.models.split(",")), pdf_method=a.pdf_method,
                             methods=methods)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s, t = syn_res["shifted"], syn_res["training mix"]
    m_s = real.get("morphology recalibrated shifted", {})
    m_t = real.get("morphology recalibrated training mix", {})
    c_s = real.get("morphology card shifted", {})
    c_t = real.get("morphology card training mix", {})
    x_s = real.get("morphology transfer shifted", {})
    x_t = real.get("morphology transfer training mix", {})
    z_s = real.get("photoz recalibrated shifted", {})
    z_t = real.get("photoz recalibrated training mix", {})

    def r(v: Any) -> Any:
        return None if v is None else round(float(v), 5)

    def shift_p(ev: dict[str, Any], q: str) -> Any:
        t = ev.get("shift_tests", {}).get(q)
        return None if t is None else float(f"{t['p_value']:.3g}")

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
        "model_morph_prevalent_prior_max_rel_err": r(m_s.get("prior_prevalent", (None,))[0]),
        "model_morph_prior_max_abs_z": r(m_s.get("max_abs_z")),
        "model_morph_kept_prior_max_abs_z": r(max(
            (abs(v[1]) for rows in m_s.get("kept_z", {}).values() for v in rows),
            default=None)),
        "model_morph_em_questions": sorted(q for q, v in m_s.get("source", {}).items()
                                           if v == "em") if m_s else None,
        "model_morph_label_shift_violation": r(max(real.get(
            "morphology recalibrated violation", {}).values(), default=None)),
        "model_morph_trainmix_mean_abs_post_minus_cal": r(m_t.get("mean_abs_post_minus_cal")),
        "model_morph_trainmix_prior_max_rel_err": r(m_t.get("prior", {}).get("max_rel_err")),
        "model_morph_trainmix_prevalent_prior_max_rel_err": r(
            m_t.get("prior_prevalent", (None,))[0]),
        "model_morph_trainmix_ece_cal": r(m_t.get("ece", {}).get("cal")),
        "model_morph_trainmix_ece_post": r(m_t.get("ece", {}).get("post")),
        "model_morph_card_ece_cal": r(c_s.get("ece", {}).get("cal")),
        "model_morph_card_ece_post": r(c_s.get("ece", {}).get("post")),
        "model_morph_card_prior_max_rel_err": r(c_s.get("prior", {}).get("max_rel_err")),
        "model_morph_card_trainmix_prior_max_rel_err": r(c_t.get("prior", {}).get(
            "max_rel_err")),
        "model_morph_card_em_questions": sorted(q for q, v in c_s.get("source", {}).items()
                                                if v == "em") if c_s else None,
        "model_morph_transfer_ece_post": r(x_s.get("ece", {}).get("post")),
        "model_morph_transfer_prior_max_rel_err": r(x_s.get("prior", {}).get("max_rel_err")),
        "model_morph_transfer_trainmix_prior_max_rel_err": r(x_t.get("prior", {}).get(
            "max_rel_err")),
        "model_morph_transfer_em_questions": sorted(q for q, v in x_s.get("source", {}).items()
                                                    if v == "em") if x_s else None,
        "model_pit_ks_raw": r(z_s.get("pit_ks", {}).get("raw")),
        "model_pit_ks_post": r(z_s.get("pit_ks", {}).get("post")),
        "model_nz_ks_raw": r(z_s.get("nz_ks", {}).get("raw")),
        "model_nz_ks_post": r(z_s.get("nz_ks", {}).get("post")),
        "model_nz_shift_p": shift_p(z_s, "z"),
        "model_trainmix_pit_ks_cal": r(z_t.get("pit_ks", {}).get("cal")),
        "model_trainmix_pit_ks_post": r(z_t.get("pit_ks", {}).get("post")),
        "model_trainmix_nz_ks_cal": r(z_t.get("nz_ks", {}).get("cal")),
        "model_trainmix_nz_ks_post": r(z_t.get("nz_ks", {}).get("post")),
        "model_trainmix_nz_shift_p": shift_p(z_t, "z"),
        "model_morph_merger_yes_est": r(m_s["used"]["merger"][0]) if m_s else None,
        "model_morph_merger_yes_true": r(m_s["true"]["merger"][0]) if m_s else None,
        "merger_shift_p": shift_p(s, "merger"), "nz_shift_p": shift_p(s, "z"),
        "trainmix_merger_shift_p": shift_p(t, "merger"),
        "trainmix_nz_shift_p": shift_p(t, "z"),
        # per morphology variant (recalibrated[-method], card, transfer[-method]): worst
        # relative error of the priors used and of ungated EM on each survey, and the
        # ungated shift tests' p-values
        "morph_variants": {k[len("morphology "):-len(" summary")]: v for k, v in real.items()
                           if k.startswith("morphology ") and k.endswith(" summary")} or None,
    }
    print()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
