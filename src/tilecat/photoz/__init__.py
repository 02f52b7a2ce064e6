"""Photometric redshifts: a CNN over multi-band stamps -> binned redshift PDFs.

Modules: :mod:`.grid` (the fixed bin grid), :mod:`.summary` (PDF point estimates and
spread: the ``z_*`` columns), :mod:`.metrics` (RAIL metrics: bias, sigma_NMAD,
outlier fractions, PIT, CRPS), :mod:`.photometry` (aperture photometry of
arcsinh stamps), :mod:`.catalogphot` (catalog-like AUTO photometry), :mod:`.knn`
(the kNN baseline), :mod:`.model` (network), :mod:`.augment`, :mod:`.data`
(training sets), :mod:`.train` (``train_photoz``), :mod:`.head` (the ``photoz``
inference head), :mod:`.match` (scoring a catalog against a truth table).
Imports are lazy: ``import tilecat.photoz`` does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train_photoz"]


def train_photoz(*args: Any, **kwargs: Any) -> Any:
    """See :func:`tilecat.photoz.train.train_photoz`."""
    from .train import train_photoz as _train

    return _train(*args, **kwargs)
