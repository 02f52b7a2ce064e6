"""Read a tile's ``cutouts.zarr`` once, in chunk-aligned blocks.

Contract (DESIGN §4): ``stamp(object, band, y, x) float32`` = arcsinh(F / sigma_band)
and ``object_id(object) int64``; band names as the ``band`` coordinate (or the
``bands`` attribute).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["Cutouts", "open_cutouts"]


@dataclass
class Cutouts:
    """An opened cutouts store (stamps not read yet).

    Attributes
    ----------
    path : Path
        The Zarr store.
    object_id : ndarray of int64, shape (N,)
        Object ids in store order.
    bands : list of str
        Band names in the order of the band axis.
    size : int
        Stamp side in pixels.
    chunk : int
        Objects per Zarr chunk along ``object`` (reads are aligned to it).
    attrs : dict
        The store's attributes (e.g. ``psf``, the Moffat PSF per band from detect).
    """

    path: Path
    object_id: np.ndarray
    bands: list[str]
    size: int
    chunk: int
    _stamp: Any
    attrs: dict[str, Any] = field(default_factory=dict)
    _extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.object_id.shape[0])

    @property
    def variables(self) -> list[str]:
        """Names of the other per-object variables (e.g. ``sigma``), readable with :meth:`read`."""
        return sorted(self._extra)

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Per-object variable ``name`` for objects ``[start, stop)``, float32 ``(n, ...)``.

        Non-finite values are replaced by 0.
        """
        values = np.asarray(self._extra[name][start:stop].values, dtype=np.float32)
        return np.ascontiguousarray(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0))

    def blocks(self, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, stamps)`` blocks covering every object once, in order.

        A block holds a whole number of Zarr chunks and at least ``batch_size``
        objects (fewer at the end), so each stored chunk is read exactly once.

        Yields
        ------
        start : int
            Index of the block's first object.
        stamps : ndarray of float32, shape (n, band, size, size)
            Non-finite values replaced by 0 (the background level in arcsinh units).
        """
        n = len(self)
        step = max(1, -(-batch_size // self.chunk)) * self.chunk
        for start in range(0, n, step):
            block = np.asarray(self._stamp[start:start + step].values, dtype=np.float32)
            if not np.isfinite(block).all():
                block = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
            yield start, np.ascontiguousarray(block)


def open_cutouts(path: str | Path, tile: str) -> Cutouts:
    """Open and validate ``cutouts.zarr``.

    Raises
    ------
    InputError
        The store is missing, unreadable, or does not follow the contract.
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise InputError(tile, str(path), "cutouts store does not exist (run detect first)")
    try:
        ds = xr.open_dataset(path, engine="zarr", consolidated=False, chunks=None)
    except Exception as exc:  # zarr/xarray raise many types for a broken store
        raise InputError(tile, str(path), f"cannot open cutouts store: {exc}") from exc
    for var in ("stamp", "object_id"):
        if var not in ds.variables:
            raise InputError(tile, str(path), f"cutouts store has no variable {var!r}")
    stamp = ds["stamp"]
    if stamp.dims != ("object", "band", "y", "x"):
        raise InputError(tile, str(path),
                         f"stamp has dims {stamp.dims}, expected ('object', 'band', 'y', 'x')")
    if stamp.sizes["y"] != stamp.sizes["x"]:
        raise InputError(tile, str(path), f"stamps are not square: {dict(stamp.sizes)}")
    oid = ds["object_id"]
    if oid.dims != ("object",) or not np.issubdtype(oid.dtype, np.integer):
        raise InputError(tile, str(path), "object_id must be an integer array along 'object'")
    object_id = np.asarray(oid.values, dtype=np.int64)
    if "band" in ds.coords:
        bands = [str(b) for b in ds["band"].values]
    else:
        bands = [str(b) for b in ds.attrs.get("bands", [])]
    if len(bands) != stamp.sizes["band"]:
        raise InputError(tile, str(path), "band names missing or not matching the band axis")
    if np.unique(object_id).size != object_id.size:
        raise InputError(tile, str(path), "object_id values are not unique")
    chunks = stamp.encoding.get("chunks") or (max(1, stamp.sizes["object"]),)
    return Cutouts(
        path=path,
        object_id=object_id,
        bands=bands,
        size=int(stamp.sizes["y"]),
        chunk=max(1, int(chunks[0])),
        _stamp=stamp.variable,
        attrs=dict(ds.attrs),
        _extra={str(k): ds[k].variable for k in ds.data_vars
                if k not in ("stamp", "object_id") and ds[k].dims[:1] == ("object",)
                and np.issubdtype(ds[k].dtype, np.number)},
    )
