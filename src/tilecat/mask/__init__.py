"""Defect masking (issue 4): per-pixel defect probabilities and bits of a tile.

A compact U-Net (:mod:`.net`) predicts the seven ``tilecat.bits.DEFECT_CLASSES`` per
pixel from one band at a time (:mod:`.prepare` builds its input); tiled inference
stitches exactly (:mod:`.infer`); rule bits (:mod:`.rules`) keep what the upstream
pipeline flagged; :mod:`.priors` corrects probabilities to a survey's defect rates;
:mod:`.run` is the ``tilecat mask`` stage. Training: :mod:`.train` on the simulator's
defect patches (:mod:`.data`), with coadd-like augmentation (:mod:`.augment`), ROC
thresholds and metrics (:mod:`.metrics`); :mod:`.model` loads the shipped model
``tilecat/data/models/masker``. Heavy imports (torch) are lazy: ``run_mask`` with
``mask.model: null`` never imports torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_mask", "train_masker"]


def run_mask(config: dict[str, Any], tile: str) -> None:
    """Mask one tile (see :func:`tilecat.mask.run.run_mask`)."""
    from .run import run_mask as _run

    _run(config, tile)


def train_masker(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Train the masker (see :func:`tilecat.mask.train.train_masker`)."""
    from .train import train_masker as _train

    return _train(*args, **kwargs)
