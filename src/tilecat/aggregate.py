"""Survey catalog: every tile's catalog into one partitioned Parquet dataset and one file.

The tile catalogs are read and written as a Dask collection (one task per tile for
reading, one per output partition for writing) under the scheduler named in the
config. Arrow tables go through unchanged: a pandas round trip would lose the exact
Arrow types of the model columns (float16 PDFs, fixed-size latent vectors).

When the tile catalogs hold probability outputs (morphology, photo-z), the probability
stage of :mod:`tilecat.priors.stage` adds the calibrated (``_cal``) and prior-corrected
(``_post``) columns: survey priors come from ``survey.priors`` or from EM over every
tile (each iteration one Dask map-reduce over per-partition arrays persisted once),
and are recorded in the file metadata. Without such columns the catalog is the tiles'
columns only.

Outputs (atomic: written aside, then renamed):
``<results>/catalog/part-NNNNN.parquet`` (consecutive tiles, ``tiles_per_file`` each)
and ``<results>/catalog.parquet``. Rows are ordered by object_id.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import __version__
from .config import config_hash
from .errors import InputError
from .release.selection import included_tiles
from .tiles import Tile

__all__ = ["run_aggregate", "tile_catalog_paths", "survey_metadata"]


def tile_catalog_paths(config: dict[str, Any], tiles: list[Tile]) -> list[Path]:
    """Catalog path of every tile, in manifest order; error if one is missing."""
    from .survey import tile_paths

    paths = [tile_paths(config, t.id)["catalog"] for t in tiles]
    for t, p in zip(tiles, paths):
        if not p.exists():
            raise InputError(t.id, str(p), "tile catalog missing: the tile has not been processed")
    return paths


def _read_tile(path: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _concat(tables: list[Any]) -> Any:
    import pyarrow as pa

    tables = [t.replace_schema_metadata(None) for t in tables]
    return pa.concat_tables(tables, promote_options="permissive")


def _write_part(tables: list[Any], path: Path, metadata: dict[bytes, bytes]) -> int:
    from .parquetmeta import write_table

    table = _concat(tables)
    write_table(table.replace_schema_metadata(metadata), path)
    return table.num_rows


def survey_metadata(config: dict[str, Any], tiles: list[Tile], first: Any) -> dict[bytes, bytes]:
    """File metadata of the survey catalog: column units/descriptions of the tile
    catalogs plus survey provenance (no timestamps: byte-identical reruns)."""
    meta = dict(first.schema.metadata or {})
    for key in [k for k in meta if k in (b"tilecat.tile",)]:
        del meta[key]
    meta.update({
        b"tilecat.survey": config["survey"]["name"].encode(),
        b"tilecat.config_hash": config_hash(config).encode(),
        b"tilecat.version": __version__.encode(),
        b"tilecat.tiles": json.dumps([t.id for t in tiles]).encode(),
    })
    return meta


def run_aggregate(config: dict[str, Any]) -> Path:
    """Build the survey catalog from all tile catalogs.

    Parameters
    ----------
    config : dict
        Validated configuration.

    Returns
    -------
    Path
        The single-file survey catalog path.
    """
    import dask
    import pyarrow.parquet as pq

    from .atomic import atomic_path, replace_dir
    from .daskutil import dask_context, settled_compute

    results = Path(config["results"])
    tiles = included_tiles(config)  # the manifest less release.exclude_tiles
    paths = tile_catalog_paths(config, tiles)
    per = int(config["aggregate"]["tiles_per_file"])
    first = pq.read_schema(paths[0])
    meta = survey_metadata(config, tiles, first.empty_table().replace_schema_metadata(
        first.metadata))

    results.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".catalog.", suffix=".tmp", dir=results))
    try:
        with dask_context(config):
            reads = [dask.delayed(_read_tile)(p) for p in paths]
            correction = _probability_stage(config, first, paths, per)
            if correction is not None:
                reads = [dask.delayed(correction.apply)(r, t.id) for r, t in zip(reads, tiles)]
                meta = _probability_metadata(meta, first, correction)
            groups = [reads[i:i + per] for i in range(0, len(reads), per)]
            writes = [dask.delayed(_write_part)(g, tmp / f"part-{k:05d}.parquet", meta)
                      for k, g in enumerate(groups)]
            counts = settled_compute(*writes)
        total = int(sum(counts))
        single = results / "catalog.parquet"
        if total <= config["aggregate"]["single_file_max_rows"]:
            parts = sorted(tmp.glob("part-*.parquet"))
            with atomic_path(single) as out:
                _concat_files(parts, out, meta)
        replace_dir(tmp, results / "catalog")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"survey catalog: {total} objects from {len(tiles)} tiles -> {single} "
          f"and {results / 'catalog'}/")
    return single


def _concat_files(parts: list[Path], out: Path, meta: dict[bytes, bytes]) -> None:
    """Stream the partition files into one Parquet file (one row group per part)."""
    import pyarrow.parquet as pq

    from .parquetmeta import write_table

    tables = [pq.read_table(p) for p in parts]
    write_table(_concat(tables).replace_schema_metadata(meta), out, atomic=False)


def _probability_stage(config: dict[str, Any], schema: Any, paths: list[Path], per: int) -> Any:
    """Plan the probability stage and estimate the survey priors (None: no probability columns).

    The calibrated probabilities of each group of ``per`` tiles are read once and
    persisted; every EM iteration is then one map-reduce over them, and one more gives
    the shift tests (``aggregate.shift_test_alpha``) that decide which estimates are used.
    """
    import dask

    from .priors.em import dask_map_reduce
    from .priors.stage import plan_correction

    correction = plan_correction(config, schema)
    if correction is None:
        return None
    blocks = [dask.delayed(correction.block)(paths[i:i + per]) for i in range(0, len(paths), per)]
    blocks = list(dask.persist(*blocks))
    result = correction.estimate(dask_map_reduce(blocks))
    if any(g.source == "em" for g in correction.prior_groups):
        print(f"survey priors: EM {'converged' if result.converged else 'stopped'} after "
              f"{result.n_iter} iterations (tol {correction.em_tol:g})")
        kept = correction.kept_training()
        if kept:
            print(f"survey priors: no significant shift (level {correction.shift_alpha:g}) "
                  f"for {', '.join(kept)}: training prior kept (_post = _cal)")
    return correction


def _probability_metadata(meta: dict[bytes, bytes], schema: Any, correction: Any
                          ) -> dict[bytes, bytes]:
    """Survey metadata with the new columns' units/descriptions, the priors and calibration."""
    from .parquetmeta import DESCRIPTIONS_KEY, UNITS_KEY, with_metadata

    empty = correction.apply(schema.empty_table())
    units = json.loads(meta.get(UNITS_KEY, b"{}"))
    descriptions = json.loads(meta.get(DESCRIPTIONS_KEY, b"{}"))
    added = correction.descriptions()
    units.update({c: "" for c in added})
    descriptions.update(added)
    table = with_metadata(empty.replace_schema_metadata(meta), units, descriptions,
                          correction.file_metadata())
    return dict(table.schema.metadata)
