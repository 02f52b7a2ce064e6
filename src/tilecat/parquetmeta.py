"""Parquet tables with units and descriptions in the schema metadata (DESIGN.md §4).

Every Parquet product of tilecat (``sources.parquet``, ``catalog.parquet``, the
survey catalog) carries, in its Arrow schema metadata:

``tilecat.units``
    JSON object, column name -> unit string (astropy syntax, e.g. ``"deg"``,
    ``"nanomaggy"``, ``"arcsec"``; ``""`` for dimensionless columns).
``tilecat.descriptions``
    JSON object, column name -> one-line description.
``table_meta_yaml``
    The same units and descriptions in the YAML layout astropy's Parquet writer
    uses, so that ``astropy.table.Table.read(path)`` returns columns with units
    and descriptions.

Files are written atomically and deterministically (zstd, no pandas index, no
timestamps).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import atomic_path

__all__ = [
    "UNITS_KEY",
    "DESCRIPTIONS_KEY",
    "ASTROPY_KEY",
    "with_metadata",
    "write_table",
    "read_units",
    "read_descriptions",
    "read_metadata",
]

UNITS_KEY = b"tilecat.units"
DESCRIPTIONS_KEY = b"tilecat.descriptions"
ASTROPY_KEY = b"table_meta_yaml"


def _astropy_datatype(arrow_type: Any) -> dict[str, Any]:
    """The ``datatype``/``subtype`` entry astropy's YAML header uses for an Arrow type."""
    import pyarrow as pa

    if pa.types.is_boolean(arrow_type):
        return {"datatype": "bool"}
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        return {"datatype": str(arrow_type.to_pandas_dtype().__name__)}
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return {"datatype": "string"}
    if pa.types.is_fixed_size_list(arrow_type) or pa.types.is_list(arrow_type):
        inner = _astropy_datatype(arrow_type.value_type)["datatype"]
        if pa.types.is_fixed_size_list(arrow_type):
            return {"datatype": "string", "subtype": f"{inner}[{arrow_type.list_size}]"}
        return {"datatype": "string", "subtype": f"{inner}[null]"}
    return {"datatype": "string"}


def _astropy_yaml(schema: Any, units: dict[str, str], descriptions: dict[str, str]) -> str:
    """astropy's ``table_meta_yaml`` header for ``schema`` (units + descriptions only)."""
    import yaml

    cols = []
    for field in schema:
        entry: dict[str, Any] = {"name": field.name, **_astropy_datatype(field.type)}
        unit = units.get(field.name)
        if unit:
            entry["unit"] = unit
        desc = descriptions.get(field.name)
        if desc:
            entry["description"] = desc
        cols.append(entry)
    return yaml.safe_dump({"datatype": cols}, sort_keys=False, width=130,
                          default_flow_style=None)


def with_metadata(
    table: Any,
    units: dict[str, str],
    descriptions: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> Any:
    """Return ``table`` with units, descriptions and ``extra`` in its schema metadata.

    Parameters
    ----------
    table : pyarrow.Table
        The table; existing schema metadata is kept unless overwritten here.
    units : dict of str to str
        Column -> astropy unit string. Entries for absent columns are dropped.
    descriptions : dict of str to str
        Column -> description. Entries for absent columns are dropped.
    extra : dict, optional
        More metadata, key -> value; ``bytes`` and ``str`` values are stored as
        they are, anything else as JSON (sorted keys).

    Returns
    -------
    pyarrow.Table
        Same data, new schema metadata.
    """
    names = set(table.column_names)
    units = {k: str(v) for k, v in units.items() if k in names and v is not None}
    descriptions = {k: str(v) for k, v in descriptions.items() if k in names and v}
    meta: dict[bytes, bytes] = dict(table.schema.metadata or {})
    meta.pop(b"pandas", None)
    # astropy's table::len::<col> entries would truncate longer strings of a table
    # concatenated later (e.g. the survey catalog): never carry them over
    for key in [k for k in meta if k.startswith(b"table::len::")]:
        del meta[key]
    meta[UNITS_KEY] = json.dumps(units, sort_keys=True).encode()
    meta[DESCRIPTIONS_KEY] = json.dumps(descriptions, sort_keys=True).encode()
    meta[ASTROPY_KEY] = _astropy_yaml(table.schema, units, descriptions).encode()
    for key, value in (extra or {}).items():
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, str):
            data = value.encode()
        else:
            data = json.dumps(value, sort_keys=True).encode()
        meta[key.encode() if isinstance(key, str) else key] = data
    return table.replace_schema_metadata(dict(sorted(meta.items())))


def write_table(table: Any, path: str | Path, atomic: bool = True) -> None:
    """Write ``table`` to ``path`` (zstd, statistics, deterministic bytes).

    Parameters
    ----------
    table : pyarrow.Table
        Table to write (use :func:`with_metadata` first).
    path : path
        Final file name; a temporary file beside it is renamed onto it on success.
    atomic : bool
        False writes ``path`` directly (for a caller that already writes to a
        temporary name, e.g. inside :func:`tilecat.atomic.atomic_path`).
    """
    import pyarrow.parquet as pq

    if not atomic:
        pq.write_table(table, path, compression="zstd", write_statistics=True)
        return
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)


def read_metadata(path: str | Path) -> dict[str, str]:
    """All schema metadata of the Parquet file ``path``, decoded as UTF-8 text."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items()}


def read_units(path: str | Path) -> dict[str, str]:
    """Column -> unit string of a tilecat Parquet file (empty when absent)."""
    return json.loads(read_metadata(path).get(UNITS_KEY.decode(), "{}"))


def read_descriptions(path: str | Path) -> dict[str, str]:
    """Column -> description of a tilecat Parquet file (empty when absent)."""
    return json.loads(read_metadata(path).get(DESCRIPTIONS_KEY.decode(), "{}"))
