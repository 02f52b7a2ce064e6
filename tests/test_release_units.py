"""Releases without running the pipeline: tile selection, batches, model records, a
release built from synthetic tile catalogs (models, inputs and outputs re-hashed by
verify), and the Snakemake release targets (dry runs)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tilecat.batch import batch_ids, batch_members
from tilecat.config import config_hash, load_config
from tilecat.errors import ConfigError, ModelError
from tilecat.tiles import Tile

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
TILES = ("ta", "tb", "tc")


def _cfg(**release) -> dict:
    return {"tiles": "unused", "release": release}


def test_exclusions_and_included_tiles():
    from tilecat.release.selection import exclusions, included_tiles

    tiles = [Tile(t, k) for k, t in enumerate(TILES)]
    cfg = _cfg(exclude_tiles=["tb", {"tile": "tc", "reason": "bad r band"}])
    assert exclusions(cfg) == {"tb": "", "tc": "bad r band"}
    assert [t.id for t in included_tiles(cfg, tiles)] == ["ta"]
    with pytest.raises(ConfigError, match="not in the tile manifest"):
        included_tiles(_cfg(exclude_tiles=["tz"]), tiles)
    with pytest.raises(ConfigError, match="every tile"):
        included_tiles(_cfg(exclude_tiles=list(TILES)), tiles)
    with pytest.raises(ConfigError, match="exclude_tiles"):
        exclusions(_cfg(exclude_tiles=["../etc"]))


def test_batches():
    tiles = [Tile(f"t{k}", k) for k in range(7)]
    assert batch_ids(7, 3) == ["b000000", "b000001", "b000002"]
    assert [t.id for t in batch_members(tiles, "b000002", 3)] == ["t6"]
    with pytest.raises(ConfigError, match="beyond"):
        batch_members(tiles, "b000003", 3)
    with pytest.raises(ConfigError, match="batch id"):
        batch_members(tiles, "x1", 3)


def _fake_model(d: Path, payload: bytes, name: str) -> Path:
    d.mkdir(parents=True)
    (d / "weights.safetensors").write_bytes(payload)
    card = {"name": name, "version": "1", "classes": ["a", "b"],
            "sha256": hashlib.sha256(payload).hexdigest(), "weights": "weights.safetensors"}
    (d / "card.json").write_text(json.dumps(card))
    return d


def test_model_record_refuses_mismatched_weights(tmp_path):
    from tilecat.release.modelinfo import model_record, used_models

    good = _fake_model(tmp_path / "m", b"weights", "morphology")
    cfg = {"mask": {"model": str(good)},
           "infer": {"models": ["morphology"], "model_dirs": {"morphology": str(good)}}}
    assert [(r, n) for r, n, _ in used_models(cfg)] == [("mask", str(good)),
                                                        ("infer", "morphology")]
    rec = model_record("infer", "morphology", str(good))
    assert rec["weights_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert rec["card"]["classes"] == ["a", "b"]
    (good / "weights.safetensors").write_bytes(b"tampered")
    with pytest.raises(ModelError, match="weights.safetensors"):
        model_record("infer", "morphology", str(good))


@pytest.fixture
def synthetic(tmp_path):
    """A survey whose tiles are 'processed' (synthetic tile catalogs), with input
    files and a configured model."""
    import pyarrow as pa

    from tilecat.parquetmeta import with_metadata, write_table

    data = tmp_path / "data"
    for t in TILES:
        (data / t).mkdir(parents=True)
        for b in "gr":
            (data / t / f"{t}-{b}.fits").write_bytes(f"{t}{b}".encode() * 100)
    (data / "tiles.tsv").write_text("tile\tindex\n" + "".join(
        f"{t}\t{k}\n" for k, t in enumerate(TILES)))
    model = _fake_model(tmp_path / "models" / "morph", b"morph-weights", "morphology")
    cfg = {
        "survey": {"name": "synth", "bands": ["g", "r"], "pixel_scale": 0.262,
                   "zeropoints": {"g": 22.5, "r": 22.5},
                   "files": {"image": {"pattern": str(data / "{tile}" / "{tile}-{band}.fits")}}},
        "tiles": str(data / "tiles.tsv"),
        "results": str(tmp_path / "results"),
        "infer": {"models": ["morphology"], "model_dirs": {"morphology": str(model)}},
        "release": {"date": "2026-01-31"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    config = load_config(path)
    chash = config_hash(config)
    for k, t in enumerate(TILES):
        n = 20 + k
        rng = np.random.default_rng(k)
        table = pa.table({
            "object_id": pa.array(k * 1_000_000 + np.arange(1, n + 1), pa.int64()),
            "tile": pa.array([t] * n),
            "ra": pa.array(30.0 + k * 0.05 + rng.random(n) * 0.02),
            "dec": pa.array(-5.0 + rng.random(n) * 0.02),
            "morph_featured_raw": pa.array(rng.random(n).astype(np.float32)),
        })
        table = with_metadata(table, {"ra": "deg", "dec": "deg"}, {},
                              {"tilecat.tile": t, "tilecat.config_hash": chash})
        write_table(table, tmp_path / "results" / "tiles" / t / "catalog.parquet")
    return config, path, model


def test_release_of_synthetic_survey_then_verify(synthetic):
    from tilecat.release import build_release, verify_release

    config, path, model = synthetic
    out = build_release(config, "dr1", configfile=path)
    m = json.loads((out / "manifest.json").read_text())
    (rec,) = m["models"]
    assert rec["name"] == "morphology" and rec["weights_sha256"] == hashlib.sha256(
        b"morph-weights").hexdigest()
    assert rec["card"]["classes"] == ["a", "b"]
    assert len(m["inputs"]) == 1 + 2 * len(TILES)
    assert m["catalog"]["rows"] == 20 + 21 + 22
    import pyarrow.parquet as pq

    part = next((out / "catalog").glob("part-*.parquet"))
    meta = pq.read_schema(part).metadata
    assert json.loads(meta[b"tilecat.model_sha256"]) == {"infer:morphology": rec[
        "weights_sha256"]}
    assert "hats_creation_date=2026-01-31" in (out / "hats" / "collection.properties"
                                               ).read_text()
    assert verify_release(out).ok

    with pytest.raises(Exception, match="exists"):
        build_release(config, "dr1", configfile=path)
    # change a model's weights and an input: verify names both files
    (model / "weights.safetensors").write_bytes(b"other")
    fits = Path(config["survey"]["files"]["image"]["pattern"].format(tile="tb", band="r"))
    fits.write_bytes(b"changed")
    report = verify_release(out)
    found = {(x.kind, Path(x.path).name, x.problem) for x in report.mismatches}
    assert found == {("model", "weights.safetensors", "sha256 differs"),
                     ("input", "tb-r.fits", "sha256 differs")}
    assert verify_release(out, inputs=False).mismatches[0].kind == "model"


def _dry_run(config: Path, workdir: Path, *targets: str) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--configfile",
           str(config), "--directory", str(workdir), "--cores", "1", "-n", *targets]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_snakemake_release_targets(synthetic, tmp_path):
    config, path, _ = synthetic
    cfg = yaml.safe_load(path.read_text())
    cfg["workflow"] = {"mode": "batched", "batch_size": 2}
    batched = tmp_path / "batched.yaml"
    batched.write_text(yaml.safe_dump(cfg))
    proc = _dry_run(batched, tmp_path, "release")
    assert proc.returncode != 0 and "needs release.version" in proc.stdout + proc.stderr
    cfg["release"]["version"] = "dr2"
    batched.write_text(yaml.safe_dump(cfg))
    proc = _dry_run(batched, tmp_path, "release")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for rule, n in (("tile_batch", 2), ("aggregate", 1), ("build_release", 1)):
        assert any(line.split() == [rule, str(n)] for line in out.splitlines()), out


def test_cli_excludes_and_rerun_target_in_batched_mode(synthetic):
    from tilecat.cli import _parse_excludes
    from tilecat.errors import TileIdError
    from tilecat.workflow import _batch_of

    assert _parse_excludes(["ta=corrupt r band", "tb"]) == {"ta": "corrupt r band", "tb": ""}
    with pytest.raises(TileIdError):
        _parse_excludes(["../x=bad"])
    config = dict(synthetic[0], workflow={"mode": "batched", "batch_size": 2})
    assert _batch_of(config, "tc") == Path(config["results"]) / "batches" / "b000001.json"
