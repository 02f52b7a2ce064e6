"""Tile ids and the tile manifest.

A tile id must match ``^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$`` (DESIGN.md §4) and is
validated before any path is built from it. The manifest is a TSV or Parquet table
with a ``tile`` column (optionally ``index``, the stable integer used in object ids),
or a glob whose matches give the tile ids through a named group.
"""

from __future__ import annotations

import glob as _glob
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, TileIdError

__all__ = ["TILE_ID_RE", "validate_tile_id", "Tile", "read_manifest", "OBJECTS_PER_TILE"]

TILE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")

#: object_id = tile index * OBJECTS_PER_TILE + source number (1-based).
OBJECTS_PER_TILE = 1_000_000


def validate_tile_id(tile: str) -> str:
    """Return ``tile`` if it is a valid tile id, else raise :class:`TileIdError`."""
    if not isinstance(tile, str) or not TILE_ID_RE.match(tile) or tile in {".", ".."}:
        raise TileIdError(
            f"invalid tile id {tile!r}: must match {TILE_ID_RE.pattern} "
            "(letters, digits, _ . + -; no path separators)"
        )
    return tile


@dataclass(frozen=True)
class Tile:
    """One tile of the survey.

    Attributes
    ----------
    id : str
        Validated tile id.
    index : int
        Stable non-negative integer; object ids are ``index * 1e6 + source``.
    """

    id: str
    index: int


def _from_rows(ids: list[str], indices: list[int] | None, source: str) -> list[Tile]:
    tiles = []
    seen: set[str] = set()
    for k, t in enumerate(ids):
        t = validate_tile_id(str(t))
        if t in seen:
            raise ConfigError(f"tile manifest {source}: tile {t!r} listed twice")
        seen.add(t)
        idx = int(indices[k]) if indices is not None else k
        if idx < 0 or idx >= 9_000_000_000_000:
            raise ConfigError(f"tile manifest {source}: tile {t!r} has index {idx} out of range")
        tiles.append(Tile(t, idx))
    if indices is not None and len({t.index for t in tiles}) != len(tiles):
        raise ConfigError(f"tile manifest {source}: duplicate tile indices")
    return tiles


def read_manifest(spec: str | Path, base: Path | None = None) -> list[Tile]:
    """Read the tile list.

    Parameters
    ----------
    spec : str or Path
        A ``.tsv``/``.csv``/``.parquet`` table with a ``tile`` column (and optional
        ``index``), or a glob pattern containing ``{tile}``, e.g.
        ``data/*/{tile}-g.fits.fz``; the tile id is what ``{tile}`` matches.
    base : Path, optional
        Directory relative paths are resolved against (default: current directory).

    Returns
    -------
    list of Tile
        In manifest order (sorted by id for globs).
    """
    spec = str(spec)
    base = Path(base) if base is not None else Path.cwd()
    if "{tile}" in spec:
        pattern = spec if Path(spec).is_absolute() else str(base / spec)
        regex = re.compile(
            "^" + re.escape(pattern).replace(re.escape("{tile}"), "(?P<tile>[^/]+)")
            .replace(r"\*", "[^/]*") + "$"
        )
        ids = set()
        for path in _glob.glob(pattern.replace("{tile}", "*")):
            m = regex.match(path)
            if m:
                ids.add(m.group("tile"))
        if not ids:
            raise ConfigError(f"tile glob {spec!r} matched no files")
        return _from_rows(sorted(ids), None, spec)
    path = Path(spec) if Path(spec).is_absolute() else base / spec
    if not path.exists():
        raise ConfigError(f"tile manifest {path} does not exist")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        cols = table.column_names
        data = {c: table.column(c).to_pylist() for c in cols}
    else:
        import csv

        delim = "," if path.suffix == ".csv" else "\t"
        with open(path, newline="") as fh:
            lines = [ln for ln in fh if ln.strip() and not ln.startswith("#")]
        reader = csv.DictReader(lines, delimiter=delim)
        rows = list(reader)
        cols = reader.fieldnames or []
        data = {c: [r[c] for r in rows] for c in cols}
    if "tile" not in cols:
        raise ConfigError(f"tile manifest {path}: no 'tile' column (columns: {cols})")
    indices = [int(v) for v in data["index"]] if "index" in cols else None
    return _from_rows(list(data["tile"]), indices, str(path))
