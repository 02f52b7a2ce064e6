"""Save and load a model: ``weights.safetensors`` + ``card.json`` with a sha256 check.

The card is a JSON object. :func:`save_model` adds to it ``weights`` (file name),
``sha256`` (of the weights file), ``n_params`` and ``format`` ("safetensors"); the
rest (architecture + hyperparameters, classes, priors, calibration, training recipe
and seed, held-out metrics) is the caller's. Weights are never pickled and never read
with ``torch.load``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_path
from ..errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "CARD_NAME",
    "WEIGHTS_NAME",
    "sha256_file",
    "model_dir",
    "load_card",
    "save_model",
    "load_model",
]

#: File names inside a model directory.
WEIGHTS_NAME = "weights.safetensors"
CARD_NAME = "card.json"


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def model_dir(name_or_dir: str | Path) -> Path:
    """Resolve a model name or directory to the directory holding its card.

    Parameters
    ----------
    name_or_dir : str or Path
        An existing directory with ``card.json``, or the name of a model shipped in
        ``tilecat/data/models/<name>/``.

    Raises
    ------
    ModelError
        When neither exists.
    """
    p = Path(name_or_dir)
    if (p / CARD_NAME).is_file():
        return p
    name = str(name_or_dir)
    if "/" not in name and "\\" not in name and name not in ("", ".", ".."):
        shipped = Path(str(resources.files("tilecat").joinpath("data", "models", name)))
        if (shipped / CARD_NAME).is_file():
            return shipped
    raise ModelError(
        f"model {name_or_dir!r}: no {CARD_NAME} found (neither a model directory nor a "
        f"model shipped in tilecat/data/models/)"
    )


def load_card(name_or_dir: str | Path) -> dict[str, Any]:
    """Read a model card (no weights, no checksum check)."""
    path = model_dir(name_or_dir) / CARD_NAME
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"model card {path}: unreadable: {exc}") from exc
    if not isinstance(card, dict):
        raise ModelError(f"model card {path}: not a JSON object")
    return card


def save_model(module: "torch.nn.Module", card: dict[str, Any], dir: str | Path) -> dict[str, Any]:
    """Write ``module``'s weights and its card into ``dir`` (atomically, file by file).

    Parameters
    ----------
    module : torch.nn.Module
        The model; its ``state_dict`` is stored (tensors made contiguous, on CPU).
    card : dict
        JSON-serialisable model card; ``weights``, ``sha256``, ``n_params`` and
        ``format`` are filled in here.
    dir : path
        Output directory (created).

    Returns
    -------
    dict
        The card as written.

    Notes
    -----
    The weights are written first and the card last, so a reader never finds a card
    pointing to weights that are not there yet. safetensors output is deterministic
    for the same tensors (keys are sorted).
    """
    from safetensors.torch import save_file

    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp))
    card = dict(card)
    card["format"] = "safetensors"
    card["weights"] = WEIGHTS_NAME
    card["n_params"] = int(sum(p.numel() for p in module.parameters()))
    card["sha256"] = sha256_file(out / WEIGHTS_NAME)
    with atomic_path(out / CARD_NAME) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return card


def load_model(
    name_or_dir: str | Path,
    builder: Callable[[dict[str, Any]], "torch.nn.Module"],
    device: "torch.device | str | None" = None,
) -> tuple["torch.nn.Module", dict[str, Any]]:
    """Load a model after checking its weights against the card's sha256.

    Parameters
    ----------
    name_or_dir : str or Path
        Model directory or shipped model name (see :func:`model_dir`).
    builder : callable
        ``builder(card) -> torch.nn.Module`` constructs the untrained architecture
        from the card's hyperparameters.
    device : torch.device or str, optional
        Where to put the module (default CPU).

    Returns
    -------
    (torch.nn.Module, dict)
        The module in eval mode and its card.

    Raises
    ------
    ModelError
        Card or weights missing, checksum mismatch (naming the weights file), or the
        weights do not fit the architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = model_dir(name_or_dir)
    card = load_card(d)
    weights = d / str(card.get("weights", WEIGHTS_NAME))
    if not weights.is_file():
        raise ModelError(f"model {d}: weights file {weights} is missing")
    expected = card.get("sha256")
    if not expected:
        raise ModelError(f"model card {d / CARD_NAME}: no sha256 of the weights recorded")
    actual = sha256_file(weights)
    if actual != expected:
        raise ModelError(
            f"weights file {weights}: sha256 {actual} does not match the model card "
            f"({expected}); refusing to load"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"weights file {weights}: unreadable: {exc}") from exc
    module = builder(card)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"weights file {weights}: do not fit the architecture: {exc}") from exc
    if device is not None:
        module = module.to(device)
    module.eval()
    return module, card
