"""End-to-end: the Snakemake workflow on a tiny simulated survey (3 tiles x 4 bands x 256^2)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from workflow_helpers import BIN, REPO, env, sha256, simulate_tiny, snakemake, tree_state, \
    write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """A tiny survey, processed once by the whole workflow."""
    root = tmp_path_factory.mktemp("wf")
    data = simulate_tiny(root)
    results = root / "results"
    config = write_config(root, data, results)
    snakemake(root, config)
    return root, data, results, config


def test_survey_catalog_complete(survey):
    root, data, results, _ = survey
    table = pq.read_table(results / "catalog.parquet")
    ids = table["object_id"].to_numpy()
    assert table.num_rows > 50
    assert np.all(np.diff(ids) > 0), "rows must be ordered by unique object_id"
    assert set(table["tile"].to_pylist()) == {"sim0000", "sim0001", "sim0002"}
    # object_id = tile index * 1e6 + source number
    assert set((ids // 1_000_000).tolist()) == {0, 1, 2}
    # the partitioned dataset holds the same rows
    parts = sorted((results / "catalog").glob("part-*.parquet"))
    assert parts and sum(pq.read_metadata(p).num_rows for p in parts) == table.num_rows
    meta = table.schema.metadata
    assert b"tilecat.units" in meta and b"tilecat.config_hash" in meta
    for band in "griz":
        assert f"flux_{band}" in table.column_names and f"mag_err_{band}" in table.column_names


def test_catalog_matches_truth(survey):
    """Bright isolated truth objects are detected near their true position."""
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    root, data, results, _ = survey
    cat = pq.read_table(results / "catalog.parquet").to_pandas()
    found = total = 0
    ratios = []
    for tile in ("sim0000", "sim0001", "sim0002"):
        truth = pq.read_table(data / tile / "truth.parquet").to_pandas()
        bright = truth[(truth["mag_r"] < 22.0) & (truth["x"] > 10) & (truth["x"] < 245)
                       & (truth["y"] > 10) & (truth["y"] < 245)]
        # leave out objects in the halo or bleed trail of a saturated star
        sat = truth[truth["mag_r"] < 16.0]
        if len(sat):
            d = np.hypot(bright["x"].values[:, None] - sat["x"].values[None, :],
                         bright["y"].values[:, None] - sat["y"].values[None, :])
            bright = bright[(d.min(axis=1) > 60) | (bright["mag_r"].values < 16.0)]
        sub = cat[cat["tile"] == tile]
        if len(bright) == 0 or len(sub) == 0:
            continue
        c_truth = SkyCoord(bright["ra"].values * u.deg, bright["dec"].values * u.deg)
        c_cat = SkyCoord(sub["ra"].values * u.deg, sub["dec"].values * u.deg)
        idx, sep, _ = c_truth.match_to_catalog_sky(c_cat)
        ok = sep.arcsec < 1.0
        found += int(ok.sum())
        total += len(bright)
        ratios += list(sub["flux_r"].values[idx[ok]] / bright["flux_r"].values[ok])
    assert total >= 5
    assert found / total >= 0.9
    assert 0.8 < np.median(ratios) < 1.2


def test_lint(survey):
    root, _, _, config = survey
    proc = subprocess.run([str(BIN / "snakemake"), "--lint", "--snakefile", str(REPO / "Snakefile"),
                           "--configfile", str(config), "--directory", str(root)],
                          env=env(), capture_output=True, text=True)
    assert "Congratulations" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_rerun_one_tile_touches_nothing_else(survey):
    root, data, results, config = survey
    before = {t: tree_state(results / "tiles" / t) for t in ("sim0000", "sim0002")}
    mine = tree_state(results / "tiles" / "sim0001")
    cat_before = sha256(results / "catalog.parquet")
    mtime_before = (results / "catalog.parquet").stat().st_mtime_ns
    proc = subprocess.run([str(BIN / "tilecat"), "rerun", "sim0001", "--config", str(config),
                           "--cores", "2"], env=env(), capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for t, state in before.items():
        assert tree_state(results / "tiles" / t) == state, f"tile {t} was touched"
    after = tree_state(results / "tiles" / "sim0001")
    assert after["catalog.parquet"][0] > mine["catalog.parquet"][0], "tile not rebuilt"
    assert after["catalog.parquet"][1] == mine["catalog.parquet"][1], "rebuild not identical"
    assert (results / "catalog.parquet").stat().st_mtime_ns > mtime_before, "aggregate not rerun"
    assert sha256(results / "catalog.parquet") == cat_before


def test_keep_going_with_a_corrupt_tile(survey, tmp_path):
    root, data, _, _ = survey
    bad = tmp_path / "data"
    shutil.copytree(data, bad)
    victim = bad / "sim0001" / "sim0001-r.fits.fz"
    victim.write_bytes(victim.read_bytes()[:5000])  # truncated FITS
    results = tmp_path / "results"
    config = write_config(tmp_path, bad, results)
    proc = snakemake(tmp_path, config, "--keep-going", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "sim0001" in out and "sim0001-r.fits.fz" in out
    for good in ("sim0000", "sim0002"):
        assert (results / "tiles" / good / "catalog.parquet").exists()
    assert not (results / "tiles" / "sim0001" / "catalog.parquet").exists()
    assert not (results / "tiles" / "sim0001" / "tile.zarr" / "image").exists()
    assert not (results / "catalog.parquet").exists()
