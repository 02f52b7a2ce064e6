"""The workflow through Snakemake's SLURM executor on a single-node SLURM cluster
started here (tests/slurm/start_cluster.sh): the catalog equals the local run's byte
for byte, and the aggregate also runs on a dask-jobqueue SLURMCluster.

Opt-in (it installs slurm-wlm + munge with apt when missing, needs root, and takes a
few minutes): TILECAT_SLURM_TEST=1 python -m pytest tests/test_cluster_slurm.py

The cluster's config stays in its own directory (no /etc/slurm/slurm.conf), so other
Snakemake calls never wait for a SLURM controller, before or after this test.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from workflow_helpers import BIN, REPO, env, sha256, simulate_tiny, snakemake, write_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("TILECAT_SLURM_TEST") != "1",
                       reason="SLURM cluster test: set TILECAT_SLURM_TEST=1 (needs root)"),
]

SCRIPTS = REPO / "tests" / "slurm"


@pytest.fixture(scope="module")
def cluster():
    """A running single-node cluster; yields the environment that reaches it."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM test needs root (apt, daemons)")
    # not under pytest's 0700 tmp dirs: the munge user must reach its socket
    state = Path(tempfile.mkdtemp(prefix="tilecat-slurm.", dir="/tmp"))
    try:
        start = subprocess.run(["bash", str(SCRIPTS / "start_cluster.sh"), str(state)],
                               capture_output=True, text=True, timeout=900)
        assert start.returncode == 0, start.stdout + start.stderr
        e = env()
        e["PATH"] = str(state / "bin") + os.pathsep + e["PATH"]
        yield e
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop_cluster.sh"), str(state)],
                       capture_output=True, text=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def _catalog_sums(results: Path) -> dict[str, str]:
    files = [results / "catalog.parquet", *sorted((results / "catalog").glob("*.parquet")),
             *sorted((results / "release" / "v1" / "catalog").glob("*.parquet"))]
    return {p.relative_to(results).as_posix(): sha256(p) for p in files}


def test_slurm_executor_matches_local_run(cluster, tmp_path):
    data = simulate_tiny(tmp_path)
    results = tmp_path / "results"
    config = write_config(tmp_path, data, results)
    release = str(results / "release" / "v1")
    snakemake(tmp_path, config, release)
    local = _catalog_sums(results)
    assert len(local) >= 3

    shutil.rmtree(results)
    shutil.rmtree(tmp_path / ".snakemake")
    cmd = [str(BIN / "snakemake"), release,
           "--snakefile", str(REPO / "Snakefile"), "--configfile", str(config),
           "--directory", str(tmp_path), "--profile", str(REPO / "workflow/profiles/slurm"),
           "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "2",
           "--seconds-between-status-checks", "5"]
    proc = subprocess.run(cmd, env=cluster, capture_output=True, text=True, timeout=1800)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "submitted with SLURM jobid" in out
    assert _catalog_sums(results) == local


def test_dask_jobqueue_aggregate_matches(cluster, tmp_path, monkeypatch):
    """The aggregate on a dask-jobqueue SLURMCluster (workers started by sbatch)."""
    pytest.importorskip("dask_jobqueue")
    from tilecat.aggregate import run_aggregate
    from tilecat.config import load_config

    data = simulate_tiny(tmp_path, {"seed": 6, "tiles": 2, "survey": {
        "name": "tiny", "bands": ["g", "r"], "tile_size": 128}})
    results = tmp_path / "results"
    config = write_config(tmp_path, data, results)
    snakemake(tmp_path, config)
    ref = sha256(results / "catalog.parquet")
    cfg = copy.deepcopy(load_config(config))
    cfg["dask"] = {"scheduler": "slurm", "workers": 1, "timeout": 300, "jobqueue": {
        "queue": "main", "walltime": "00:10:00", "memory": "2GB",
        "scheduler_options": {"host": "127.0.0.1", "dashboard_address": None},
        "worker_extra_args": ["--host", "127.0.0.1"],
        "log_directory": str(tmp_path / "dask-logs")}}
    monkeypatch.setenv("PATH", cluster["PATH"])
    (tmp_path / "config-slurm.yaml").write_text(yaml.safe_dump(cfg))
    run_aggregate(cfg)
    assert sha256(results / "catalog.parquet") == ref
