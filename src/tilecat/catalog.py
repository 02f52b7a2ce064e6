"""Tile catalog: the detect stage's photometry joined with model outputs on object_id.

Writes ``<results>/tiles/<tile>/catalog.parquet`` with the schema of DESIGN.md §4:
fixed row order (by object_id), units and descriptions in the schema metadata,
provenance (tile, config hash, tilecat version, model checksums) in file metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import config_hash
from .errors import InputError
from .survey import tile_paths

__all__ = ["run_catalog", "join_tables"]


def _read(tile: str, path: Path) -> Any:
    import pyarrow.parquet as pq

    if not path.exists():
        raise InputError(tile, str(path), "missing (has the previous stage run?)")
    try:
        return pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(tile, str(path), f"not a readable Parquet file: {exc}") from exc


def _meta_json(table: Any, key: bytes) -> dict[str, Any]:
    meta = table.schema.metadata or {}
    return json.loads(meta[key]) if key in meta else {}


def join_tables(tile: str, sources: Any, infer: Any, infer_path: str = "") -> Any:
    """Append the model-output columns of ``infer`` to ``sources``.

    Parameters
    ----------
    tile : str
        Tile id (for error messages).
    sources, infer : pyarrow.Table
        Both with an ``object_id`` column; ``infer`` must hold exactly the same ids.

    Returns
    -------
    pyarrow.Table
        ``sources`` sorted by object_id with the extra columns of ``infer``.
    """
    import pyarrow.compute as pc

    sources = sources.take(pc.sort_indices(sources["object_id"]))
    infer = infer.take(pc.sort_indices(infer["object_id"]))
    ids_s = sources["object_id"].to_numpy()
    ids_i = infer["object_id"].to_numpy()
    if ids_s.shape != ids_i.shape or not np.array_equal(ids_s, ids_i):
        raise InputError(tile, infer_path,
                         f"model outputs cover {len(ids_i)} objects, the tile has {len(ids_s)}; "
                         "object ids differ (rerun infer)")
    for name in infer.column_names:
        if name == "object_id":
            continue
        if name in sources.column_names:
            raise InputError(tile, infer_path, f"column {name!r} is in both sources and infer")
        sources = sources.append_column(infer.schema.field(name), infer[name])
    return sources


def run_catalog(config: dict[str, Any], tile: str) -> Path:
    """Write the tile's catalog.

    Parameters
    ----------
    config : dict
        Validated configuration.
    tile : str
        Tile id.

    Returns
    -------
    Path
        The catalog file.
    """
    from .parquetmeta import with_metadata, write_table

    paths = tile_paths(config, tile)
    sources = _read(tile, paths["sources"])
    infer = _read(tile, paths["infer"])
    table = join_tables(tile, sources, infer, str(paths["infer"]))
    units = {**_meta_json(sources, b"tilecat.units"), **_meta_json(infer, b"tilecat.units")}
    desc = {**_meta_json(sources, b"tilecat.descriptions"),
            **_meta_json(infer, b"tilecat.descriptions")}
    extra = {
        "tilecat.tile": tile,
        "tilecat.survey": config["survey"]["name"],
        "tilecat.config_hash": config_hash(config),
        "tilecat.version": __version__,
        "tilecat.models": json.dumps(_meta_json(infer, b"tilecat.models"), sort_keys=True),
    }
    for key, value in (infer.schema.metadata or {}).items():
        k = key.decode()
        if k.startswith("tilecat.") and k not in extra and k not in (
                "tilecat.units", "tilecat.descriptions", "tilecat.models"):
            extra[k] = value.decode()
    table = with_metadata(table.replace_schema_metadata(None), units, desc, extra)
    write_table(table, paths["catalog"])
    return paths["catalog"]
