"""Held-out figures of the shipped morphology and structure models, against peers.

On a held-out galaxy stamp set of the morphology sample the shipped morphology model
was trained on (config/stamps/morphology-bars.yaml: Galaxy-Zoo-like centrals, r < 20
and r50 > 1.2", with visible bars; other seed, PSF family and depth
than training; generated with ``tilecat simulate-stamps --kind galaxy --heldout`` when
missing):

* morphology: accuracy per question and per r-band S/N bin, confusion matrices,
  top-level (smooth/featured/artifact) accuracy at S/N > 20, spin (S/Z) accuracy for
  spirals with visible arms (S/N > 20 and true r50 >= 1.5 PSF FWHM:
  ``spin_accuracy``) and for all spirals (``spin_accuracy_all_spirals``);
* structure: r50 median relative error of the CNN (PSF-corrected) vs SExtractor-style
  ``sep.flux_radius`` and statmorph's ``r50`` (both measure the observed, PSF-convolved
  light, as a catalog would without a model), all against the intrinsic truth r50, on
  the same S/N > 20 galaxies; fraction of truths within the CNN's 1-sigma error; median
  bias and the figures per bin of the r band's PSF FWHM and Moffat beta. The structure
  model gets the stamp set's true per-object PSF FWHM (and Moffat beta, for models taking
  it) in place of the values the pipeline measures on each tile's stars. Idealised
  round exponential disks (:mod:`tilecat.structure.disk`: r50 1.0-2.5", one Moffat PSF
  of FWHM 1.1" or 1.5" and beta 3.5 in every band) check the catalog's r50 against an
  exact truth in units of its stated (calibrated) error: ``disk_r50_rel_err``,
  ``disk_r50_max_abs_z``.

    python benchmarks/morphology.py [--heldout STORE] [--sim-config config/stamps/morphology-bars.yaml]

The last line is a JSON object with top_level_accuracy_snr20, spin_accuracy,
r50_median_rel_err_snr20, r50_median_rel_err_sep, r50_median_rel_err_statmorph,
r50_within_1sigma, r50_median_bias_snr20, r50_by_psf_snr20, r50_by_size_snr20 (CNN and
sep by true r50), disk_r50_max_abs_z and more.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tilecat.infer.registry import get_head
from tilecat.morphology.dataset import load_stamps
from tilecat.morphology.fit import predict
from tilecat.morphology.labels import encode
from tilecat.morphology.metrics import (ARMS_RESOLVED_R50_PER_FWHM, arms_resolved,
                                       morphology_metrics, structure_metrics)
from tilecat.morphology.tree import QUESTIONS
from tilecat.structure.disk import disk_check
from tilecat.structure.model import predict_structure

#: idealised disks of the structure check: half-light radii and PSF FWHMs [arcsec]
DISK_R50: tuple[float, ...] = (1.0, 1.3, 1.6, 2.0, 2.5)
DISK_FWHM: tuple[float, ...] = (1.1, 1.5)


def _ensure(path: Path, n: int, seed: int, sim_config: str | None) -> None:
    if path.exists():
        return
    print(f"generating held-out stamps: {path} ({n} objects)")
    cmd = [sys.executable, "-m", "tilecat.cli", "simulate-stamps", "--kind", "galaxy",
           "--heldout", "-n", str(n), "--seed", str(seed), "--out", str(path)]
    if sim_config:
        cmd += ["--config", sim_config]
    subprocess.run(cmd, check=True)


def sep_r50(stamps: np.ndarray, r_index: int, pixscale: float) -> np.ndarray:
    """sep.flux_radius (50%) of the source nearest each stamp centre [arcsec]."""
    import sep

    out = np.full(len(stamps), np.nan)
    for i, st in enumerate(stamps):
        img = np.ascontiguousarray(np.sinh(st[r_index].astype(np.float64)))  # F / sigma
        try:
            objs = sep.extract(img, 1.5, err=1.0, minarea=5)
        except Exception:
            continue
        if len(objs) == 0:
            continue
        c = (img.shape[0] - 1) / 2
        k = int(np.argmin(np.hypot(objs["x"] - c, objs["y"] - c)))
        x, y, a = objs["x"][k:k + 1], objs["y"][k:k + 1], objs["a"][k:k + 1]
        rad, _flag = sep.flux_radius(img, x, y, 6.0 * a, 0.5, subpix=5)
        if np.isfinite(rad[0]) and rad[0] > 0:  # aperture truncated at the edge: kept
            out[i] = rad[0] * pixscale
    return out


def statmorph_r50(stamps: np.ndarray, r_index: int, pixscale: float) -> np.ndarray:
    """statmorph non-parametric r50 of the central segment [arcsec] (NaN when it fails)."""
    import warnings

    import statmorph
    from scipy import ndimage

    out = np.full(len(stamps), np.nan)
    for i, st in enumerate(stamps):
        img = np.sinh(st[r_index].astype(np.float64))
        seg, _ = ndimage.label(ndimage.binary_opening(img > 1.5))
        c = img.shape[0] // 2
        label = seg[c, c]
        if label == 0:
            continue
        seg = np.where(seg == label, 1, 0).astype(np.int32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                m = statmorph.source_morphology(img, seg, weightmap=np.ones_like(img),
                                                sersic_maxiter=50)[0]
            except Exception:
                continue
        if m.flag <= 1 and np.isfinite(m.r50):
            out[i] = m.r50 * pixscale
    return out


def r50_by_psf(pred: dict[str, np.ndarray], truth: dict[str, np.ndarray], hi: np.ndarray,
               data, gal: np.ndarray, r_index: int) -> dict[str, dict]:
    """CNN r50 figures of the S/N > 20 galaxies binned by the r band's PSF FWHM and beta.

    Returns
    -------
    dict
        ``all`` and one entry per bin (``fwhm a-b"``, ``beta a-b``): ``n``, ``rel_err``
        (median |r50 - true| / true), ``bias`` (median signed), ``within_1sigma``.
    """
    d = (pred["r50"] - truth["r50"]) / truth["r50"]
    inside = np.abs(pred["r50"] - truth["r50"]) < pred["r50_err"]

    def row(m: np.ndarray) -> dict:
        m = m & hi & np.isfinite(d)
        if not m.any():
            return {"n": 0, "rel_err": float("nan"), "bias": float("nan"),
                    "within_1sigma": float("nan")}
        return {"n": int(m.sum()), "rel_err": float(np.median(np.abs(d[m]))),
                "bias": float(np.median(d[m])), "within_1sigma": float(inside[m].mean())}

    out = {"all": row(np.ones(len(d), bool))}  # bins without objects are left out
    fwhm = np.asarray(data.psf_fwhm, float)[gal, r_index]
    for lo, up in ((0.0, 1.1), (1.1, 1.3), (1.3, 1.5), (1.5, 9.9)):
        out[f'fwhm {lo:.1f}-{up:.1f}"'] = row((fwhm >= lo) & (fwhm < up))
    if data.psf_beta is not None:
        beta = np.asarray(data.psf_beta, float)[gal, r_index]
        for lo, up in ((1.0, 2.0), (2.0, 2.25), (2.25, 2.5), (2.5, 3.5), (3.5, 99.0)):
            out[f"beta {lo:.2f}-{up:.2f}"] = row((beta >= lo) & (beta < up))
    return {k: v for k, v in out.items() if k == "all" or v["n"] > 0}


#: true r50 bins (arcsec) of :func:`r50_by_size`; at 0.262"/px a 64-px stamp reaches 8.4"
#: from the centre, so beyond ~3.5" (13 px) much of a de Vaucouleurs profile's light
#: falls outside it
SIZE_BINS: tuple[tuple[float, float], ...] = ((0.0, 1.5), (1.5, 3.5), (3.5, 6.0), (6.0, 99.0))


def r50_by_size(pred_r50: np.ndarray, true_r50: np.ndarray, sep_r50: np.ndarray
                ) -> dict[str, dict]:
    """CNN and sep r50 errors of the S/N > 20 galaxies binned by their true r50.

    Parameters
    ----------
    pred_r50, true_r50, sep_r50 : ndarray, shape (M,)
        CNN (catalog), true and sep flux_radius r50 (arcsec) of the same galaxies.

    Returns
    -------
    dict
        One entry per bin of :data:`SIZE_BINS` with galaxies (``r50 a-b"``): ``n``,
        ``rel_err`` and ``bias`` (median |rel| and signed rel of the CNN), ``sep_rel_err``.
    """
    d = (pred_r50 - true_r50) / true_r50
    d_sep = np.abs(sep_r50 - true_r50) / true_r50
    out = {}
    for lo, up in SIZE_BINS:
        m = (true_r50 >= lo) & (true_r50 < up) & np.isfinite(d)
        if m.any():
            ok = m & np.isfinite(d_sep)
            out[f'r50 {lo:.1f}-{up:.1f}"'] = {
                "n": int(m.sum()), "rel_err": float(np.median(np.abs(d[m]))),
                "bias": float(np.median(d[m])),
                "sep_rel_err": float(np.median(d_sep[ok])) if ok.any() else float("nan")}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heldout", default="benchmarks/.cache/morphology-bars-heldout-s9101.zarr",
                   help="held-out stamp set (generated when missing)")
    p.add_argument("--sim-config", default="config/stamps/morphology-bars.yaml",
                   help="simulation settings of the held-out set (the morphology sample: "
                        "Galaxy-Zoo-like r < 20, r50 > 1.2 arcsec; held-out PSF and depth)")
    p.add_argument("-n", type=int, default=2048, help="objects to generate if missing")
    p.add_argument("--seed", type=int, default=9101)
    p.add_argument("--statmorph", type=int, default=300, help="objects for statmorph (slow)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--morphology-dir", default=None, help="model directory (default: shipped)")
    p.add_argument("--structure-dir", default=None, help="model directory (default: shipped)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.heldout)
    _ensure(path, args.n, args.seed, args.sim_config)
    data = load_stamps(path)
    snr = np.asarray(data.labels["snr"], float)
    dirs = {k: v for k, v in (("morphology", args.morphology_dir),
                              ("structure", args.structure_dir)) if v}
    cfg = {"survey": {"pixel_scale": data.pixel_scale}, "infer": {"model_dirs": dirs}}
    print(f"held-out set {path}: {len(data)} objects, bands {data.bands}, "
          f"{data.pixel_scale} arcsec/px, seed {data.attrs.get('seed')}")

    # morphology
    head = get_head("morphology")
    lh = head.load(cfg, torch.device("cpu"))
    head.check_input(lh, data.bands, data.stamps.shape[-1])
    t0 = time.perf_counter()
    maux = (np.asarray(data.psf_fwhm, np.float32) if "psf_fwhm" in lh.inputs else None)
    probs = predict(lh.module, data.stamps, aux=maux)
    print(f"morphology inference: {len(data) / (time.perf_counter() - t0):.0f} objects/s")
    targets = encode(data.labels)
    iref = data.bands.index("r") if "r" in data.bands else len(data.bands) // 2
    resolved = arms_resolved(data.labels["r50"], np.asarray(data.psf_fwhm)[:, iref])
    mm = morphology_metrics(probs, targets, snr, resolved=resolved)
    print("\nmorphology accuracy per question (where it applies) and per r-band S/N bin:")
    bins = list(next(iter(mm["accuracy_by_snr"].values())).keys())
    print(f"{'question':12s} {'n':>6s} {'all':>6s} " + " ".join(f"{b:>8s}" for b in bins))
    for q in QUESTIONS:
        acc = mm["accuracy"][q.name]
        row = " ".join(f"{v:8.3f}" if v is not None else f"{'-':>8s}"
                       for v in mm["accuracy_by_snr"][q.name].values())
        print(f"{q.name:12s} {mm['n'][q.name]:6d} "
              f"{acc if acc is not None else float('nan'):6.3f} {row}")
    print(f"spin accuracy: spirals with visible arms (S/N > 20, r50 >= "
          f"{ARMS_RESOLVED_R50_PER_FWHM} PSF FWHM; n = {mm.get('n_spin_visible')}) "
          f"{mm['spin_accuracy']:.3f}; all spirals {mm['spin_accuracy_all']:.3f}")
    na = float("nan")
    print(f"bar: AUC of P(strong) + P(weak), barred against unbarred spirals: "
          f"{mm['bar_auc'] if mm['bar_auc'] is not None else na:.3f} (0.5 = none); over "
          f"every disk {mm['bar_auc_all'] if mm['bar_auc_all'] is not None else na:.3f}")
    print("one-vs-rest AUC per answer: " + "; ".join(
        f"{q}: " + ", ".join(f"{a} {v:.3f}" for a, v in per.items() if v is not None)
        for q, per in mm["answer_auc"].items()))
    print("\nconfusion matrices (rows true, columns predicted):")
    for q in QUESTIONS:
        print(f"  {q.name} {list(q.answers)}: {mm['confusion'][q.name]}")

    # structure
    head_s = get_head("structure")
    lhs = head_s.load(cfg, torch.device("cpu"))
    gal = np.flatnonzero((np.asarray(data.labels["t_class"]) != "artifact")
                         & (np.asarray(data.labels["r50"], float) > 0))
    # the head's per-object inputs in its order, as the pipeline's engine passes them:
    # the true per-object PSF FWHM [arcsec] and Moffat beta of the stamp set stand in
    # for the values the detect stage measures on each tile's stars
    known = {"psf_fwhm": data.psf_fwhm, "psf_beta": data.psf_beta}
    for v in lhs.inputs:
        if known.get(v) is None:
            sys.exit(f"{path}: the structure model needs the per-object variable {v!r}, "
                     "which this stamp set does not have (simulated before it was recorded? "
                     "delete the store to regenerate it)")
    s_in = [np.asarray(known[v], np.float32)[gal] for v in lhs.inputs]
    raw_s = predict_structure(lhs.module, data.stamps[gal], s_in)
    pred = {k.removeprefix("struct_"): v for k, v in head_s.postprocess(raw_s, lhs).items()}
    truth = {k: np.asarray(data.labels[k], float)[gal] for k in ("r50", "sersic_n", "e1", "e2")}
    sm = structure_metrics(pred, truth, snr[gal])
    hi = snr[gal] > 20
    r_index = data.bands.index("r") if "r" in data.bands else 0
    sep_r = sep_r50(data.stamps[gal[hi]], r_index, data.pixel_scale)
    true_hi = truth["r50"][hi]
    ok = np.isfinite(sep_r)
    rel_sep = float(np.median(np.abs(sep_r[ok] - true_hi[ok]) / true_hi[ok]))
    rel_cnn_same = float(np.median(np.abs(pred["r50"][hi][ok] - true_hi[ok]) / true_hi[ok]))
    print(f"\nstructure on {len(gal)} galaxies ({int(hi.sum())} with S/N > 20):")
    print(f"  CNN r50 median |rel err|: all {sm['r50_median_rel_err']:.3f}, "
          f"S/N>20 {sm['r50_median_rel_err_snr20']:.3f}; within 1 sigma "
          f"{sm['r50_within_1sigma']:.3f} (0.683 if calibrated; card sigma scale "
          f"{(lhs.card.get('uncertainty_calibration') or {}).get('sigma_scale')})")
    print(f"  sep flux_radius r50 median |rel err| (S/N>20, {int(ok.sum())} measured): "
          f"{rel_sep:.3f} (CNN on the same objects {rel_cnn_same:.3f})")
    rel_sm = None
    try:
        import statmorph  # noqa: F401

        if args.statmorph <= 0:
            raise ImportError("--statmorph 0")

        sub = np.flatnonzero(hi)[: args.statmorph]
        t0 = time.perf_counter()
        smr = statmorph_r50(data.stamps[gal[sub]], r_index, data.pixel_scale)
        oks = np.isfinite(smr)
        tr = truth["r50"][sub]
        rel_sm = float(np.median(np.abs(smr[oks] - tr[oks]) / tr[oks]))
        rel_cnn_sm = float(np.median(np.abs(pred["r50"][sub][oks] - tr[oks]) / tr[oks]))
        print(f"  statmorph r50 median |rel err| ({int(oks.sum())}/{len(sub)} measured, "
              f"{time.perf_counter() - t0:.0f} s): {rel_sm:.3f} (CNN on the same "
              f"{rel_cnn_sm:.3f})")
    except ImportError as exc:
        print("  statmorph skipped: " + ("--statmorph 0" if "statmorph 0" in str(exc)
                                         else "not installed (pip install statmorph)"))
    print(f"  Sersic n median |rel err| {sm.get('sersic_n_median_rel_err', float('nan')):.3f}; "
          f"e1/e2 rms residual {sm.get('e_rms', float('nan')):.3f}")
    by_psf = r50_by_psf(pred, truth, hi, data, gal, r_index)
    print(f"  CNN r50 median bias (S/N>20) {by_psf['all']['bias']:+.3f}; by the r band's "
          "PSF (S/N > 20):")
    print(f"    {'bin':18s} {'n':>5s} {'|rel err|':>9s} {'bias':>7s} {'in 1 sig':>8s}")
    for key, row in by_psf.items():
        if key != "all":
            print(f"    {key:18s} {row['n']:5d} {row['rel_err']:9.3f} {row['bias']:+7.3f} "
                  f"{row['within_1sigma']:8.3f}")
    by_size = r50_by_size(pred["r50"][hi], true_hi, sep_r)
    print("  by true r50 (S/N > 20; the stamp reaches 8.4\" from the centre):")
    print(f"    {'bin':18s} {'n':>5s} {'|rel err|':>9s} {'bias':>7s} {'sep':>7s}")
    for key, row in by_size.items():
        print(f"    {key:18s} {row['n']:5d} {row['rel_err']:9.3f} {row['bias']:+7.3f} "
              f"{row['sep_rel_err']:7.3f}")
    # idealised round exponential disks (one Moffat PSF, beta 3.5, in every band; flux
    # 1500 sigma per band): the catalog's r50 against the exact truth in its stated sigma
    disks = disk_check(head_s, lhs, DISK_R50, DISK_FWHM, pixel_scale=data.pixel_scale)
    print("  idealised round exponential disks (8 noise seeds each; catalog r50, "
          "calibrated error): (mean - true) / true (in sigma)")
    for fwhm in DISK_FWHM:
        print(f"    PSF FWHM {fwhm}\": " + "  ".join(
            f"{d['r50']}\" {d['rel']:+.1%} ({d['z']:+.1f})" for d in disks
            if d["fwhm"] == fwhm))
    print(json.dumps({
        "top_level_accuracy": round(mm["top_level_accuracy"], 4),
        "top_level_accuracy_snr20": round(mm["top_level_accuracy_snr20"], 4),
        "spin_accuracy": None if mm["spin_accuracy"] is None else round(mm["spin_accuracy"], 4),
        "spin_accuracy_all_spirals": None if mm["spin_accuracy_all"] is None
        else round(mm["spin_accuracy_all"], 4),
        "n_spin_visible": mm.get("n_spin_visible"),
        "spin_accuracy_snr20": None if mm["spin_accuracy_snr20"] is None
        else round(mm["spin_accuracy_snr20"], 4),
        "question_accuracy": {k: None if v is None else round(v, 4)
                              for k, v in mm["accuracy"].items()},
        "bar_auc": None if mm["bar_auc"] is None else round(mm["bar_auc"], 4),
        "bar_auc_all": None if mm["bar_auc_all"] is None else round(mm["bar_auc_all"], 4),
        "answer_auc": {q: {a: None if v is None else round(v, 4) for a, v in per.items()}
                       for q, per in mm["answer_auc"].items()},
        "r50_median_rel_err": round(sm["r50_median_rel_err"], 4),
        "r50_median_rel_err_snr20": round(sm["r50_median_rel_err_snr20"], 4),
        "r50_median_rel_err_sep": round(rel_sep, 4),
        "r50_median_rel_err_statmorph": None if rel_sm is None else round(rel_sm, 4),
        "r50_within_1sigma": round(sm["r50_within_1sigma"], 4),
        "r50_within_1sigma_snr20": round(sm["r50_within_1sigma_snr20"], 4),
        "r50_median_bias": round(sm["r50_median_bias"], 4),
        "r50_median_bias_snr20": round(by_psf["all"]["bias"], 4),
        "r50_by_psf_snr20": {k: {m: round(v, 4) if isinstance(v, float) else v
                                 for m, v in row.items()}
                             for k, row in by_psf.items() if k != "all"},
        "r50_by_size_snr20": {k: {m: round(v, 4) if isinstance(v, float) else v
                                  for m, v in row.items()} for k, row in by_size.items()},
        "sersic_n_median_rel_err": sm.get("sersic_n_median_rel_err"),
        "e_rms": sm.get("e_rms"),
        "disk_r50_rel_err": {f"{d['r50']}/{d['fwhm']}": round(d["rel"], 4) for d in disks},
        "disk_r50_max_abs_z": round(max(abs(d["z"]) for d in disks), 3),
        "n_objects": len(data),
    }))


if __name__ == "__main__":
    main()
