"""Helpers of the end-to-end workflow tests: a tiny simulated survey and Snakemake runs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY_SIM = {"seed": 5, "tiles": 3,
            "survey": {"name": "tiny", "bands": ["g", "r", "i", "z"], "tile_size": 256}}


def env() -> dict[str, str]:
    """Environment with the venv's bin first on PATH (Snakemake shells call tilecat)."""
    e = dict(os.environ)
    e["PATH"] = str(BIN) + os.pathsep + e.get("PATH", "")
    return e


def simulate_tiny(root: Path, sim: dict | None = None) -> Path:
    """Simulate a tiny survey under ``root/data`` and return its directory."""
    data = root / "data"
    simcfg = root / "sim.yaml"
    simcfg.write_text(yaml.safe_dump(sim or TINY_SIM))
    subprocess.run([str(BIN / "tilecat"), "simulate", "--out", str(data), "--config", str(simcfg)],
                   check=True, env=env(), capture_output=True)
    return data


def write_config(root: Path, data: Path, results: Path, **sections: dict) -> Path:
    """A tilecat config for the survey in ``data`` writing to ``results``."""
    survey = yaml.safe_load((data / "survey.yaml").read_text())["survey"]
    for ref in survey["files"].values():  # the survey may have been copied elsewhere
        ref["pattern"] = str(data / "{tile}" / Path(ref["pattern"]).name)
    cfg = {"survey": survey, "tiles": str(data / "tiles.tsv"), "results": str(results)}
    cfg.update(sections)
    path = root / f"config-{results.name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(root: Path, config: Path, *extra: str, check: bool = True
              ) -> subprocess.CompletedProcess:
    """Run the repository's workflow with ``config`` in working directory ``root``."""
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
           "--configfile", str(config), "--directory", str(root), "--cores", "2",
           "--scheduler", "greedy", *extra]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def tree_state(path: Path) -> dict[str, tuple[int, str]]:
    """(mtime_ns, sha256) of every file below ``path``."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = (p.stat().st_mtime_ns,
                                             hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
