"""Inference: every configured model head over a tile's cutouts -> ``infer.parquet``.

See :func:`run_infer`. Heads (morphology, structure, later photo-z and latent VAE)
declare their columns and postprocessing (:class:`Head`) and are looked up by name
in the registry (:func:`get_head`), so the engine never changes when one is added.
"""

from __future__ import annotations

from .engine import run_infer
from .heads import Column, Head, LoadedHead
from .registry import available_heads, get_head, register_head

__all__ = [
    "run_infer",
    "Column",
    "Head",
    "LoadedHead",
    "register_head",
    "get_head",
    "available_heads",
]
