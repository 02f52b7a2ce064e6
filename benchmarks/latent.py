"""The shipped VAE on held-out stamps: reconstruction SSIM, morphology from latents,
outlier detection of injected anomalies.

Uses the same stamp stores as ``benchmarks/photoz.py`` (training: seeds 101/102,
held-out: seeds 201/202 with worse observing conditions; generated when missing).

* SSIM (Wang et al. 2004, Gaussian window, tilecat.latent.ssim) of the reconstruction
  from the posterior mean, per band with data_range = the reference's max - min,
  averaged over bands: against the *noiseless* held-out stamp (``vae_ssim``; the same
  objects, conditions and seeds rendered without noise, by running the simulator with
  a zero-variance noise model) and against the noisy input stamp
  (``vae_ssim_vs_noisy``). Against the noisy stamp even a perfect reconstruction
  scores low (the background noise has no structure to reproduce), so the figure
  comparable to Xu et al. (2023)'s ~0.86-0.88 on high-S/N DECaLS images is the first
  one; the SSIM of the noisy stamp itself against the noiseless one is printed too.
* Random forest (sklearn, 200 trees) on the 40 latents of training galaxies, predicting
  each morphology question's answer (tilecat.morphology tree, only where the question
  applies); accuracy on held-out galaxies per question, next to the majority-class rate.
* Outliers: half of the held-out galaxies are kept as normals, the other half get one
  injected anomaly each (trail or cosmic ray across the galaxy, blend of three, ring,
  lensed arc; tilecat.latent.anomalies), none of which occurs in training. ROC AUC of
  ``latent_outlier_score`` (Mahalanobis) and of ``recon_chi2``, overall and per kind.

    python benchmarks/latent.py [--cache DIR] [--model DIR]

The last line is a JSON object: vae_ssim, rf_latent_accuracy, vae_outlier_auc
(of latent_outlier_score), vae_outlier_auc_chi2 and more.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photoz import ROOT, ensure_sets  # noqa: E402


def noiseless_twin(cache: Path, name: str) -> Path:
    """The held-out store ``name`` rendered again without noise (same objects, conditions).

    The simulator draws noise from its own random stream, so replacing the per-pixel
    variance model (:meth:`tilecat.simulate.conditions.BandConditions.variance`) by a
    negligible one, in this process only, gives the noiseless twin of every stamp.
    """
    from photoz import SETS

    from tilecat.simulate import conditions
    from tilecat.simulate.config import load_sim_config
    from tilecat.simulate.stamps import make_galaxy_stamps

    path = cache / f"{name}-noiseless.zarr"
    if path.exists():
        return path
    pop, n, seed, held = SETS[name]
    print(f"generating the noiseless twin of {name}", flush=True)
    orig = conditions.BandConditions.variance
    conditions.BandConditions.variance = (  # type: ignore[method-assign]
        lambda self, model: np.full(np.shape(model), 1e-30))
    try:
        cfg = load_sim_config(None, overrides={"population": {"kind": pop}})
        make_galaxy_stamps(cfg, path, n, seed, heldout=held, workers=1)
    finally:
        conditions.BandConditions.variance = orig  # type: ignore[method-assign]
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache" / "photoz"))
    ap.add_argument("--model", default=None, help="model directory (default: shipped vae)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rf-train", type=int, default=8000, help="training galaxies for the RF")
    args = ap.parse_args()

    import torch
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score

    from tilecat.infer.registry import get_head
    from tilecat.latent.anomalies import KINDS, inject
    from tilecat.latent.outlier import mahalanobis
    from tilecat.latent.ssim import ssim_stamps
    from tilecat.latent.train import encode, load_galaxies, reconstruct
    from tilecat.morphology.labels import encode as encode_labels
    from tilecat.morphology.tree import QUESTIONS
    from tilecat.photoz.data import load_photoz_sets

    torch.set_num_threads(args.threads)
    sets = ensure_sets(Path(args.cache))
    head = get_head("latent")
    cfg = {"infer": {"model_dirs": {"latent": args.model}}} if args.model else {}
    lh = head.load(cfg, torch.device("cpu"))
    module = lh.module
    mean, cov = lh.extra["mean"], lh.extra["cov"]
    held = load_galaxies([sets["heldout-empirical"], sets["heldout-parametric"]])
    train = load_galaxies([sets["train-empirical"], sets["train-parametric"]])
    print(f"held-out galaxies {len(held)}, training galaxies {len(train)}")

    # ---------------------------------------------------------------- SSIM
    t0 = time.perf_counter()
    enc_h = encode(module, held.stamps)
    t_enc = time.perf_counter() - t0
    rec = reconstruct(module.vae, held.stamps)
    clean = load_galaxies([noiseless_twin(Path(args.cache), "heldout-empirical"),
                           noiseless_twin(Path(args.cache), "heldout-parametric")])
    if not np.array_equal(np.asarray(clean.labels["redshift"]),
                          np.asarray(held.labels["redshift"])):
        raise SystemExit("noiseless twin does not match the held-out set (regenerate both)")
    ss = ssim_stamps(clean.stamps, rec)
    ss_noisy = ssim_stamps(held.stamps, rec)
    ss_data = ssim_stamps(clean.stamps, held.stamps)
    snr = np.asarray(held.labels.get("snr", np.full(len(held), np.nan)), float)
    print(f"\nSSIM (held-out, mean over bands), encode {len(held) / t_enc:.0f} stamps/s:")
    print(f"  reconstruction vs noiseless stamp: mean {ss.mean():.4f}, median "
          f"{np.median(ss):.4f}")
    print(f"  reconstruction vs noisy stamp:     mean {ss_noisy.mean():.4f}")
    print(f"  noisy stamp vs noiseless stamp:    mean {ss_data.mean():.4f} (the data's own)")
    for lo, hi in ((0, 10), (10, 30), (30, 100), (100, 1e9)):
        m = (snr >= lo) & (snr < hi)
        if m.any():
            print(f"  r S/N [{lo:g}, {hi:g}): n {m.sum():>5d} SSIM {ss[m].mean():.4f} "
                  f"(vs noisy {ss_noisy[m].mean():.4f}) chi2/pix "
                  f"{np.median(enc_h['recon_chi2'][m]):.3f}")

    # ---------------------------------------------------------------- RF on latents
    rng = np.random.default_rng(0)
    sub = np.sort(rng.permutation(len(train))[:args.rf_train])
    enc_t = encode(module, train.stamps[sub])
    y_tr = encode_labels({k: train.labels[k][sub] for k in train.labels})
    y_he = encode_labels(held.labels)
    accs, base = {}, {}
    print("\nrandom forest on latents: accuracy per question (majority-class rate)")
    for j, q in enumerate(QUESTIONS):
        a, b = y_tr[:, j] >= 0, y_he[:, j] >= 0
        if a.sum() < 20 or b.sum() < 20 or len(np.unique(y_tr[a, j])) < 2:
            continue
        rf = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, n_jobs=1,
                                    random_state=0)
        rf.fit(enc_t["latent"][a], y_tr[a, j])
        accs[q.name] = float(np.mean(rf.predict(enc_h["latent"][b]) == y_he[b, j]))
        counts = np.bincount(y_tr[a, j])
        base[q.name] = float(np.mean(y_he[b, j] == np.argmax(counts)))
        print(f"  {q.name:<12s} n {b.sum():>5d}  accuracy {accs[q.name]:.3f}  "
              f"({base[q.name]:.3f})")
    rf_acc = float(np.mean(list(accs.values())))

    # ---------------------------------------------------------------- outliers
    perm = rng.permutation(len(held))
    normal, base_idx = np.sort(perm[: len(held) // 2]), np.sort(perm[len(held) // 2:])
    kinds = sorted(KINDS)
    pool = load_photoz_sets([sets["heldout-empirical"], sets["heldout-parametric"]])
    bright = pool.mag("r") < 22  # blend partners: visible galaxies
    parts = np.array_split(base_idx, len(kinds))
    s_norm = mahalanobis(enc_h["latent"][normal], mean, cov)
    c_norm = enc_h["recon_chi2"][normal]
    scores_m, scores_c, labels, per_kind = [s_norm], [c_norm], [np.zeros(len(normal))], {}
    for kind, idx in zip(kinds, parts):
        anom = inject(held.stamps[idx], pool.sigma[idx] if len(pool) == len(held) else None,
                      kind, seed=7, pool=pool.stamps[bright], pool_sigma=pool.sigma[bright])
        e = encode(module, anom)
        sm = mahalanobis(e["latent"], mean, cov)
        y = np.r_[np.zeros(len(normal)), np.ones(len(idx))]
        per_kind[kind] = (float(roc_auc_score(y, np.r_[s_norm, sm])),
                          float(roc_auc_score(y, np.r_[c_norm, e["recon_chi2"]])))
        scores_m.append(sm)
        scores_c.append(e["recon_chi2"])
        labels.append(np.ones(len(idx)))
    y = np.concatenate(labels)
    sm, sc = np.concatenate(scores_m), np.concatenate(scores_c)
    auc_m, auc_c = float(roc_auc_score(y, sm)), float(roc_auc_score(y, sc))
    rank = (np.argsort(np.argsort(sm)) + np.argsort(np.argsort(sc))) / 2.0
    auc_comb = float(roc_auc_score(y, rank))
    print(f"\noutlier ROC AUC ({len(normal)} normal, {len(base_idx)} anomalous): "
          f"latent_outlier_score {auc_m:.3f}, recon_chi2 {auc_c:.3f}, mean rank of both "
          f"{auc_comb:.3f}")
    for kind, (am, ac) in per_kind.items():
        print(f"  {kind:<11s} Mahalanobis {am:.3f}  chi2 {ac:.3f}")
    out = {
        "vae_ssim": float(ss.mean()),
        "vae_ssim_vs_noisy": float(ss_noisy.mean()),
        "data_ssim_noisy_vs_noiseless": float(ss_data.mean()),
        "rf_latent_accuracy": rf_acc,
        "vae_outlier_auc": auc_m,
        "vae_outlier_auc_chi2": auc_c,
        "vae_outlier_auc_combined": auc_comb,
        "rf_majority_accuracy": float(np.mean([base[k] for k in accs])),
        "rf_accuracy_per_question": {k: round(v, 4) for k, v in accs.items()},
        "outlier_auc_per_kind": {k: [round(a, 4), round(c, 4)] for k, (a, c) in per_kind.items()},
        "recon_chi2_median": float(np.median(enc_h["recon_chi2"])),
        "n_heldout": len(held),
    }
    print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}))


if __name__ == "__main__":
    main()
