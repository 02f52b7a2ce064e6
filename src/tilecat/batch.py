"""Batches of tiles: the unit of work of the workflow's ``batched`` mode.

At 10^4-10^5 tiles, one Snakemake job per tile and stage costs more in planning and
scheduling than the work itself (DESIGN.md §7). In ``workflow.mode: batched`` the
Snakefile plans one job per batch of ``workflow.batch_size`` consecutive manifest
tiles; the job (``tilecat run-batch BATCH``) runs each tile's whole chain (ingest,
mask, detect, infer, catalog) in one process, through the same stage functions the
per-tile rules call, so the files written are the same bytes.

Batch ids are ``b`` + the zero-padded batch number (``b000000`` holds manifest tiles
0 .. batch_size-1). Batches are cut from the full manifest, so excluding a tile
(``release.exclude_tiles``) changes the membership of its own batch only.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError, TilecatError
from .tiles import Tile

__all__ = ["BATCH_RE", "batch_id", "batch_ids", "batch_members", "batch_marker",
           "run_tile_chain", "run_batch"]

#: Batch id pattern (Snakemake wildcard constraint).
BATCH_RE = re.compile(r"^b[0-9]+$")


def batch_id(k: int) -> str:
    """Id of batch number ``k`` (``b000042``)."""
    return f"b{k:06d}"


def batch_ids(n_tiles: int, batch_size: int) -> list[str]:
    """Ids of the batches covering ``n_tiles`` manifest tiles."""
    if batch_size < 1:
        raise ConfigError("key 'workflow.batch_size' must be >= 1")
    return [batch_id(k) for k in range((n_tiles + batch_size - 1) // batch_size)]


def batch_members(tiles: list[Tile], batch: str, batch_size: int) -> list[Tile]:
    """The manifest tiles of ``batch`` (consecutive, in manifest order).

    Raises
    ------
    ConfigError
        Malformed id, or a batch beyond the end of the manifest.
    """
    if not BATCH_RE.match(batch):
        raise ConfigError(f"batch id {batch!r} does not match {BATCH_RE.pattern}")
    k = int(batch[1:])
    members = tiles[k * batch_size:(k + 1) * batch_size]
    if not members:
        raise ConfigError(f"batch {batch} is beyond the manifest ({len(tiles)} tiles, "
                          f"batch_size {batch_size})")
    return members


def batch_marker(config: dict[str, Any], batch: str) -> Path:
    """``<results>/batches/<batch>.json``: written when every tile of the batch is done."""
    return Path(config["results"]) / "batches" / f"{batch}.json"


def run_tile_chain(config: dict[str, Any], tile: Tile) -> Path:
    """Run ingest, mask, detect, infer and catalog for one tile; return its catalog.

    The same functions as ``tilecat <stage> TILE``, so the outputs are identical to
    a per-tile run's.
    """
    from .catalog import run_catalog
    from .detect import run_detect
    from .infer import run_infer
    from .ingest import run_ingest
    from .mask import run_mask

    run_ingest(config, tile.id)
    run_mask(config, tile.id)
    run_detect(config, tile.id, tile.index)
    run_infer(config, tile.id)
    return run_catalog(config, tile.id)


def run_batch(config: dict[str, Any], batch: str) -> Path:
    """Process every tile of ``batch`` and write its marker.

    A tile that fails with a :class:`~tilecat.errors.TilecatError` (bad input,
    model) does not stop the others; the marker is written only when all succeeded.
    Excluded tiles (``release.exclude_tiles``) are skipped.

    Returns
    -------
    Path
        The marker file (JSON: batch, tiles, excluded tiles, catalog sha256 per tile).

    Raises
    ------
    TilecatError
        Naming every tile that failed and why.
    """
    from .atomic import atomic_path
    from .models import sha256_file
    from .release.selection import exclusions
    from .tiles import read_manifest

    size = int((config.get("workflow") or {}).get("batch_size", 100))
    members = batch_members(read_manifest(config["tiles"]), batch, size)
    excluded = exclusions(config)
    done: dict[str, str] = {}
    failed: list[str] = []
    for tile in members:
        if tile.id in excluded:
            print(f"[{batch}] {tile.id}: excluded (release.exclude_tiles)", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            path = run_tile_chain(config, tile)
        except TilecatError as exc:
            print(f"[{batch}] {tile.id}: error: {exc}", file=sys.stderr, flush=True)
            failed.append(f"{tile.id} ({exc})")
            continue
        done[tile.id] = sha256_file(path)
        print(f"[{batch}] {tile.id}: done in {time.perf_counter() - t0:.1f} s", flush=True)
    if failed:
        raise TilecatError(f"batch {batch}: {len(failed)} of {len(members)} tile(s) failed: "
                           + "; ".join(failed))
    marker = batch_marker(config, batch)
    doc = {"batch": batch, "tiles": list(done), "excluded": sorted(set(excluded) & {
        t.id for t in members}), "catalog_sha256": done}
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return marker
