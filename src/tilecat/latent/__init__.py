"""Latent encoding of galaxy stamps with a convolutional VAE (40 latents).

Modules: :mod:`.model` (VAE and inference module), :mod:`.noise` (per-pixel noise of
arcsinh stamps: training loss, reconstruction chi^2), :mod:`.outlier` (Mahalanobis
distance, combined outlier score), :mod:`.ssim` (structural similarity), :mod:`.anomalies` (injected anomalies for
evaluation), :mod:`.train` (``train_vae``), :mod:`.head` (the ``latent`` inference
head), :mod:`.similar` (``similar``: nearest neighbours in latent space).
Imports are lazy: ``import tilecat.latent`` does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train_vae", "similar"]


def train_vae(*args: Any, **kwargs: Any) -> Any:
    """See :func:`tilecat.latent.train.train_vae`."""
    from .train import train_vae as _train

    return _train(*args, **kwargs)


def similar(*args: Any, **kwargs: Any) -> Any:
    """See :func:`tilecat.latent.similar.similar`."""
    from .similar import similar as _similar

    return _similar(*args, **kwargs)
