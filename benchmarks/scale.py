"""Planning cost of the workflow at survey scale: Snakemake dry runs on synthetic manifests.

For 1,000, 10,000 and 100,000 tiles, builds the plan (``snakemake --dry-run``) of the
default target in ``workflow.mode: batched`` (one job per ``batch_size`` tiles, each
running a tile's whole chain) and prints wall seconds and the peak RSS of the
snakemake process. The peer is the per-tile plan (5 jobs per tile; its FITS inputs
are created empty so that Snakemake can stat them), measured up to ``--per-tile-max``
tiles.

    python benchmarks/scale.py [--sizes 1000 10000 100000] [--batch-size 100]

Last line: JSON with ``plan_s_1k``, ``plan_s_10k``, ``plan_s_100k``,
``plan_rss_gb_100k`` (batched mode) and the per-tile figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BANDS = ("g", "r", "i", "z")


def _label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def make_survey(root: Path, n: int, mode: str, batch_size: int, touch_inputs: bool) -> Path:
    """A synthetic survey of ``n`` tiles: manifest, config (and empty inputs)."""
    root.mkdir(parents=True, exist_ok=True)
    ids = [f"t{k:06d}" for k in range(n)]
    (root / "tiles.tsv").write_text("tile\tindex\n" + "".join(
        f"{t}\t{k}\n" for k, t in enumerate(ids)))
    pattern = str(root / "data" / "{tile}" / "{tile}-{band}.fits.fz")
    if touch_inputs:
        for t in ids:
            d = root / "data" / t
            d.mkdir(parents=True, exist_ok=True)
            for b in BANDS:
                (d / f"{t}-{b}.fits.fz").touch()
    config = {
        "survey": {
            "name": "scale", "bands": list(BANDS), "pixel_scale": 0.262,
            "zeropoints": {b: 22.5 for b in BANDS},
            "files": {"image": {"pattern": pattern, "hdu": "IMAGE"},
                      "weight": {"pattern": pattern, "hdu": "INVVAR", "kind": "invvar"},
                      "dq": {"pattern": pattern, "hdu": "DQ", "kind": "bits"}},
        },
        "tiles": str(root / "tiles.tsv"),
        "results": str(root / "results"),
        "workflow": {"mode": mode, "batch_size": batch_size},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def plan(config: Path, workdir: Path) -> dict[str, float]:
    """Dry-run the default target; wall seconds, peak RSS (GB) and job count."""
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
           "--configfile", str(config), "--directory", str(workdir), "--cores", "2",
           "--dry-run", "--quiet", "rules"]
    env = dict(os.environ, PATH=str(BIN) + os.pathsep + os.environ.get("PATH", ""))
    timer = Path("/usr/bin/time")
    if timer.exists():
        cmd = [str(timer), "-v", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"dry run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    jobs = re.search(r"^total\s+(\d+)", proc.stdout + proc.stderr, re.M)
    return {"s": seconds, "rss_gb": int(rss.group(1)) / 1e6 if rss else float("nan"),
            "jobs": int(jobs.group(1)) if jobs else -1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--per-tile-max", type=int, default=10000,
                    help="largest size also planned per tile (0: none)")
    args = ap.parse_args()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tilecat-scale-") as tmp:
        for n in args.sizes:
            lab = _label(n)
            root = Path(tmp) / f"batched-{n}"
            r = plan(make_survey(root, n, "batched", args.batch_size, False), root)
            print(f"batched  {n:>7} tiles: {r['jobs']:>6} jobs, plan {r['s']:6.2f} s, "
                  f"peak RSS {r['rss_gb']:.3f} GB", flush=True)
            out[f"plan_s_{lab}"] = round(r["s"], 2)
            out[f"plan_rss_gb_{lab}"] = round(r["rss_gb"], 3)
            out[f"plan_jobs_{lab}"] = r["jobs"]
        for n in [s for s in args.sizes if s <= args.per_tile_max]:
            lab = _label(n)
            root = Path(tmp) / f"pertile-{n}"
            r = plan(make_survey(root, n, "per_tile", args.batch_size, True), root)
            print(f"per_tile {n:>7} tiles: {r['jobs']:>6} jobs, plan {r['s']:6.2f} s, "
                  f"peak RSS {r['rss_gb']:.3f} GB", flush=True)
            out[f"per_tile_plan_s_{lab}"] = round(r["s"], 2)
            out[f"per_tile_plan_rss_gb_{lab}"] = round(r["rss_gb"], 3)
            out[f"per_tile_vs_batched_{lab}"] = round(r["s"] / out[f"plan_s_{lab}"], 1)
    out["batch_size"] = args.batch_size
    print(json.dumps(out))


if __name__ == "__main__":
    main()
