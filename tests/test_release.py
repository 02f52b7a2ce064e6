"""Releases on the tiny simulated survey: manifest, provenance, verify, HATS, and
byte-identical catalogs after rerunning a tile, rebuilding from scratch (batched mode,
2 Dask workers) and after a SIGKILL in the middle of a run.

One survey is simulated and processed once (module fixture); the tests then rerun or
rebuild in the same directory, because the config hash (which every catalog file
carries) includes the survey's paths.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from workflow_helpers import BIN, REPO, env, sha256, simulate_tiny, snakemake, write_config

pytestmark = pytest.mark.slow

TILES = ("sim0000", "sim0001", "sim0002")


@dataclass
class Built:
    root: Path
    data: Path
    results: Path
    config: Path
    release: Path
    catalog_sums: dict[str, str]
    manifest_bytes: bytes


def catalog_sums(release: Path) -> dict[str, str]:
    """sha256 of every catalog file of a release (Parquet parts and HATS)."""
    return {p.relative_to(release).as_posix(): sha256(p)
            for sub in ("catalog", "hats") for p in sorted((release / sub).rglob("*"))
            if p.is_file()}


def wipe(built: Built) -> None:
    """Back to an unprocessed survey: no results, no Snakemake state."""
    shutil.rmtree(built.results, ignore_errors=True)
    shutil.rmtree(built.root / ".snakemake", ignore_errors=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    """The tiny survey processed per tile with 1 Dask worker, released as v1 by the
    Snakemake target."""
    root = tmp_path_factory.mktemp("release")
    data = simulate_tiny(root)
    results = root / "results"
    config = write_config(root, data, results, dask={"scheduler": "threads", "workers": 1})
    release = results / "release" / "v1"
    snakemake(root, config, str(release))
    return Built(root, data, results, config, release, catalog_sums(release),
                 (release / "manifest.json").read_bytes())


def _load(config: Path) -> dict:
    from tilecat.config import load_config

    return load_config(config)


def test_manifest_and_provenance(built):
    m = json.loads(built.manifest_bytes)
    assert m["release"] == "v1" and m["format"] == "tilecat-release/1"
    assert [t["tile"] for t in m["tiles"]] == list(TILES) and m["excluded_tiles"] == []
    cfg = _load(built.config)
    from tilecat.config import config_hash

    assert m["config_hash"] == config_hash(cfg) and m["config"]["survey"] == cfg["survey"]
    # every input: the manifest and 4 bands x 3 tiles (image, invvar, dq in one file)
    inputs = {Path(i["path"]).name: i["sha256"] for i in m["inputs"]}
    assert len(inputs) == 13 and inputs["tiles.tsv"] == sha256(built.data / "tiles.tsv")
    assert inputs["sim0001-r.fits.fz"] == sha256(built.data / "sim0001" / "sim0001-r.fits.fz")
    assert m["environment"]["packages"]["pyarrow"] == version("pyarrow")
    outputs = {o["path"]: o["sha256"] for o in m["outputs"]}
    assert set(built.catalog_sums) <= set(outputs) and "config.yaml" in outputs
    for path, digest in outputs.items():
        assert sha256(built.release / path) == digest
    parts = sorted((built.release / "catalog").glob("part-*.parquet"))
    assert parts and sum(pq.read_metadata(p).num_rows for p in parts) == m["catalog"]["rows"]
    for part in [*parts, *sorted((built.release / "hats").glob("*/dataset/Norder=*/*/*"))]:
        meta = pq.read_schema(part).metadata
        assert meta[b"tilecat.release"] == b"v1", part
        assert meta[b"tilecat.config_hash"] == m["config_hash"].encode(), part
        assert json.loads(meta[b"tilecat.model_sha256"]) == {}, part  # no models configured
    # the release catalog holds exactly the survey catalog's rows
    survey = pq.read_table(built.results / "catalog.parquet")
    release = pq.ParquetDataset(parts).read()
    assert release.to_pandas().equals(survey.to_pandas())


def test_verify_ok_then_each_mismatch_reported(built, tmp_path):
    ok = subprocess.run([str(BIN / "tilecat"), "verify", str(built.release)], env=env(),
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK" in ok.stdout
    copy = tmp_path / "v1"
    shutil.copytree(built.release, copy)
    part = next((copy / "catalog").glob("part-*.parquet"))
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    (copy / "hats" / "collection.properties").unlink()
    (copy / "stray.txt").write_text("not released")
    bad = subprocess.run([str(BIN / "tilecat"), "verify", str(copy), "--skip-inputs"],
                         env=env(), capture_output=True, text=True)
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0
    assert f"catalog/{part.name}: sha256 differs" in out
    assert "hats/collection.properties: missing" in out
    assert "stray.txt: not in the manifest" in out
    assert "3 mismatch(es)" in out


def test_hats_catalog_cone_search_and_crossmatch(built):
    lsdb = pytest.importorskip("lsdb")
    survey = pq.read_table(built.results / "catalog.parquet").to_pandas()
    cat = lsdb.read_hats(built.release / "hats")
    assert cat.margin is not None
    row = survey.iloc[len(survey) // 2]
    near = cat.cone_search(ra=float(row.ra), dec=float(row.dec), radius_arcsec=1.0).compute()
    assert int(row.object_id) in set(near["object_id"].tolist())
    xm = cat.crossmatch(cat, radius_arcsec=0.5, n_neighbors=1, suffixes=("_a", "_b"),
                        suffix_method="all_columns").compute()
    assert len(xm) == len(survey)
    assert (xm["object_id_a"].to_numpy() == xm["object_id_b"].to_numpy()).all()


def test_rerun_one_tile_gives_identical_release(built):
    from tilecat.release import build_release

    proc = subprocess.run([str(BIN / "tilecat"), "rerun", "sim0001", "--config",
                           str(built.config), "--cores", "2"], env=env(), capture_output=True,
                          text=True, cwd=built.root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = build_release(_load(built.config), "v1", force=True, configfile=built.config)
    assert catalog_sums(out) == built.catalog_sums
    assert (out / "manifest.json").read_bytes() == built.manifest_bytes


def test_missing_tile_refused_unless_excluded(built):
    from tilecat.release import build_release
    from tilecat.release.build import ReleaseError

    cfg = _load(built.config)
    victim = built.results / "tiles" / "sim0002" / "catalog.parquet"
    aside = victim.with_name("catalog.parquet.aside")
    victim.rename(aside)
    try:
        with pytest.raises(ReleaseError,
                           match=r"(?s)--exclude.*sim0002: catalog output .* is missing"):
            build_release(cfg, "v2", configfile=built.config)
        assert not (built.results / "release" / "v2").exists()
        out = build_release(cfg, "v2", exclude={"sim0002": "corrupt r-band input"},
                            configfile=built.config)
    finally:
        aside.rename(victim)
    m = json.loads((out / "manifest.json").read_text())
    assert [t["tile"] for t in m["tiles"]] == ["sim0000", "sim0001"]
    (ex,) = m["excluded_tiles"]
    assert ex["tile"] == "sim0002" and ex["reason"] == "corrupt r-band input"
    tiles = set()
    for part in (out / "catalog").glob("part-*.parquet"):
        tiles |= set(pq.read_table(part, columns=["tile"])["tile"].to_pylist())
        assert json.loads(pq.read_schema(part).metadata[b"tilecat.excluded_tiles"]) == [
            "sim0002"]
    assert tiles == {"sim0000", "sim0001"}
    assert all("sim0002" not in i["path"] for i in m["inputs"])
    shutil.rmtree(out)


def test_rebuild_from_scratch_batched_two_workers(built):
    """Another plan (batches of 2 tiles, one job each) and 2 Dask workers, from an
    empty results directory: the same catalog bytes."""
    wipe(built)
    cfg = yaml.safe_load(built.config.read_text())
    cfg["dask"] = {"scheduler": "threads", "workers": 2}
    cfg["workflow"] = {"mode": "batched", "batch_size": 2}
    config = built.root / "config-batched.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(built.root, config, str(built.release))
    assert "tile_batch" in proc.stdout + proc.stderr
    assert not (built.results / "tiles" / "sim0000" / "logs").exists()
    assert sorted(p.name for p in (built.results / "batches").iterdir()) == [
        "b000000.json", "b000001.json"]
    assert catalog_sums(built.release) == built.catalog_sums


def _job_starts(line: str) -> bool:
    return line.startswith(("rule ", "localrule ")) and line.rstrip().endswith(":")


def test_sigkill_midrun_then_resume_is_identical(built):
    """SIGKILL Snakemake and its jobs at a random job; unlock, rerun with
    --rerun-incomplete: the release is byte-identical to the uninterrupted one and no
    partial Parquet or Zarr product survives."""
    wipe(built)
    seed = int(os.environ.get("TILECAT_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    kill_at = rng.randint(2, 14)  # of 17 jobs (5 per tile, aggregate, release)
    delay = rng.uniform(0.0, 2.0)
    print(f"kill seed {seed}: SIGKILL {delay:.2f} s after job {kill_at} starts")
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--configfile",
           str(built.config), "--directory", str(built.root), "--cores", "2",
           "--scheduler", "greedy", str(built.release)]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    started = 0
    deadline = time.monotonic() + 600
    assert proc.stderr is not None
    for line in proc.stderr:
        started += _job_starts(line)
        if started >= kill_at or time.monotonic() > deadline:
            break
    time.sleep(delay)
    killed_running = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed_running, "the run finished before the kill"
    assert not (built.release / "manifest.json").exists()

    unlock = snakemake(built.root, built.config, "--unlock")
    assert unlock.returncode == 0
    resumed = snakemake(built.root, built.config, "--rerun-incomplete", str(built.release))
    assert resumed.returncode == 0
    assert catalog_sums(built.release) == built.catalog_sums
    assert (built.release / "manifest.json").read_bytes() == built.manifest_bytes
    leftovers = [p for p in built.results.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [], leftovers
    from tilecat.store import open_tile

    for parquet in built.results.rglob("*.parquet"):
        pq.read_table(parquet)
    for tile in TILES:
        ds = open_tile(built.results / "tiles" / tile / "tile.zarr")
        assert {"image", "invvar", "dq", "defect_mask", "segmap"} <= set(ds.data_vars)
        ds.load()
