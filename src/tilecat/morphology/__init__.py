"""Galaxy morphology: a decision tree of questions answered by a spin-symmetric CNN.

Modules: :mod:`.tree` (questions, answers, column names), :mod:`.labels` (truth labels
<-> per-question targets), :mod:`.net` (the shared CNN trunk), :mod:`.model` (network
and mirror-symmetrised inference), :mod:`.head` (the ``morphology`` inference head),
:mod:`.dataset` (galaxy stamp training sets), :mod:`.train` (``train_morphology``).
Imports are lazy: ``import tilecat.morphology`` does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train_morphology"]


def train_morphology(*args: Any, **kwargs: Any) -> Any:
    """See :func:`tilecat.morphology.train.train_morphology`."""
    from .train import train_morphology as _train

    return _train(*args, **kwargs)
