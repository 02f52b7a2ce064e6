"""Detect stage: sep background, multi-band detection, photometry, flags, cutouts.

Modules: :mod:`.inputs` (read the tile store), :mod:`.background`,
:mod:`.detimage` (multi-band detection image), :mod:`.extract` (sep.extract +
deblending), :mod:`.photometry` (AUTO/aperture fluxes, r50, shapes, magnitudes),
:mod:`.footprint` (defect bits and flags per source), :mod:`.coords` (WCS),
:mod:`.psf` (Moffat PSF per band from the tile's stars), :mod:`.sources` (the
Parquet table), :mod:`.cutouts` (stamps), :mod:`.run`.
"""

from __future__ import annotations

from .run import detect_tile, run_detect

__all__ = ["run_detect", "detect_tile"]
