"""Benchmark: detection purity and completeness with and without the defect masker.

Runs the pipeline stages ingest -> mask -> detect on every tile of a small simulated
survey twice, into two temporary results directories:

* ``masker``: the shipped CNN masker (``mask: {model: default, patch: 512,
  batch_size: 2}``, as ``config/config.yaml``);
* ``rules`` (the peer): ``mask: {model: null}``, no CNN, only the rule bits
  (invvar 0 / non-finite = ``nodata``) and the input DQ bits carried over.

Each run's detections (``<results>/tiles/<tile>/sources.parquet``, columns ``x``,
``y`` in 0-based pixels) are matched to the simulation truth (``truth.parquet``,
``x``, ``y`` 0-based pixels, ``mag_r`` AB mag, ``is_star``) one-to-one, nearest pair
first, within ``--radius`` pixels (default 2.5 px = 0.66 arcsec). Printed per run:

* ``n_det``: number of detections;
* completeness: matched truth objects / truth objects, overall, for galaxies and
  stars, and in r-magnitude bins (<22, 22-24, >=24);
* purity: matched detections / detections;
* spurious on defects: unmatched detections whose centre pixel (rounded x, y) has a
  non-zero truth defect bit in any band (``truth-defects.fits.fz``, one uint16
  ``DEFECTS_<band>`` HDU per band, bits as ``tilecat.bits``), i.e. false sources
  caused by defects.

Ratios masker / rules-only are printed; the last line is one JSON object.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/purity.py [--data data/demo]
        [--tiles 4] [--work /tmp/purity] [--radius 2.5]

If ``--data`` holds no simulated survey (``tiles.tsv``), one is simulated there
with ``tilecat simulate --out DATA --tiles N --seed SEED``.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS: dict[str, dict[str, Any]] = {
    "masker": {"model": "default", "patch": 512, "batch_size": 2},
    "rules": {"model": None},
}
MAG_BINS: tuple[tuple[str, float, float], ...] = (
    ("r<22", -np.inf, 22.0), ("22<=r<24", 22.0, 24.0), ("r>=24", 24.0, np.inf))


def make_config(data: Path, results: Path, mask: dict[str, Any]) -> dict[str, Any]:
    """The demo config (``config/config.yaml``) pointed at ``data`` and ``results``.

    Parameters
    ----------
    data : Path
        Simulated survey directory (``tiles.tsv``, ``<tile>/<tile>-<band>.fits.fz``).
    results : Path
        Results directory of this run.
    mask : dict
        The ``mask`` section to use.

    Returns
    -------
    dict
        Validated configuration.
    """
    from tilecat.config import read_yaml, validate_config

    cfg = read_yaml(ROOT / "config" / "config.yaml", "config file")
    pattern = str(data.resolve() / "{tile}" / "{tile}-{band}.fits.fz")
    for ref in cfg["survey"]["files"].values():
        ref["pattern"] = pattern
    cfg["tiles"] = str(data.resolve() / "tiles.tsv")
    cfg["results"] = str(results.resolve())
    cfg["mask"] = copy.deepcopy(mask)
    return validate_config(cfg, source=f"purity benchmark config ({results})")


def run_stages(config: dict[str, Any], tiles: list[Any]) -> float:
    """ingest -> mask -> detect for every tile; returns the wall time of mask, s."""
    from tilecat.detect import run_detect
    from tilecat.ingest import run_ingest
    from tilecat.mask import run_mask

    t_mask = 0.0
    for t in tiles:
        run_ingest(config, t.id)
        t0 = time.perf_counter()
        run_mask(config, t.id)
        t_mask += time.perf_counter() - t0
        run_detect(config, t.id, t.index)
    return t_mask


def match(det: np.ndarray, truth: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one nearest matching within ``radius`` (closest pairs first).

    Parameters
    ----------
    det, truth : ndarray, shape (n, 2) and (m, 2)
        Pixel positions (x, y).
    radius : float
        Matching radius, pixels.

    Returns
    -------
    det_ok : ndarray of bool, shape (n,)
        Detection matched.
    truth_ok : ndarray of bool, shape (m,)
        Truth object matched.
    """
    from scipy.spatial import cKDTree

    det_ok = np.zeros(len(det), bool)
    truth_ok = np.zeros(len(truth), bool)
    if len(det) == 0 or len(truth) == 0:
        return det_ok, truth_ok
    pairs = cKDTree(det).sparse_distance_matrix(cKDTree(truth), radius, output_type="ndarray")
    for i, j, _ in sorted(pairs.tolist(), key=lambda p: (p[2], p[0], p[1])):
        i, j = int(i), int(j)
        if not det_ok[i] and not truth_ok[j]:
            det_ok[i] = truth_ok[j] = True
    return det_ok, truth_ok


