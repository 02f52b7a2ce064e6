"""Shared model I/O: safetensors weights + a JSON model card (DESIGN.md §4 "Models").

Every network of tilecat (defect masker, morphology, structure, photo-z, VAE) ships
as a directory ``<name>/`` holding ``weights.safetensors`` and ``card.json``; the
card records the architecture, classes, training priors, calibration, metrics and
the sha256 of the weights, and :func:`load_model` refuses weights whose checksum
differs from the card's. Shipped models live in ``tilecat/data/models/<name>/``.
"""

from __future__ import annotations

from .device import autocast, select_device
from .io import (
    CARD_NAME,
    WEIGHTS_NAME,
    load_card,
    load_model,
    model_dir,
    save_model,
    sha256_file,
)

__all__ = [
    "CARD_NAME",
    "WEIGHTS_NAME",
    "save_model",
    "load_model",
    "load_card",
    "model_dir",
    "sha256_file",
    "select_device",
    "autocast",
]
