"""Benchmark of the defect masker (issue 4): simulated held-out set, real DECam crops,
throughput, and astroscrappy (L.A.Cosmic), deepCR (DECam model) and MaxiMask side by side
when installed (``pip install -e '.[peers]'``; MaxiMask needs TensorFlow in its own venv, see
``benchmarks/peers_masking.py``).

Usage::

    python benchmarks/masking.py [--model default] [--sim-data STORE | --sim-n 300]
        [--decam-dir /work/shared/realdata/decam_cp_crops] [--threads 2]
        [--peers deepcr,maximask] [--maximask-python /work/peers-venv/bin/python]

Figures:

- simulated held-out defect patches (other seed and observing conditions than
  training; the cached store is remade when the simulator's defect physics,
  ``tilecat.simulate.defects.DEFECTS_VERSION``, changes): per-class ROC AUC, average
  precision, TPR at FPR 1e-3 and 1e-4;
- real DECam community-pipeline crops, CP codes as truth (5 cosmic ray, 1 bad pixel,
  3 saturated, 4 bleed). ``ooi`` is in ADU with the sky in (the masker subtracts its own
  background); ``oow`` is 0 on every flagged pixel and is filled from neighbours
  before the network sees it (evaluation hygiene). Scores compared: cosmic ray ->
  p(cosmic_ray); bad -> max(p(hot), p(dead)); saturated and bleed -> max(p(saturated),
  p(bleed)) (CP's code 3 covers the core *and* the bleed column, code 4 the margin
  around it). Also the fraction of unflagged real pixels the masker flags;
- throughput: full masking of a 2048² real coadd region (input preparation + tiled
  inference + bits), model load timed apart; astroscrappy on the same pixels.

Peers (``benchmarks/peers_masking.py``; their figures are null when not installed):
deepCR's DECam model (cosmic rays; probability used as the score) and MaxiMask (14
classes mapped onto ours: CR, hot <- HCL/HP, dead <- DCL/DP, trail, saturated and bleed <-
SAT, persistence) on the same simulated patches (put in DECam-like ADU with the sky in,
signal-to-noise kept), the same real DECam crops (``ooi`` as is), and the same coadd
pixels for throughput; ratios masker/peer (AP, speed) are printed and in the JSON line.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tilecat.bits import DEFECT_CLASSES  # noqa: E402

CP_CODES = {5: "cosmic_ray", 1: "bad", 3: "saturated", 4: "bleed"}
DR6 = ROOT / "tests" / "data" / "legacysurvey_dr6"


def _scores(probs: np.ndarray, code_name: str) -> np.ndarray:
    k = {c: i for i, c in enumerate(DEFECT_CLASSES)}
    if code_name == "cosmic_ray":
        return probs[k["cosmic_ray"]]
    if code_name == "bad":
        return np.maximum(probs[k["hot"]], probs[k["dead"]])
    return np.maximum(probs[k["saturated"]], probs[k["bleed"]])


def _astroscrappy():
    try:
        import astroscrappy
    except ImportError:
        return None
    return astroscrappy


def bench_sim(model, card, args, scrappy, peers=None) -> dict:
    import xarray as xr

    from tilecat.mask.data import bits_to_targets, load_patches, make_patches
    from tilecat.mask.infer import predict_probs
    from tilecat.mask.metrics import class_metrics

    path = args.sim_data
    if path is None:
        cache = Path(args.cache)
        path = make_patches(cache / f"defects-bench-s{args.sim_seed}-n{args.sim_n}.zarr",
                            args.sim_n, args.sim_seed, heldout=True)
    ps = load_patches(path, limit=args.sim_n)
    radius = card["receptive_field"]["radius"]
    probs = predict_probs(model, ps.x, patch=ps.x.shape[-1], halo=radius, batch_size=16)
    y = np.moveaxis(bits_to_targets(ps.truth), 1, 0).reshape(len(DEFECT_CLASSES), -1)
    p = np.moveaxis(probs, 1, 0).reshape(len(DEFECT_CLASSES), -1)
    m = class_metrics(y, p, DEFECT_CLASSES, thresholds=card["thresholds"])
    out = {"sim_patches": int(len(ps.x)), "sim_data": str(path), "sim_metrics": m,
           "sim_defects_version": int(ps.attrs.get("defects_version", 1))}
    print(f"simulated held-out set: {len(ps.x)} patches of {ps.x.shape[-1]}^2 from {path} "
          f"(defect physics version {out['sim_defects_version']})")
    print(f"{'class':12s} {'n_pos':>8s} {'AUC':>7s} {'AP':>7s} {'TPR@1e-3':>9s} {'TPR@1e-4':>9s}")
    for c, v in m.items():
        f = lambda a: "   -   " if a is None else f"{a:7.4f}"  # noqa: E731
        print(f"{c:12s} {v['n_pos']:8d} {f(v['auc'])} {f(v['ap'])} {f(v['tpr_at_fpr_1e-03'])}  "
              f"{f(v['tpr_at_fpr_1e-04'])}")
    if peers and any(v is not None for v in peers.values()):
        from peers_masking import sigma_from_invvar_median, sim_peers

        ds = xr.open_zarr(str(path), consolidated=False)
        flux = ds["flux"].values[: len(ps.x)]
        if "sky_sigma" in ds:
            sig = ds["sky_sigma"].values[: len(ps.x)].astype(float)
        else:
            sig = np.array([sigma_from_invvar_median(v)
                            for v in ds["invvar"].values[: len(ps.x)]])
        out.update(sim_peers(peers, flux, sig, y, p, m, DEFECT_CLASSES))
    if scrappy is not None:
        ds = xr.open_zarr(str(path), consolidated=False)
        flux = ds["flux"].values[: len(ps.x)]
        invvar = ds["invvar"].values[: len(ps.x)]
        fwhm = (ds["psf_fwhm"].values / ds["pixscale"].values)[: len(ps.x)] \
            if "psf_fwhm" in ds and "pixscale" in ds else np.full(len(ps.x), 4.0)
        cr = np.zeros(flux.shape, bool)
        for i in range(len(flux)):
            iv = invvar[i]
            var = np.where(iv > 0, 1.0 / np.where(iv > 0, iv, 1), np.median(1.0 / iv[iv > 0]))
            cr[i], _ = scrappy.detect_cosmics(flux[i].astype(np.float32), invar=var.astype(np.float32),
                                              gain=1.0, readnoise=0.0, satlevel=1e30,
                                              psffwhm=float(fwhm[i]), verbose=False)
        t = np.asarray(ps.truth & 1, bool).ravel()
        c = cr.ravel()
        tpr = float(c[t].mean()) if t.any() else None
        fpr = float(c[~t].mean())
        ours = p[0]
        thr = np.quantile(ours[~t], 1 - fpr) if fpr > 0 else np.inf
        our_tpr = float((ours[t] > thr).mean()) if t.any() else None
        out.update(astroscrappy_cr_tpr_sim=tpr, astroscrappy_cr_fpr_sim=fpr,
                   cr_tpr_at_astroscrappy_fpr_sim=our_tpr)
        print(f"astroscrappy on sim: CR TPR {tpr:.4f} at FPR {fpr:.2e}; "
              f"masker at the same FPR: TPR {our_tpr:.4f}")
    return out


def bench_tiles(model, card, args) -> dict:
    """Whole simulated tiles (the demo survey's realistic defect rates), truth from
    ``truth-defects.fits.fz``: per-class AUC/AP and, at the card's thresholds, the
    fraction of defect-free pixels flagged and the precision of the flags."""
    from astropy.io import fits

    from tilecat.mask.infer import predict_probs
    from tilecat.mask.metrics import class_metrics
    from tilecat.mask.prepare import prepare_band

    tiles = sorted(p for p in Path(args.sim_tiles).glob("*/truth-defects.fits.fz"))[: args.n_tiles]
    if not tiles:
        print(f"no simulated tiles in {args.sim_tiles}")
        return {}
    ys, ps = [], []
    radius = card["receptive_field"]["radius"]
    for tpath in tiles:
        d = tpath.parent
        with fits.open(tpath) as th:
            for hdu in th[1:]:
                band = hdu.name.split("_", 1)[1].lower()
                f = d / f"{d.name}-{band}.fits.fz"
                if not f.exists():
                    continue
                with fits.open(f) as fh:
                    img = fh["IMAGE"].data.astype(np.float32)
                    iv = fh["INVVAR"].data.astype(np.float32)
                truth = hdu.data.astype(np.uint16)
                p = predict_probs(model, prepare_band(img, iv)[None], patch=args.patch,
                                  halo=radius, batch_size=args.batch_size)[0]
                ys.append(np.stack([(truth >> k) & 1 for k in range(len(DEFECT_CLASSES))])
                          .reshape(len(DEFECT_CLASSES), -1).astype(bool))
                ps.append(p.reshape(len(DEFECT_CLASSES), -1))
    y = np.concatenate(ys, axis=1)
    p = np.concatenate(ps, axis=1)
    m = class_metrics(y, p, DEFECT_CLASSES, thresholds=card["thresholds"])
    thr = np.array([card["thresholds"][c] for c in DEFECT_CLASSES])[:, None]
    flag = p >= thr
    clean = ~y.any(axis=0)
    anyflag = flag.any(axis=0)
    out = {
        "tiles_pixels": int(y.shape[1]),
        "tiles_metrics": m,
        "tiles_clean_flagged_fraction": float(anyflag[clean].mean()),
        "tiles_flag_precision": float((anyflag & ~clean).sum() / max(1, anyflag.sum())),
        "tiles_defect_recall": float(anyflag[~clean].mean()) if (~clean).any() else None,
    }
    print(f"\nsimulated tiles ({len(tiles)} tiles, {y.shape[1] / 1e6:.1f} Mpix, realistic rates):")
    for c, v in m.items():
        print(f"  {c:12s} n_pos {v['n_pos']:7d}  AUC {v['auc']}  AP {v['ap']}")
    print(f"  defect-free pixels flagged: {out['tiles_clean_flagged_fraction']:.2e}; "
          f"flags on real defects (any class): {out['tiles_flag_precision']:.3f}; "
          f"defect pixels flagged: {out['tiles_defect_recall']}")
    return out


def bench_decam(model, card, args, scrappy, peers=None) -> dict:
    from astropy.io import fits

    from tilecat.mask.infer import predict_probs
    from tilecat.mask.metrics import class_metrics
    from tilecat.mask.prepare import prepare_band

    files = sorted(glob.glob(os.path.join(args.decam_dir, "*", "*_ooi_*.fits")))
    if not files:
        print(f"no DECam crops in {args.decam_dir}")
        return {}
    radius = card["receptive_field"]["radius"]
    thr = np.array([card["thresholds"][c] for c in DEFECT_CLASSES], np.float32)
    codes_all, probs_all, scrappy_all, images = [], [], [], []
    for f in files:
        ood = np.asarray(fits.getdata(f.replace("_ooi_", "_ood_")), dtype=np.int32)
        ooi = np.asarray(fits.getdata(f), dtype=np.float32)
        oow = np.asarray(fits.getdata(f.replace("_ooi_", "_oow_")), dtype=np.float32)
        x = prepare_band(ooi, oow)[None]
        probs = predict_probs(model, x, patch=256, halo=radius, batch_size=4)[0]
        codes_all.append(ood.ravel())
        images.append(ooi)
        probs_all.append(probs.reshape(len(DEFECT_CLASSES), -1))
        if scrappy is not None:
            with fits.open(f) as hl:
                h = hl[1].header if len(hl) > 1 else hl[0].header
            gain = float(h.get("GAINA", h.get("GAIN", 1.0)))
            rn = float(h.get("RDNOISEA", h.get("RDNOISE", 6.5)))
            sat = float(h.get("SATURATE", h.get("SATURATA", 65535.0)))
            fw = float(h.get("FWHM", 4.0))
            cr, _ = scrappy.detect_cosmics(ooi, gain=gain, readnoise=rn, satlevel=sat,
                                           psffwhm=fw if fw > 0 else 4.0, verbose=False)
            scrappy_all.append(cr.ravel())
    codes = np.concatenate(codes_all)
    probs = np.concatenate(probs_all, axis=1)
    out: dict = {"decam_crops": len(files), "decam_pixels": int(codes.size)}
    print(f"\nreal DECam CP crops: {len(files)} crops, {codes.size} pixels")
    real = {}
    for code, name in CP_CODES.items():
        y = codes == code
        real[name] = r = class_metrics(y[None], _scores(probs, name)[None], [name])[name]
        print(f"  CP code {code} ({name}): {r['n_pos']} px, AUC {r['auc']}, AP {r['ap']}")
    # flags on pixels the CP did not flag (not necessarily all false: CP misses too)
    clean = codes == 0
    hits = probs[:, clean] >= thr[:, None]
    flagged = {c: float(hits[k].mean()) for k, c in enumerate(DEFECT_CLASSES)}
    print("  fraction of CP-unflagged pixels flagged per class: "
          + ", ".join(f"{c}={v:.2e}" for c, v in flagged.items()))
    out["real_metrics"] = real
    if peers and any(v is not None for v in peers.values()):
        from peers_masking import decam_peers

        out.update(decam_peers(peers, images, codes, CP_CODES, real))
    out["real_unflagged_flag_fraction"] = flagged
    out["cr_ap_real"] = real["cosmic_ray"]["ap"]
    out["cr_tpr_at_1e-4_real"] = real["cosmic_ray"]["tpr_at_fpr_1e-04"]
    if scrappy_all:
        sc = np.concatenate(scrappy_all)
        out["astroscrappy_cr_flag_fraction_unflagged_real"] = float(sc[clean].mean())
        if (codes == 5).any():
            out["astroscrappy_cr_tpr_real"] = float(sc[codes == 5].mean())
        print(f"  astroscrappy flags {sc[clean].mean():.2e} of CP-unflagged pixels as CR "
              f"(masker: {flagged['cosmic_ray']:.2e})")
    return out


def bench_speed(model, card, args, scrappy, load_s: float, peers=None) -> dict:
    from astropy.io import fits

    from tilecat.mask.run import mask_arrays

    n = args.speed_size
    img = fits.getdata(DR6 / "legacysurvey-0959p805-image-g.fits.fz").astype(np.float32)
    iv = fits.getdata(DR6 / "legacysurvey-0959p805-invvar-g.fits.fz").astype(np.float32)
    # the brick's data sit in its middle; take the n x n box around the weighted centre
    yy, xx = np.nonzero(iv > 0)
    cy, cx = int(np.median(yy)), int(np.median(xx))
    y0, x0 = max(0, cy - n // 2), max(0, cx - n // 2)
    img, iv = img[y0:y0 + n, x0:x0 + n], iv[y0:y0 + n, x0:x0 + n]
    cfg = {"patch": args.patch, "batch_size": args.batch_size, "halo": None, "priors": {}}
    # first call with a window shape: oneDNN builds its kernels (once per process, like
    # MaxiMask's graph warm-up below): timed apart on one patch-sized corner
    t = time.perf_counter()
    mask_arrays(img[None, :args.patch, :args.patch], iv[None, :args.patch, :args.patch],
                None, cfg, model, card)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    mask_arrays(img[None], iv[None], None, cfg, model, card)
    dt = time.perf_counter() - t
    mpix = img.size / 1e6
    out = {"mpix_per_s": mpix / dt, "model_load_s": load_s, "masker_warmup_s": warm,
           "speed_pixels": int(img.size), "threads": args.threads, "patch": args.patch}
    print(f"\nthroughput on {img.shape} real coadd pixels ({args.threads} thread(s), "
          f"windows {args.patch}^2 + halo): {mpix / dt:.3f} Mpix/s ({dt:.2f} s, input "
          f"preparation included), model load {load_s * 1e3:.0f} ms, warm-up {warm:.2f} s "
          f"(untimed)")
    if scrappy is not None:
        var = np.where(iv > 0, 1.0 / np.where(iv > 0, iv, 1.0), 0.0).astype(np.float32)
        var[iv <= 0] = np.median(var[iv > 0])
        from threadpoolctl import threadpool_limits

        # astroscrappy's C loops are OpenMP-parallel (its own libgomp): give it the same
        # number of threads as the masker, not every core
        with threadpool_limits(limits=args.threads, user_api="openmp"):
            t = time.perf_counter()
            scrappy.detect_cosmics(img, invar=var, gain=1.0, readnoise=0.0, satlevel=1e30,
                                   psffwhm=1.3 / 0.262, verbose=False)
            ds = time.perf_counter() - t
        out["astroscrappy_mpix_per_s"] = mpix / ds
        out["speed_vs_astroscrappy"] = (mpix / dt) / (mpix / ds)
        print(f"astroscrappy on the same pixels: {mpix / ds:.3f} Mpix/s ({ds:.2f} s); "
              f"masker/astroscrappy speed ratio {out['speed_vs_astroscrappy']:.3f} "
              f"(the masker does 7 classes, astroscrappy cosmic rays only)")
    if peers and any(v is not None for v in peers.values()):
        from peers_masking import speed_peers

        out.update(speed_peers(peers, img, iv, mpix / dt))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--sim-data", default=None, help="existing held-out defect-patch store")
    ap.add_argument("--sim-n", type=int, default=300)
    ap.add_argument("--sim-seed", type=int, default=4242)
    ap.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache"))
    ap.add_argument("--decam-dir", default="/work/shared/realdata/decam_cp_crops")
    ap.add_argument("--sim-tiles", default=str(ROOT / "data" / "demo"),
                    help="simulated survey with truth-defects.fits.fz per tile ('' to skip)")
    ap.add_argument("--n-tiles", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads of the masker and deepCR, OpenMP threads of "
                         "astroscrappy, TensorFlow threads of MaxiMask (default: both cores)")
    ap.add_argument("--speed-size", type=int, default=2048)
    ap.add_argument("--patch", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--peers", default="deepcr,maximask",
                    help="comma-separated peers to run when installed ('' for none)")
    ap.add_argument("--maximask-python", default=None,
                    help="python of a venv with MaxiMask + TensorFlow (default "
                         "$TILECAT_MAXIMASK_PYTHON; else in-process if importable)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from tilecat.mask.model import load_masker

    t = time.perf_counter()
    model, card = load_masker(args.model)
    load_s = time.perf_counter() - t
    scrappy = _astroscrappy()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peers_masking import load_peers
    from peers_masking import summary as peers_summary

    peers = load_peers(args.peers.split(","), args.maximask_python, args.threads)
    res: dict = {}
    res.update(bench_sim(model, card, args, scrappy, peers))
    if args.sim_tiles and Path(args.sim_tiles).is_dir():
        res.update(bench_tiles(model, card, args))
    res.update(bench_decam(model, card, args, scrappy, peers))
    res.update(bench_speed(model, card, args, scrappy, load_s, peers))
    sim = res.get("sim_metrics", {})
    auc = {c: v["auc"] for c, v in sim.items()}
    valid = [a for a in auc.values() if a is not None]
    summary = {
        "min_auc_sim": min(valid) if valid else None,
        "sim_defects_version": res.get("sim_defects_version"),
        "auc_sim": auc,
        "ap_sim": {c: v["ap"] for c, v in sim.items()},
        "tpr_at_1e-4_sim": {c: v["tpr_at_fpr_1e-04"] for c, v in sim.items()},
        "auc_sim_tiles": {c: v["auc"] for c, v in res.get("tiles_metrics", {}).items()},
        "clean_flagged_fraction_sim_tiles": res.get("tiles_clean_flagged_fraction"),
        "flag_precision_sim_tiles": res.get("tiles_flag_precision"),
        "cr_ap_real": res.get("cr_ap_real"),
        "cr_tpr_at_1e-4_real": res.get("cr_tpr_at_1e-4_real"),
        "saturated_auc_real": res.get("real_metrics", {}).get("saturated", {}).get("auc"),
        "bleed_auc_real": res.get("real_metrics", {}).get("bleed", {}).get("auc"),
        "real_unflagged_flag_fraction": res.get("real_unflagged_flag_fraction"),
        "mpix_per_s": res.get("mpix_per_s"),
        "model_load_s": res.get("model_load_s"),
        "masker_warmup_s": res.get("masker_warmup_s"),
        "threads": args.threads,
        "speed_vs_astroscrappy": res.get("speed_vs_astroscrappy"),
        "astroscrappy_mpix_per_s": res.get("astroscrappy_mpix_per_s"),
        "astroscrappy_cr_tpr_sim": res.get("astroscrappy_cr_tpr_sim"),
        "astroscrappy_cr_fpr_sim": res.get("astroscrappy_cr_fpr_sim"),
        "cr_tpr_at_astroscrappy_fpr_sim": res.get("cr_tpr_at_astroscrappy_fpr_sim"),
        "astroscrappy_cr_flag_fraction_unflagged_real":
            res.get("astroscrappy_cr_flag_fraction_unflagged_real"),
    }
    summary.update(peers_summary(res, peers))
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