def defect_map(path: Path) -> np.ndarray:
    """OR of the per-band truth defect bits, shape (ny, nx) uint16."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        planes = [np.asarray(h.data, np.uint16) for h in hdul
                  if h.name.startswith("DEFECTS_") and h.data is not None]
    if not planes:
        raise ValueError(f"{path}: no DEFECTS_<band> HDU")
    return np.bitwise_or.reduce(np.stack(planes), axis=0)


def score(results: Path, data: Path, tiles: list[Any], radius: float) -> dict[str, Any]:
    """Match every tile's detections to its truth; the run's figures."""
    import pyarrow.parquet as pq

    n_det = n_det_ok = n_spur_def = 0
    mags, stars, found = [], [], []
    for t in tiles:
        src = pq.read_table(results / "tiles" / t.id / "sources.parquet", columns=["x", "y"])
        truth = pq.read_table(data / t.id / "truth.parquet", columns=["x", "y", "mag_r", "is_star"])
        d = np.column_stack([src["x"].to_numpy(), src["y"].to_numpy()]).astype(float)
        tr = np.column_stack([truth["x"].to_numpy(), truth["y"].to_numpy()]).astype(float)
        det_ok, truth_ok = match(d, tr, radius)
        defects = defect_map(data / t.id / "truth-defects.fits.fz")
        ny, nx = defects.shape
        spur = d[~det_ok]
        ix = np.clip(np.rint(spur[:, 0]).astype(int), 0, nx - 1)
        iy = np.clip(np.rint(spur[:, 1]).astype(int), 0, ny - 1)
        n_spur_def += int(np.count_nonzero(defects[iy, ix]))
        n_det += len(d)
        n_det_ok += int(det_ok.sum())
        mags.append(truth["mag_r"].to_numpy(zero_copy_only=False))
        stars.append(truth["is_star"].to_numpy(zero_copy_only=False))
        found.append(truth_ok)
    mag, star, ok = np.concatenate(mags), np.concatenate(stars), np.concatenate(found)
    frac = lambda sel: float(ok[sel].mean()) if sel.any() else float("nan")  # noqa: E731
    bins = {name: {"n_truth": int(((mag >= lo) & (mag < hi)).sum()),
                   "completeness": frac((mag >= lo) & (mag < hi))}
            for name, lo, hi in MAG_BINS}
    return {
        "n_det": n_det, "n_truth": int(len(ok)), "n_truth_matched": int(ok.sum()),
        "completeness": frac(np.ones(len(ok), bool)),
        "completeness_galaxies": frac(~star), "completeness_stars": frac(star),
        "completeness_bins": bins,
        "purity": n_det_ok / n_det if n_det else float("nan"),
        "n_unmatched": n_det - n_det_ok, "spurious_on_defects": n_spur_def,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "demo"),
                    help="simulated survey directory (default: data/demo)")
    ap.add_argument("--tiles", type=int, default=4, help="tiles to use (first N of tiles.tsv)")
    ap.add_argument("--work", default=None, help="results directories go here (default: a temp dir)")
    ap.add_argument("--radius", type=float, default=2.5, help="match radius, pixels")
    ap.add_argument("--seed", type=int, default=7, help="survey seed if one must be simulated")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)

    import torch

    from tilecat.tiles import read_manifest

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    if not (data / "tiles.tsv").exists():
        print(f"no simulated survey in {data}: simulating {args.tiles} tiles (seed {args.seed})",
              flush=True)
        subprocess.run([sys.executable, "-m", "tilecat.cli", "simulate", "--out", str(data),
                        "--tiles", str(args.tiles), "--seed", str(args.seed)], check=True)
    tiles = read_manifest(str(data / "tiles.tsv"))[: args.tiles]
    if not all((data / t.id / "truth.parquet").exists() for t in tiles):
        raise SystemExit(f"{data}: some tile lacks truth.parquet (not a simulated survey)")

    tmp = tempfile.TemporaryDirectory(prefix="purity-") if args.work is None else None
    work = Path(tmp.name if tmp else args.work)
    print(f"{len(tiles)} tiles from {data}; results under {work}; match radius {args.radius} px",
          flush=True)
    res: dict[str, dict[str, Any]] = {}
    for name, mask in RUNS.items():
        results = work / name
        t0 = time.perf_counter()
        t_mask = run_stages(make_config(data, results, mask), tiles)
        res[name] = score(results, data, tiles, args.radius)
        res[name]["seconds"] = time.perf_counter() - t0
        res[name]["mask_seconds"] = t_mask
        print(f"  {name}: ingest+mask+detect {res[name]['seconds']:.1f} s "
              f"(mask {t_mask:.1f} s)", flush=True)
    if tmp is not None:
        tmp.cleanup()

    m, r = res["masker"], res["rules"]
    ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731
    rows = [("detections", "n_det", "d"), ("truth matched", "n_truth_matched", "d"),
            ("completeness", "completeness", ".4f"),
            ("  galaxies", "completeness_galaxies", ".4f"),
            ("  stars", "completeness_stars", ".4f")]
    print(f"\n{'':22s} {'masker':>10s} {'rules-only':>10s} {'ratio':>8s}")
    for label, key, fmt in rows:
        print(f"{label:22s} {m[key]:>10{fmt}} {r[key]:>10{fmt}} {ratio(m[key], r[key]):8.3f}")
    for name, _, _ in MAG_BINS:
        a, b = m["completeness_bins"][name], r["completeness_bins"][name]
        print(f"{'  ' + name + ' (n=' + str(a['n_truth']) + ')':22s} {a['completeness']:10.4f} "
              f"{b['completeness']:10.4f} {ratio(a['completeness'], b['completeness']):8.3f}")
    for label, key, fmt in [("purity", "purity", ".4f"), ("unmatched", "n_unmatched", "d"),
                            ("spurious on defects", "spurious_on_defects", "d")]:
        print(f"{label:22s} {m[key]:>10{fmt}} {r[key]:>10{fmt}} {ratio(m[key], r[key]):8.3f}")

    out = {
        "tiles": len(tiles), "data": str(data), "radius_px": args.radius,
        "n_truth": m["n_truth"],
        "n_det_masker": m["n_det"], "n_det_rules": r["n_det"],
        "purity_masker": m["purity"], "purity_rules": r["purity"],
        "completeness_masker": m["completeness"], "completeness_rules": r["completeness"],
        "completeness_bins_masker": {k: v["completeness"] for k, v in m["completeness_bins"].items()},
        "completeness_bins_rules": {k: v["completeness"] for k, v in r["completeness_bins"].items()},
        "spurious_on_defects_masker": m["spurious_on_defects"],
        "spurious_on_defects_rules": r["spurious_on_defects"],
        "unmatched_masker": m["n_unmatched"], "unmatched_rules": r["n_unmatched"],
        "purity_ratio": ratio(m["purity"], r["purity"]),
        "completeness_ratio": ratio(m["completeness"], r["completeness"]),
        "n_det_ratio": ratio(m["n_det"], r["n_det"]),
        "seconds_masker": m["seconds"], "seconds_rules": r["seconds"],
    }
    print(json.dumps(out, sort_keys=True))
    return out


if __name__ == "__main__":
    main()
