"""Whole-demo benchmark: wall time per tile and Snakemake's per-job overhead.

Runs the demo survey (simulated into data/demo if absent) through Snakemake with one
core, so job times add up, then runs the same stages in-process for every tile. The
per-job overhead is (Snakemake wall time - in-process stage time) / number of jobs:
process start-up, imports, Snakemake's own bookkeeping.

    python benchmarks/demo.py [--tiles 4] [--cores 1]

Last line: JSON with ``wall_s_per_tile``, ``overhead_s_per_job``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument("--cores", type=int, default=1)
    args = ap.parse_args()

    data = REPO / "data" / "demo"
    if not (data / "tiles.tsv").exists():
        subprocess.run([str(BIN / "tilecat"), "simulate", "--out", str(data), "--tiles",
                        str(args.tiles)], check=True, cwd=REPO)
    work = Path(tempfile.mkdtemp(prefix="tilecat-demo-bench-"))
    try:
        cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        cfg["results"] = str(work / "results")
        for ref in cfg["survey"]["files"].values():
            ref["pattern"] = str(REPO / ref["pattern"])
        cfg["tiles"] = str(REPO / cfg["tiles"])
        config_path = work / "config.yaml"
        config_path.write_text(yaml.safe_dump(cfg))

        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--configfile",
             str(config_path), "--directory", str(work), "--cores", str(args.cores),
             "--scheduler", "greedy"],
            capture_output=True, text=True, env={"PATH": f"{BIN}:/usr/bin:/bin"})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
        m = re.search(r"(\d+) of (\d+) steps", proc.stdout + proc.stderr)
        njobs = int(m.group(2)) - 1 if m else 0  # minus the 'all' pseudo-job

        # the same stages in-process (imports paid once, outside the timing)
        from tilecat.aggregate import run_aggregate
        from tilecat.catalog import run_catalog
        from tilecat.config import load_config
        from tilecat.detect import run_detect
        from tilecat.infer import run_infer
        from tilecat.ingest import run_ingest
        from tilecat.mask import run_mask
        from tilecat.qa import run_report
        from tilecat.tiles import read_manifest

        config = load_config(config_path)
        config["results"] = str(work / "results-inproc")
        tiles = read_manifest(config["tiles"])
        stage_s: dict[str, float] = {}

        def timed(name: str, fn, *a) -> None:
            t = time.perf_counter()
            fn(*a)
            stage_s[name] = stage_s.get(name, 0.0) + time.perf_counter() - t

        for t in tiles:
            timed("ingest", run_ingest, config, t.id)
            timed("mask", run_mask, config, t.id)
            timed("detect", run_detect, config, t.id, t.index)
            timed("infer", run_infer, config, t.id)
            timed("catalog", run_catalog, config, t.id)
        timed("aggregate", run_aggregate, config)
        timed("report", run_report, config)
        inproc = sum(stage_s.values())
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ntiles = len(tiles)
    overhead = (wall - inproc) / max(njobs, 1) if args.cores == 1 else float("nan")
    print(f"tiles {ntiles}, jobs {njobs}, cores {args.cores}")
    print(f"snakemake wall time  {wall:8.1f} s  ({wall / ntiles:.1f} s per tile)")
    print(f"stages in-process    {inproc:8.1f} s  " +
          ", ".join(f"{k} {v:.1f}" for k, v in stage_s.items()))
    print(f"overhead per job     {overhead:8.2f} s")
    print(json.dumps({"wall_s_per_tile": round(wall / ntiles, 2),
                      "overhead_s_per_job": round(overhead, 2),
                      "stage_s_per_tile": round(inproc / ntiles, 2),
                      "jobs": njobs, "tiles": ntiles}))


if __name__ == "__main__":
    main()
