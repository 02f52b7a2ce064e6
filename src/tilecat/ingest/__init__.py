"""Ingest stage: a tile's FITS files (one set per band) -> ``tile.zarr`` with Dask.

Modules: :mod:`.fitsread` (open planes, read blocks), :mod:`.grid` (one pixel grid),
:mod:`.dq` (data-quality remapping), :mod:`.weights` (inverse variance),
:mod:`.blocks` (Dask per-block readers), :mod:`.run` (the stage).
"""

from __future__ import annotations

from .run import plan_tile, run_ingest

__all__ = ["run_ingest", "plan_tile"]
