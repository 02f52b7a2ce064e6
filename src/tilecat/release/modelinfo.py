"""The models a survey used: card, card checksum and weights checksum of each."""

from __future__ import annotations

import json
from typing import Any

from ..errors import ModelError
from .hashing import sha256_file

__all__ = ["used_models", "model_record", "model_checksums"]


def used_models(config: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(role, name, location)`` of every model the config uses: the masker
    (``mask.model``) and each of ``infer.models``."""
    out: list[tuple[str, str, str]] = []
    mask_model = (config.get("mask") or {}).get("model")
    if mask_model:
        from ..mask.model import resolve_name

        out.append(("mask", str(mask_model), str(resolve_name(mask_model))))
    if (config.get("infer") or {}).get("models"):
        from ..infer.heads import model_location

        for name in config["infer"]["models"]:
            out.append(("infer", str(name), model_location(config, name)))
    return out


def model_record(role: str, name: str, location: str) -> dict[str, Any]:
    """Card and checksums of one model; refuses weights that differ from the card.

    Raises
    ------
    ModelError
        Card or weights missing, or the weights' sha256 is not the card's.
    """
    from ..models.io import CARD_NAME, WEIGHTS_NAME, load_card, model_dir

    d = model_dir(location).resolve()
    card = load_card(d)
    weights = d / str(card.get("weights", WEIGHTS_NAME))
    if not weights.is_file():
        raise ModelError(f"model {name!r}: weights file {weights} is missing")
    digest = sha256_file(weights)
    if card.get("sha256") != digest:
        raise ModelError(f"model {name!r}: weights file {weights} has sha256 {digest}, the "
                         f"card says {card.get('sha256')}; refusing to release")
    return {
        "role": role,
        "name": name,
        "dir": str(d),
        "card_path": str(d / CARD_NAME),
        "card_sha256": sha256_file(d / CARD_NAME),
        "weights_path": str(weights),
        "weights_sha256": digest,
        "card": card,
    }


def model_checksums(records: list[dict[str, Any]]) -> str:
    """JSON ``{"<role>:<name>": weights sha256}`` for the catalog file metadata."""
    return json.dumps({f"{r['role']}:{r['name']}": r["weights_sha256"] for r in records},
                      sort_keys=True)
