"""Units and descriptions in Parquet schema metadata, readable by astropy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tilecat.parquetmeta import (
    read_descriptions,
    read_metadata,
    read_units,
    with_metadata,
    write_table,
)


def _table() -> pa.Table:
    return pa.table({
        "object_id": pa.array([3, 1], pa.int64()),
        "tile": ["a1", "a1"],
        "ra": [10.5, 11.25],
        "flux_g": pa.array([1.5, 2.0], pa.float32()),
        "ok": [True, False],
        "z_pdf": pa.array([[0.25, 0.75], [0.5, 0.5]], pa.list_(pa.float16())),
        "latent": pa.array([[1, 2, 3], [4, 5, 6]], pa.list_(pa.float32(), 3)),
    })


@pytest.mark.filterwarnings("ignore:No table..len")
def test_roundtrip_and_astropy(tmp_path: Path) -> None:
    from astropy.table import Table

    t = with_metadata(_table(), {"ra": "deg", "flux_g": "nanomaggy", "gone": "m"},
                      {"ra": "right ascension", "flux_g": "g flux"},
                      {"tilecat.tile": "a1", "tilecat.models": {"b": 1, "a": [2]}})
    path = tmp_path / "t.parquet"
    write_table(t, path)
    assert read_units(path) == {"ra": "deg", "flux_g": "nanomaggy"}
    assert read_descriptions(path)["ra"] == "right ascension"
    meta = read_metadata(path)
    assert meta["tilecat.tile"] == "a1"
    assert json.loads(meta["tilecat.models"]) == {"a": [2], "b": 1}
    at = Table.read(path)
    assert str(at["ra"].unit) == "deg" and str(at["flux_g"].unit) == "nmgy"
    assert at["flux_g"].description == "g flux"
    assert at["latent"].shape == (2, 3)
    assert np.array_equal(pq.read_table(path)["object_id"].to_numpy(), [3, 1])


def test_deterministic_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    for p in (a, b):
        write_table(with_metadata(_table(), {"ra": "deg"}, {}, {"x": "1"}), p)
    assert a.read_bytes() == b.read_bytes()
    assert pq.ParquetFile(a).metadata.row_group(0).column(0).compression == "ZSTD"


def test_atomic_write(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_table(with_metadata(_table(), {}, {}, {}), path)
    before = path.read_bytes()
    with pytest.raises(Exception):
        write_table(_Bad(), path)  # type: ignore[arg-type]
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


class _Bad:
    """Not a table: pyarrow fails while writing."""
