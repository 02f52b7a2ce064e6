"""The per-tile Zarr v3 store (``tile.zarr``), DESIGN.md §4.

Each stage owns some arrays of the store (ingest: ``band``, ``image``, ``invvar``,
``dq``; mask: ``class``, ``defect_prob``, ``defect_mask``; detect: ``segmap``) and
writes them atomically: the arrays are written to a temporary store beside the tile
and each array directory is then renamed into place. Snakemake declares these array
directories as the stages' outputs, so a stage never rewrites another's files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, replace_dir
from .daskutil import settled_compute

__all__ = ["write_group", "write_arrays", "open_tile", "read_attrs", "compressors"]


def compressors(clevel: int = 3) -> list[Any]:
    """zstd + bitshuffle via Blosc, the store's codec."""
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="zstd", clevel=clevel, shuffle="bitshuffle")]


def write_group(store: str | Path, attrs: dict[str, Any]) -> None:
    """Create (or update the attributes of) the group ``store`` atomically.

    Parameters
    ----------
    store : path
        The ``tile.zarr`` directory.
    attrs : dict
        JSON-serialisable group attributes (WCS header, zeropoints, provenance...).
    """
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    meta = {"attributes": attrs, "zarr_format": 3, "node_type": "group"}
    with atomic_path(store / "zarr.json") as tmp:
        tmp.write_text(json.dumps(meta, sort_keys=True, indent=2, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def read_attrs(store: str | Path) -> dict[str, Any]:
    """The group attributes of ``store``."""
    meta = json.loads((Path(store) / "zarr.json").read_text())
    return meta.get("attributes", {})


def write_arrays(
    store: str | Path,
    arrays: dict[str, Any],
    chunks: dict[str, tuple[int, ...]] | None = None,
    clevel: int = 3,
    compute: bool = True,
    extra: tuple[Any, ...] = (),
    check: Callable[[tuple[Any, ...]], None] | None = None,
) -> None:
    """Write xarray DataArrays (numpy or dask backed) into ``store`` atomically.

    Parameters
    ----------
    store : path
        Existing group (see :func:`write_group`).
    arrays : dict of str to xarray.DataArray
        The arrays this stage owns. Their dimension coordinates are written too
        when the store does not have them yet.
    chunks : dict, optional
        Zarr chunk shape per array name.
    clevel : int
        zstd level.
    compute : bool
        Passed to ``to_zarr`` (dask arrays are computed with the active scheduler).
    extra : tuple, optional
        Further dask collections computed in the same pass as the arrays (tasks they
        share, e.g. reading an input block, run once).
    check : callable, optional
        Called with the computed ``extra`` after the arrays are written aside and
        before anything is moved into ``store``; raising aborts the write and leaves
        ``store`` untouched.
    """
    import xarray as xr

    store = Path(store)
    if not (store / "zarr.json").exists():
        raise FileNotFoundError(f"{store} is not a tile store (no zarr.json)")
    chunks = chunks or {}
    ds = xr.Dataset(arrays)
    encoding = {}
    for name in arrays:
        enc: dict[str, Any] = {"compressors": compressors(clevel)}
        if name in chunks:
            enc["chunks"] = chunks[name]
        encoding[name] = enc
    tmpdir = Path(tempfile.mkdtemp(prefix=".write-", dir=store.parent))
    try:
        pending = ds.to_zarr(tmpdir / "t.zarr", mode="w", zarr_format=3,
                             consolidated=False, encoding=encoding, compute=False)
        if compute or extra or check is not None:
            # settled: no chunk is still being written when the scratch dir is removed
            results = settled_compute(pending, *extra)[1:]
            if check is not None:
                check(tuple(results))
        for name in list(arrays) + [str(c) for c in ds.coords]:
            src = tmpdir / "t.zarr" / name
            if not src.exists():
                continue
            dst = store / name
            if name in arrays:
                replace_dir(src, dst)
            elif not dst.exists():
                os.replace(src, dst)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def open_tile(store: str | Path, chunks: Any = None) -> Any:
    """Open ``tile.zarr`` as an xarray Dataset (lazy, dask-backed).

    Returns
    -------
    xarray.Dataset
        Variables as listed in DESIGN.md §4; attrs are the group attributes.
    """
    import xarray as xr

    ds = xr.open_zarr(store, consolidated=False, chunks=chunks if chunks is not None else {})
    return ds
