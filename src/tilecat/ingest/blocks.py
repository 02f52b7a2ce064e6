"""Dask per-block readers: one ``dask.delayed`` task per block reads a band's image,
weight and DQ planes for that block and returns the three tilecat arrays.

Not ``da.from_array`` on an astropy memmap (which ships the whole array through the
graph under distributed): every task carries only a small :class:`BandPlan` and the
block's slices, and opens the files itself. A block spans whole zarr chunks (rows of
``chunk`` pixels, several chunks wide) so that each input byte is read and each
compressed input tile is decompressed once.

Per pixel (DESIGN.md §4, ``tilecat.bits``):

- image: float32; non-finite pixels -> 0 with invvar 0;
- invvar: float32 flux^-2 from the weight plane (:mod:`.weights`), or a uniform
  robust-noise estimate when no weight plane is configured;
- dq: uint16, the remapped input DQ (:mod:`.dq`, zeros without a DQ plane) plus the
  rule bit ``nodata`` where invvar == 0 or the image is non-finite.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bits import bit
from ..errors import InputError
from .dq import DQRemap
from .fitsread import Plane, read_block
from .weights import noise_sigma, to_invvar, uniform_invvar

__all__ = ["BandPlan", "BandArrays", "block_slices", "read_band_block", "band_arrays"]

NODATA = np.uint16(bit("nodata"))

#: Largest block (pixels) a task reads; blocks are ``chunk`` rows by whole chunks.
MAX_BLOCK_PIXELS = 1 << 23


@dataclass(frozen=True)
class BandPlan:
    """What a worker needs to read one band of a tile (small, picklable).

    Attributes
    ----------
    tile, band : str
    image : Plane
    weight : Plane or None
    weight_kind : str
        ``invvar`` or ``variance`` ('' without weight).
    dq : Plane or None
    dq_remap : DQRemap or None
    """

    tile: str
    band: str
    image: Plane
    weight: Plane | None
    weight_kind: str
    dq: Plane | None
    dq_remap: DQRemap | None


@dataclass
class BandArrays:
    """Lazy arrays of one band plus the per-band statistics of the same pass.

    Attributes
    ----------
    image, invvar : dask.array.Array of float32, shape (ny, nx)
    dq : dask.array.Array of uint16, shape (ny, nx)
    stats : dask.delayed.Delayed
        Computes to a dict: ``npix``, ``nvalid`` (invvar > 0), ``nweight`` (usable
        weight pixels, -1 without weight plane), ``nnonfinite`` (image), ``sigma``
        (estimated noise, None unless estimated).
    """

    image: Any
    invvar: Any
    dq: Any
    stats: Any


def block_slices(shape: tuple[int, int], chunk: int) -> list[list[tuple[slice, slice]]]:
    """The grid of read blocks: rows of ``chunk`` pixels, as many whole chunks wide
    as fit in :data:`MAX_BLOCK_PIXELS`.

    Returns
    -------
    list of list of (slice, slice)
        ``[row][col] -> (ys, xs)``.
    """
    ny, nx = shape
    ncols = max(1, MAX_BLOCK_PIXELS // (chunk * chunk))
    width = nx if ncols * chunk >= nx else ncols * chunk
    rows = []
    for y0 in range(0, ny, chunk):
        ys = slice(y0, min(y0 + chunk, ny))
        rows.append([(ys, slice(x0, min(x0 + width, nx))) for x0 in range(0, nx, width)])
    return rows


def read_band_block(
    plan: BandPlan, ys: slice, xs: slice
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, dict[str, Any]]:
    """Read and convert one block of one band.

    Parameters
    ----------
    plan : BandPlan
    ys, xs : slice
        Rows and columns of the block.

    Returns
    -------
    image : ndarray of float32, shape (ny, nx)
    invvar : ndarray of float32 or None
        None when the band has no weight plane (estimated later, band-wide).
    dq : ndarray of uint16
    stats : dict
        Block counts (see :class:`BandArrays`).
    """
    where = f" in rows {ys.start}:{ys.stop}, cols {xs.start}:{xs.stop}"
    image = read_block(plan.image, ys, xs)
    if image.dtype != np.float32:
        image = image.astype(np.float32)
    nonfinite = None
    if image.size and not (np.isfinite(image.min()) and np.isfinite(image.max())):
        nonfinite = ~np.isfinite(image)  # min/max propagate NaN and inf: rare slow path
        image[nonfinite] = 0.0
    nnonfinite = int(np.count_nonzero(nonfinite)) if nonfinite is not None else 0

    if plan.dq is not None and plan.dq_remap is not None:
        dq = plan.dq_remap(read_block(plan.dq, ys, xs), plan.tile, str(plan.dq.path))
    else:
        dq = np.zeros(image.shape, dtype=np.uint16)

    stats: dict[str, Any] = {"npix": int(image.size), "nnonfinite": nnonfinite}
    if plan.weight is not None:
        invvar, nodata = to_invvar(
            read_block(plan.weight, ys, xs), plan.weight_kind, plan.tile,
            str(plan.weight.path), where=where, overwrite=True,
        )
        stats["nweight"] = int(nodata.size - np.count_nonzero(nodata))
        if nonfinite is not None:
            invvar[nonfinite] = 0.0
            nodata |= nonfinite
        stats["nvalid"] = int(nodata.size - np.count_nonzero(nodata))
        stats["sigma"] = None
    else:
        invvar = None
        nodata = nonfinite if nonfinite is not None else np.zeros(image.shape, dtype=bool)
        stats["nweight"] = -1
        stats["nvalid"] = int(image.size - nnonfinite)
        finite = ~nonfinite if nonfinite is not None else None
        stats["sigma"] = noise_sigma(image, finite) if stats["nvalid"] else float("nan")
    np.bitwise_or(dq, NODATA, out=dq, where=nodata)
    return image, invvar, dq, stats


def _sum_stats(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    out = {k: sum(b[k] for b in blocks) for k in ("npix", "nnonfinite", "nweight", "nvalid")}
    if blocks and blocks[0]["nweight"] < 0:
        out["nweight"] = -1
    sig = [b["sigma"] for b in blocks if b["sigma"] is not None and np.isfinite(b["sigma"])]
    out["sigma"] = float(np.median(sig)) if sig else None
    return out


def _band_sigma(plan: BandPlan, stats: list[dict[str, Any]]) -> float:
    sig = [s["sigma"] for s in stats if s["sigma"] is not None and np.isfinite(s["sigma"])]
    if not sig:
        raise InputError(
            plan.tile, str(plan.image.path), f"band {plan.band}: no weight file configured and "
            "the image noise cannot be estimated (no finite, non-constant pixels)"
        )
    return float(np.median(sig))


def _estimated_invvar(dq: np.ndarray, sigma: float) -> np.ndarray:
    return uniform_invvar((dq & NODATA) != 0, sigma)


def band_arrays(plan: BandPlan, chunk: int) -> BandArrays:
    """Lazy image / invvar / dq of one band, one read task per block.

    Parameters
    ----------
    plan : BandPlan
    chunk : int
        Zarr chunk size (pixels); blocks are whole chunks.
    """
    import dask
    import dask.array as da

    grid = block_slices(plan.image.shape, chunk)
    read = dask.delayed(read_band_block, pure=True)
    get = dask.delayed(operator.getitem, pure=True)
    tasks = [[read(plan, ys, xs, dask_key_name=f"ingest-read-{plan.band}-{i}-{j}-"
                   f"{dask.base.tokenize(plan, ys, xs)}")
              for j, (ys, xs) in enumerate(row)] for i, row in enumerate(grid)]
    flat = [t for row in tasks for t in row]
    stats_list = [get(t, 3) for t in flat]

    def assemble(blocks: list[list[Any]], dtype: Any) -> Any:
        """One dask array from a grid of delayed blocks."""
        return da.block([
            [da.from_delayed(blocks[i][j], shape=(ys.stop - ys.start, xs.stop - xs.start),
                             dtype=dtype)
             for j, (ys, xs) in enumerate(row)]
            for i, row in enumerate(grid)
        ])

    def part(index: int) -> list[list[Any]]:
        return [[get(t, index) for t in row] for row in tasks]

    image = assemble(part(0), np.float32)
    dq = assemble(part(2), np.uint16)
    if plan.weight is not None:
        invvar = assemble(part(1), np.float32)
    else:
        sigma = dask.delayed(_band_sigma, pure=True)(plan, stats_list)
        est = dask.delayed(_estimated_invvar, pure=True)
        invvar = assemble([[est(b, sigma) for b in row] for row in part(2)], np.float32)
    stats = dask.delayed(_sum_stats, pure=True)(stats_list)
    return BandArrays(image=image, invvar=invvar, dq=dq, stats=stats)
