"""The aggregate gives the same bytes under every Dask scheduler of config ``dask``:
threads (1 and 2 workers), a LocalCluster, and a separately started ``dask scheduler``
+ ``dask worker`` on localhost (scheduler ``distributed``)."""

from __future__ import annotations

import copy
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tilecat.config import load_config
from tilecat.errors import ConfigError

BIN = Path(sys.executable).parent
TILES = ("ta", "tb", "tc")


def _write_tile_catalog(path: Path, tile: str, index: int, n: int) -> None:
    import pyarrow as pa

    from tilecat.parquetmeta import with_metadata, write_table

    rng = np.random.default_rng(index)
    table = pa.table({
        "object_id": pa.array(index * 1_000_000 + np.arange(1, n + 1), pa.int64()),
        "tile": pa.array([tile] * n),
        "ra": pa.array(150.0 + index * 0.1 + rng.random(n) * 0.05),
        "dec": pa.array(2.0 + rng.random(n) * 0.05),
        "flux_r": pa.array(rng.random(n).astype(np.float32)),
    })
    table = with_metadata(table, {"ra": "deg", "dec": "deg", "flux_r": "nanomaggy"},
                          {"ra": "right ascension"}, {"tilecat.tile": tile})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table(table, path)


@pytest.fixture
def survey(tmp_path):
    """Three synthetic tile catalogs and a config (two tiles per output part)."""
    (tmp_path / "tiles.tsv").write_text("tile\tindex\n" + "".join(
        f"{t}\t{k}\n" for k, t in enumerate(TILES)))
    for k, t in enumerate(TILES):
        _write_tile_catalog(tmp_path / "results" / "tiles" / t / "catalog.parquet", t, k,
                            50 + 10 * k)
    cfg = {
        "survey": {"name": "dasky", "bands": ["r"], "pixel_scale": 0.262,
                   "zeropoints": {"r": 22.5},
                   "files": {"image": {"pattern": str(tmp_path / "{tile}-{band}.fits")}}},
        "tiles": str(tmp_path / "tiles.tsv"),
        "results": str(tmp_path / "results"),
        "aggregate": {"tiles_per_file": 2},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(path)


def _aggregate(config: dict, **dask: object) -> dict[str, str]:
    from tilecat.aggregate import run_aggregate

    cfg = copy.deepcopy(config)
    cfg["dask"] = {**cfg["dask"], **dask}
    run_aggregate(cfg)
    results = Path(cfg["results"])
    files = [results / "catalog.parquet", *sorted((results / "catalog").glob("*.parquet"))]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def dask_cluster(tmp_path):
    """A `dask scheduler` and one `dask worker` on localhost, stopped by PID after."""
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(sched_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(300):
            if sched_file.exists():
                break
            time.sleep(0.1)
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", "--scheduler-file", str(sched_file),
             "--nthreads", "2", "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(scheduler_file=str(sched_file), timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            address = client.scheduler.address
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_aggregate_identical_under_every_scheduler(survey, dask_cluster):
    ref = _aggregate(survey, scheduler="threads", workers=1)
    assert len(ref) == 3  # single file + two parts
    assert _aggregate(survey, scheduler="threads", workers=2) == ref
    assert _aggregate(survey, scheduler="synchronous") == ref
    assert _aggregate(survey, scheduler="distributed", address=dask_cluster) == ref
    assert _aggregate(survey, scheduler="local", workers=2) == ref


def test_distributed_needs_an_address(survey):
    from tilecat.daskutil import dask_context

    cfg = copy.deepcopy(survey)
    cfg["dask"].update(scheduler="distributed", address=None)
    with pytest.raises(ConfigError, match="dask.address"):
        with dask_context(cfg):
            pass


def test_slurm_cluster_job_script():
    """dask-jobqueue's SLURMCluster gets the configured job options."""
    pytest.importorskip("dask_jobqueue")
    from dask_jobqueue import SLURMCluster

    from tilecat.daskutil import slurm_cluster_kwargs

    kwargs = slurm_cluster_kwargs({"dask": {"jobqueue": {
        "queue": "main", "walltime": "00:10:00", "memory": "2GB",
        "scheduler_options": {"host": "127.0.0.1", "dashboard_address": None}}}})
    with SLURMCluster(**kwargs) as cluster:
        script = cluster.job_script()
    assert "#SBATCH -p main" in script and "#SBATCH -t 00:10:00" in script
    assert "--mem=2G" in script and "distributed.cli.dask_worker" in script


@pytest.mark.parametrize("scheduler", ["threads", "local"])
def test_settled_compute_waits_for_running_tasks(scheduler, tmp_path):
    """A failing task re-raises only after the task running beside it has finished:
    a caller cleaning up its scratch directory does not race a writer (the flaky
    leftover chunk of the negative-variance ingest test)."""
    import dask

    from tilecat.daskutil import dask_context, settled_compute

    flag = tmp_path / "written"

    def slow_writer(_: int) -> int:
        time.sleep(1.0)
        flag.write_text("done")
        return 1

    def fail(_: int) -> int:
        time.sleep(0.05)
        raise ValueError("bad block")

    with dask_context({"dask": {"scheduler": scheduler, "workers": 2}}):
        tasks = [dask.delayed(slow_writer, pure=False)(0), dask.delayed(fail, pure=False)(1)]
        with pytest.raises(ValueError, match="bad block"):
            settled_compute(*tasks)
        assert flag.exists(), "settled_compute returned while a task was still running"
        flag.unlink()
        assert settled_compute(dask.delayed(slow_writer, pure=False)(2)) == (1,)
