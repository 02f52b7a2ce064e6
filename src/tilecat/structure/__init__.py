"""Galaxy structure from stamps: half-light radius, Sersic index, ellipticity, with
heteroscedastic (Gaussian NLL) uncertainties, learnt from simulator truth.

Modules: :mod:`.model` (network, loss, mirror-averaged inference), :mod:`.head` (the
``structure`` inference head), :mod:`.train` (``train_structure``), :mod:`.calibrate`
(the card's mean map and sigma scale), :mod:`.disk` (idealised exponential disks: the
PSF-correction check).
"""

from __future__ import annotations

from typing import Any

__all__ = ["train_structure"]


def train_structure(*args: Any, **kwargs: Any) -> Any:
    """See :func:`tilecat.structure.train.train_structure`."""
    from .train import train_structure as _train

    return _train(*args, **kwargs)
