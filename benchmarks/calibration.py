"""Calibration before/after: ECE, Brier and reliability per question; PIT KS and CRPS for photo-z.

Each calibration map is fitted on one labelled half and scored on the other (objects
drawn with the training mix, so this measures calibration alone; prior shifts are the
subject of ``benchmarks/priors.py``):

A. **Synthetic exact classifier** (always): exact posteriors distorted by a temperature
   (morphology tree: T = 0.6, photo-z PDFs: T = 0.7); temperature scaling, BCTS
   (temperature + class biases) and isotonic regression (morphology), temperature and
   the PIT-CDF map (photo-z).
B. **Trained models** shipped in ``tilecat/data/models`` (when present), on held-out
   galaxy stamps of the population each applies to (the morphology sample of
   ``--morph-sim-config``, default ``config/stamps/morphology-bars.yaml``; the demo survey
   for photo-z), cached in ``--cache`` under names encoding the simulation settings
   (:mod:`tilecat.calibrate.stampsets`; the same sets as ``benchmarks/priors.py``).
   The morphology card's shipped calibration (fitted on a labelled set in training
   conditions) is also scored as it is on all of the held-out stamps (``model_morph_card_*``).

    python benchmarks/calibration.py [-n 40000] [--no-real] [--n-cal 4000]
        [--morph-sim-config config/stamps/morphology-bars.yaml]

The last line is a JSON object: ece_raw, ece_cal (temperature), ece_bcts, ece_isotonic,
brier_raw, brier_cal, pit_ks_raw, pit_ks_cal, pit_ks_pitmap, crps_raw, crps_cal (synthetic),
and model_* for the trained models (null when not shipped).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from tilecat.calibrate.card import fit_card_calibration
from tilecat.calibrate.calibrators import from_dict
from tilecat.calibrate.groups import card_groups
from tilecat.calibrate.metrics import class_scores, pdf_scores
from tilecat.morphology.tree import QUESTIONS
from tilecat.photoz.grid import DEFAULT_GRID, ZGrid
from tilecat.priors import synthetic as syn
from tilecat.priors.simsurvey import synthetic_cards


def _summary(rows: dict[str, Any]) -> dict[str, Any]:
    """Per-question scores ``rows`` with ``{ece,brier}_{raw,cal}`` weighted by counts."""
    tot = {"raw": [0.0, 0.0, 0], "cal": [0.0, 0.0, 0]}
    for r in rows.values():
        for s in ("raw", "cal"):
            tot[s][0] += r[s]["n"] * r[s]["ece"]
            tot[s][1] += r[s]["n"] * r[s]["brier"]
            tot[s][2] += r[s]["n"]
    summary = {f"{m}_{s}": tot[s][i] / tot[s][2] for s in tot for i, m in ((0, "ece"),
                                                                           (1, "brier"))}
    return {"questions": rows, **summary}


def _morph_table(card: dict[str, Any], probs: dict[str, np.ndarray], targets: np.ndarray,
                 half: int, method: str) -> dict[str, Any]:
    """Fit on rows [:half], score raw and calibrated on rows [half:], per question."""
    tg = {q.name: targets[:, j] for j, q in enumerate(QUESTIONS)}
    fit = fit_card_calibration(card, {k: v[:half] for k, v in probs.items()},
                               targets={k: v[:half] for k, v in tg.items()}, method=method)
    rows = {}
    for q in QUESTIONS:
        y = tg[q.name][half:]
        ok = y >= 0
        if ok.sum() < 20:
            continue
        p = probs[q.name][half:][ok]
        cal = from_dict(fit["groups"][q.name])
        r = {"raw": class_scores(p, y[ok]), "cal": class_scores(cal.apply(p), y[ok]),
             "map": fit["groups"][q.name]}
        rows[q.name] = r
    return _summary(rows)


def _print_morph(title: str, res: dict[str, Any]) -> None:
    print(f"\n--- {title}")
    print(f"  {'question':12s} {'n':>6s} {'ECE raw':>8s} {'ECE cal':>8s} {'Brier raw':>10s} "
          f"{'Brier cal':>10s}  map")
    for q, r in res["questions"].items():
        m = r["map"]
        desc = (f"T = {m['temperature']:.3f}" if m.get("kind") == "temperature"
                else m.get("kind"))
        print(f"  {q:12s} {r['raw']['n']:6d} {r['raw']['ece']:8.4f} {r['cal']['ece']:8.4f} "
              f"{r['raw']['brier']:10.4f} {r['cal']['brier']:10.4f}  {desc}")
    print(f"  {'all':12s} {'':6s} {res['ece_raw']:8.4f} {res['ece_cal']:8.4f} "
          f"{res['brier_raw']:10.4f} {res['brier_cal']:10.4f}  (count-weighted)")


def _pdf(card: dict[str, Any], pdf: np.ndarray, z: np.ndarray, half: int, method: str,
         grid: ZGrid) -> dict[str, Any]:
    fit = fit_card_calibration(card, {"z": pdf[:half]}, z_true=z[:half], pdf_method=method)
    cal = from_dict(fit["groups"]["z"])
    return {"raw": pdf_scores(pdf[half:], grid, z[half:]),
            "cal": pdf_scores(cal.apply(pdf[half:]), grid, z[half:]), "map": fit["groups"]["z"]}


def _print_pdf(title: str, res: dict[str, Any]) -> None:
    r, c = res["raw"], res["cal"]
    m = res["map"]
    desc = f"T = {m['temperature']:.3f}" if m.get("kind") == "temperature" else m.get("kind")
    print(f"--- {title} ({desc}): n {r['n']}, PIT KS {r['pit_ks']:.4f} -> {c['pit_ks']:.4f}, "
          f"CRPS {r['crps']:.4f} -> {c['crps']:.4f}, NLL {r['nll']:.3f} -> {c['nll']:.3f}")
    print("    PIT histogram raw: " + " ".join(f"{v * len(r['pit_hist']):.2f}"
                                               for v in r["pit_hist"]))
    print("    PIT histogram cal: " + " ".join(f"{v * len(c['pit_hist']):.2f}"
                                               for v in c["pit_hist"]))


def synthetic(n: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    nzt = syn.nz_shape(DEFAULT_GRID, 0.35)
    cards = synthetic_cards(nzt, DEFAULT_GRID)
    targets = syn.draw_tree(n, syn.TRAIN_MIX, rng)
    raw, _ = syn.tree_outputs(targets, rng, temperature=0.6)
    out = {}
    for method, what in (("temperature", "temperature scaling"),
                         ("bcts", "bias-corrected temperature scaling"),
                         ("isotonic", "isotonic regression")):
        out[method] = _morph_table(cards["morphology"], raw, targets, n // 2, method)
        _print_morph(f"synthetic exact classifier distorted by T = 0.6: {what}", out[method])
    z = syn.draw_z(n, nzt, DEFAULT_GRID, rng)
    pt = np.maximum(nzt, 1e-6)
    pdf = np.concatenate([syn.photoz_outputs(z[i:i + 4096], pt / pt.sum(), DEFAULT_GRID, rng,
                                             temperature=0.7)[0] for i in range(0, n, 4096)])
    print()
    for method in ("temperature", "pit"):
        out[f"pdf_{method}"] = _pdf(cards["photoz"], pdf, z, n // 2, method, DEFAULT_GRID)
        _print_pdf(f"synthetic photo-z PDFs distorted by T = 0.7: {method}",
                   out[f"pdf_{method}"])
    return out


def _card_table(card: dict[str, Any], probs: dict[str, np.ndarray], targets: np.ndarray
                ) -> dict[str, Any]:
    """The shipped card's calibration maps as they are, scored on every row."""
    from tilecat.calibrate.card import card_calibrators

    cals = card_calibrators(card)
    rows = {}
    for j, q in enumerate(QUESTIONS):
        y = targets[:, j]
        ok = y >= 0
        if ok.sum() < 20 or q.name not in cals:
            continue
        p = probs[q.name][ok]
        r = {"raw": class_scores(p, y[ok]), "cal": class_scores(cals[q.name].apply(p), y[ok]),
             "map": cals[q.name].to_dict()}
        rows[q.name] = r
    return _summary(rows)


