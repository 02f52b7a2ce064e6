"""Loading the masker model (weights + card) by name or directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..bits import DEFECT_CLASSES
from ..errors import ModelError

__all__ = ["DEFAULT_MODEL", "resolve_name", "load_masker", "halo_for"]

#: The masker shipped in ``tilecat/data/models/`` that ``mask.model: default`` selects.
DEFAULT_MODEL = "masker"


def resolve_name(name: str | Path) -> str | Path:
    """``"default"`` -> :data:`DEFAULT_MODEL`; anything else unchanged."""
    return DEFAULT_MODEL if str(name) == "default" else name


def load_masker(name_or_dir: str | Path, device: Any = None) -> tuple[Any, dict[str, Any]]:
    """Load the masker network and its card (sha256-checked, eval mode, for inference:
    BatchNorm folded into the convolutions, :meth:`tilecat.mask.net.MaskNet.folded`).

    Raises
    ------
    ModelError
        Missing or mismatched weights, or a card whose classes are not
        ``tilecat.bits.DEFECT_CLASSES``.
    """
    from ..models import load_model
    from .net import build_masker

    module, card = load_model(resolve_name(name_or_dir), build_masker, device=device)
    classes = tuple(card.get("classes", ()))
    if classes != DEFECT_CLASSES:
        raise ModelError(
            f"masker {name_or_dir!r}: card classes {list(classes)} differ from "
            f"tilecat.bits.DEFECT_CLASSES {list(DEFECT_CLASSES)}"
        )
    return module.folded(), card


def halo_for(card: dict[str, Any], configured: int | None = None) -> int:
    """Tile halo (pixels): the configured one, or the card's receptive-field radius.

    Raises
    ------
    ModelError
        When the configured halo is smaller than the receptive-field radius (tiles
        would no longer stitch exactly).
    """
    radius = int(card.get("receptive_field", {}).get("radius", 32))
    if configured is None:
        return radius
    if int(configured) < radius:
        raise ModelError(
            f"mask.halo = {configured} is smaller than the model's receptive-field radius "
            f"{radius}: tiled inference would differ from whole-image inference"
        )
    return int(configured)
