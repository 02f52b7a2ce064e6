"""Photo-z of the shipped CNN against a kNN on catalog colours, on held-out stamps.

Held-out galaxies (other seeds and worse observing conditions than training: PSF
FWHM and depth ranges outside the training ones) of both simulated populations:
``empirical`` (real SDSS colours and spectroscopic redshifts) and ``parametric``
(CWW templates, Schechter luminosity function, z <= 1.5). The stores are generated
with ``tilecat simulate-stamps`` when missing (same seeds as the shipped model's
training: 101/102 train, 201/202 held-out).

* CNN: the shipped ``photoz`` model; point estimate ``z_median``.
* kNN (Pasquet et al. 2019's peer): sklearn KNeighborsRegressor on the catalog
  colours (r magnitude + g-r, r-i, i-z) from SExtractor AUTO (Kron) photometry of
  the same de-normalised stamps, as tilecat's detect stage measures them; k chosen
  on a validation split of the training stamps.

Metrics (RAIL definitions, tilecat.photoz.metrics): bias, sigma_NMAD, sigma_IQR,
outlier fractions (|dz| > 0.15 and > max(0.06, 3 sigma_IQR)), PIT histogram + KS,
CRPS; overall, per r magnitude bin and per population.

    python benchmarks/photoz.py [--cache DIR] [--model photoz]
    python benchmarks/photoz.py --catalog survey.parquet --truth sim/*/truth.parquet

The last line is a JSON object: sigma_nmad, sigma_nmad_knn, bias, outlier_frac_015,
outlier_frac_rail, pit_ks, crps and more.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETS = {  # name -> (population, n, seed, heldout)
    "train-empirical": ("empirical", 8000, 101, False),
    "train-parametric": ("parametric", 8000, 102, False),
    "heldout-empirical": ("empirical", 2000, 201, True),
    "heldout-parametric": ("parametric", 2000, 202, True),
}


def ensure_sets(cache: Path) -> dict[str, Path]:
    """The four stamp stores (generated with ``tilecat simulate-stamps`` when missing)."""
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (pop, n, seed, held) in SETS.items():
        path = cache / f"{name}.zarr"
        out[name] = path
        if path.exists():
            continue
        cfg = cache / f"{pop}.yaml"
        cfg.write_text(f"population:\n  kind: {pop}\n")
        cmd = [sys.executable, "-m", "tilecat.cli", "simulate-stamps", "--kind", "galaxy",
               "--config", str(cfg), "-n", str(n), "--seed", str(seed), "--out", str(path)]
        if held:
            cmd.append("--heldout")
        print("generating:", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def _row(name: str, m: dict) -> str:
    return (f"{name:<26s} {m['n']:>6d} {m['bias']:>8.4f} {m['sigma_nmad']:>8.4f} "
            f"{m['sigma_iqr']:>8.4f} {m['outlier_frac_015']:>8.4f} {m['outlier_frac_rail']:>8.4f}")


def run_stamps(args: argparse.Namespace) -> dict:
    import torch

    from tilecat.infer.registry import get_head
    from tilecat.photoz.catalogphot import auto_photometry, catalog_features
    from tilecat.photoz.data import load_photoz_sets
    from tilecat.photoz.grid import ZGrid
    from tilecat.photoz.knn import KNNPhotoZ, select_k
    from tilecat.photoz.metrics import metrics_by_bin, pdf_metrics, point_metrics
    from tilecat.photoz.summary import pdf_summary
    from tilecat.photoz.train import predict_pdf

    torch.set_num_threads(args.threads)
    sets = ensure_sets(Path(args.cache))
    train = load_photoz_sets([sets["train-empirical"], sets["train-parametric"]])
    held = load_photoz_sets([sets["heldout-empirical"], sets["heldout-parametric"]])
    print(f"training galaxies {len(train)}, held-out galaxies {len(held)}")

    head = get_head("photoz")
    cfg = {"infer": {"model_dirs": {"photoz": args.model}}} if args.model else {}
    lh = head.load(cfg, torch.device("cpu"))
    grid = ZGrid.from_meta(lh.card["z_grid"])
    t0 = time.perf_counter()
    psf = held.psf_fwhm if "psf_fwhm" in lh.inputs else None
    pdf = predict_pdf(lh.module, held.stamps, held.sigma, psf)
    t_cnn = time.perf_counter() - t0
    s = pdf_summary(pdf, grid)
    z_cnn = s["z_median"]

    t0 = time.perf_counter()
    f_tr = catalog_features(*auto_photometry(train.stamps, train.sigma), train.bands)[0]
    f_he = catalog_features(*auto_photometry(held.stamps, held.sigma), held.bands)[0]
    t_phot = time.perf_counter() - t0
    perm = np.random.default_rng(0).permutation(len(train))
    va, tr = perm[:len(train) // 10], perm[len(train) // 10:]
    k, scores = select_k(f_tr[tr], train.z[tr], f_tr[va], train.z[va])
    z_knn = KNNPhotoZ(k).fit(f_tr, train.z).predict(f_he)
    print(f"kNN: k = {k} (validation sigma_NMAD {scores}); AUTO photometry {t_phot:.0f} s; "
          f"CNN inference {t_cnn:.1f} s")

    mag = held.mag("r")
    pop = held.labels.get("population", np.full(len(held), "all"))
    res = {"cnn": point_metrics(z_cnn, held.z), "knn": point_metrics(z_knn, held.z)}
    pm = pdf_metrics(pdf, grid, held.z)
    bright = mag < 20
    print("\nheld-out set          n      bias  sig_NMAD  sig_IQR  out_0.15  out_RAIL")
    print(_row("CNN (z_median)", res["cnn"]))
    print(_row("kNN (AUTO colours)", res["knn"]))
    for name, z in (("CNN", z_cnn), ("kNN", z_knn)):
        print(_row(f"{name} r < 20", point_metrics(z[bright], held.z[bright])))
        for p in np.unique(pop):
            print(_row(f"{name} {p}", point_metrics(z[pop == p], held.z[pop == p])))
    print(f"\nCNN PDFs: PIT KS {pm['pit_ks']:.4f}, CvM {pm['pit_cvm']:.4f}, CRPS {pm['crps']:.4f}")
    print("PIT histogram (20 bins, 0.05 each when calibrated):",
          " ".join(f"{v:.3f}" for v in pm["pit_hist"]))
    for p in np.unique(pop):
        pp = pdf_metrics(pdf[pop == p], grid, held.z[pop == p])
        print(f"  {p}: PIT KS {pp['pit_ks']:.4f}, CRPS {pp['crps']:.4f}")
    edges = [10, 18, 20, 21, 22, 23, 24, 26]
    print("\nper r magnitude bin      n   CNN sig_NMAD  kNN sig_NMAD   CNN out_0.15  kNN out_0.15")
    for a, b in zip(metrics_by_bin(z_cnn, held.z, mag, edges),
                    metrics_by_bin(z_knn, held.z, mag, edges)):
        print(f"  [{a['lo']:.0f}, {a['hi']:.0f})  {a['n']:>6d}  {a['sigma_nmad']:>12.4f}  "
              f"{b['sigma_nmad']:>12.4f}  {a['outlier_frac_015']:>12.4f}  "
              f"{b['outlier_frac_015']:>12.4f}")
    cb, kb = point_metrics(z_cnn[bright], held.z[bright]), point_metrics(z_knn[bright],
                                                                          held.z[bright])
    out = {
        "sigma_nmad": res["cnn"]["sigma_nmad"],
        "sigma_nmad_knn": res["knn"]["sigma_nmad"],
        "sigma_nmad_ratio": res["cnn"]["sigma_nmad"] / res["knn"]["sigma_nmad"],
        "bias": res["cnn"]["bias"],
        "bias_knn": res["knn"]["bias"],
        "outlier_frac_015": res["cnn"]["outlier_frac_015"],
        "outlier_frac_015_knn": res["knn"]["outlier_frac_015"],
        "outlier_frac_rail": res["cnn"]["outlier_frac_rail"],
        "outlier_frac_rail_knn": res["knn"]["outlier_frac_rail"],
        "outlier_frac_015_r20": cb["outlier_frac_015"],
        "outlier_frac_015_r20_knn": kb["outlier_frac_015"],
        "sigma_nmad_r20": cb["sigma_nmad"],
        "sigma_nmad_r20_knn": kb["sigma_nmad"],
        "pit_ks": pm["pit_ks"],
        "crps": pm["crps"],
        "n_heldout": len(held),
        "knn_k": k,
    }
    return out


def run_catalog(args: argparse.Namespace) -> dict:
    from tilecat.photoz.match import score_catalog

    m = score_catalog(args.catalog, args.truth, column=args.column, max_sep=args.max_sep)
    print(f"catalog {args.catalog}: {m['n_catalog']} sources, {m['n_truth_galaxies']} truth "
          f"galaxies, {m['n_matched']} matched within {args.max_sep}\"")
    print(f"{args.column}: bias {m['bias']:.4f} sigma_NMAD {m['sigma_nmad']:.4f} sigma_IQR "
          f"{m['sigma_iqr']:.4f} outliers(0.15) {m['outlier_frac_015']:.4f} "
          f"outliers(RAIL) {m['outlier_frac_rail']:.4f}")
    if "pit_ks" in m:
        print(f"PIT KS {m['pit_ks']:.4f} CRPS {m['crps']:.4f}")
    for r in m.get("by_mag", []):
        if r["n"]:
            print(f"  mag [{r['lo']:.0f}, {r['hi']:.0f}): n {r['n']:>6d} sigma_NMAD "
                  f"{r['sigma_nmad']:.4f} outliers {r['outlier_frac_015']:.4f}")
    keys = ("sigma_nmad", "bias", "outlier_frac_015", "outlier_frac_rail", "pit_ks", "crps",
            "n_matched")
    return {k: m[k] for k in keys if k in m}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache" / "photoz"),
                    help="where the stamp stores are (generated when missing)")
    ap.add_argument("--model", default=None, help="model directory (default: shipped)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--catalog", default=None, help="score this catalog (Parquet) instead")
    ap.add_argument("--truth", nargs="+", default=None, help="truth Parquet file(s)")
    ap.add_argument("--column", default="z_median", help="point-estimate column")
    ap.add_argument("--max-sep", type=float, default=1.0, help="match radius [arcsec]")
    args = ap.parse_args()
    if args.catalog:
        if not args.truth:
            ap.error("--catalog needs --truth")
        out = run_catalog(args)
    else:
        out = run_stamps(args)
    print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}))


if __name__ == "__main__":
    main()