def real(cache: Path, n_cal: int, seed: int, configs: dict[str, str | None],
         workers: int = 2) -> dict[str, Any]:
    """Trained models on held-out stamps (fit on the first half, score the second).

    ``configs``: model -> simulation YAML of its stamp set (None: the demo survey).
    """
    import torch

    from tilecat.calibrate.labelled import load_labelled
    from tilecat.calibrate.stampsets import shipped_models_with_stamps

    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    for model, d, card, stamps in shipped_models_with_stamps(cache, n_cal, seed, configs,
                                                             workers=workers):
        lab = load_labelled(card, d, stamps, log=print)
        if model == "morphology":
            targets = np.stack([lab.targets[q.name] for q in QUESTIONS], axis=1)
            n = len(targets)
            for method in ("temperature", "bcts", "isotonic"):
                out[f"morphology_{method}"] = _morph_table(card, lab.probs, targets, n // 2,
                                                           method)
                _print_morph(f"trained morphology model (sha256 {card['sha256'][:12]}), "
                             f"held-out stamps {stamps.name}: {method}",
                             out[f"morphology_{method}"])
            if (card.get("calibration") or {}).get("groups"):
                fitted = card["calibration"].get("fitted_on") or {}
                out["morphology_card"] = _card_table(card, lab.probs, targets)
                _print_morph(f"trained morphology model: the card's calibration as shipped "
                             f"(fitted on {fitted.get('path')}, heldout "
                             f"{fitted.get('heldout')}), all {n} held-out stamps",
                             out["morphology_card"])
        else:
            grid = ZGrid.from_meta(card["z_grid"])
            g = card_groups(card)[0]
            n = len(lab.z_true)
            for method in ("temperature", "pit"):
                out[f"photoz_{method}"] = _pdf(card, lab.probs[g.name], lab.z_true, n // 2,
                                               method, grid)
                _print_pdf(f"trained photo-z model (sha256 {card['sha256'][:12]}), "
                           f"{stamps.name}: {method}", out[f"photoz_{method}"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=40000, help="synthetic objects (half to fit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-real", action="store_true", help="skip the trained models")
    p.add_argument("--n-cal", type=int, default=4000, help="held-out stamps of the models")
    p.add_argument("--morph-sim-config", default="config/stamps/morphology-bars.yaml",
                   help="simulation YAML of the morphology stamps: the population the "
                        "morphology model applies to ('demo': the demo survey)")
    p.add_argument("--photoz-sim-config", default="demo",
                   help="simulation YAML of the photo-z stamps (default: the demo survey, "
                        "the empirical population the photo-z model was trained on)")
    p.add_argument("--workers", type=int, default=2, help="stamp simulation processes")
    p.add_argument("--cache", default="benchmarks/.cache")
    a = p.parse_args()
    configs = {"morphology": None if a.morph_sim_config == "demo" else a.morph_sim_config,
               "photoz": None if a.photoz_sim_config == "demo" else a.photoz_sim_config}
    s = synthetic(a.n, a.seed)
    r: dict[str, Any] = {}
    if not a.no_real:
        cache = Path(a.cache)
        cache.mkdir(parents=True, exist_ok=True)
        r = real(cache, a.n_cal, 7101 + a.seed, configs, workers=a.workers)

    def f(v: Any) -> Any:
        return None if v is None else round(float(v), 5)

    m = r.get("morphology_temperature", {})
    mb = r.get("morphology_bcts", {})
    zt, zp = r.get("photoz_temperature", {}), r.get("photoz_pit", {})
    figures = {
        "ece_raw": f(s["temperature"]["ece_raw"]), "ece_cal": f(s["temperature"]["ece_cal"]),
        "ece_bcts": f(s["bcts"]["ece_cal"]), "ece_isotonic": f(s["isotonic"]["ece_cal"]),
        "brier_raw": f(s["temperature"]["brier_raw"]),
        "brier_cal": f(s["temperature"]["brier_cal"]),
        "pit_ks_raw": f(s["pdf_temperature"]["raw"]["pit_ks"]),
        "pit_ks_cal": f(s["pdf_temperature"]["cal"]["pit_ks"]),
        "pit_ks_pitmap": f(s["pdf_pit"]["cal"]["pit_ks"]),
        "crps_raw": f(s["pdf_temperature"]["raw"]["crps"]),
        "crps_cal": f(s["pdf_temperature"]["cal"]["crps"]),
        "model_morph_ece_raw": f(m.get("ece_raw")), "model_morph_ece_cal": f(m.get("ece_cal")),
        "model_morph_ece_bcts": f(mb.get("ece_cal")),
        "model_morph_ece_isotonic": f(r.get("morphology_isotonic", {}).get("ece_cal")),
        "model_morph_brier_raw": f(m.get("brier_raw")),
        "model_morph_brier_cal": f(m.get("brier_cal")),
        "model_morph_card_ece_raw": f(r.get("morphology_card", {}).get("ece_raw")),
        "model_morph_card_ece_cal": f(r.get("morphology_card", {}).get("ece_cal")),
        "model_pit_ks_raw": f(zt.get("raw", {}).get("pit_ks")),
        "model_pit_ks_cal": f(zt.get("cal", {}).get("pit_ks")),
        "model_pit_ks_pitmap": f(zp.get("cal", {}).get("pit_ks")),
        "model_crps_raw": f(zt.get("raw", {}).get("crps")),
        "model_crps_cal": f(zt.get("cal", {}).get("crps")),
    }
    print()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
