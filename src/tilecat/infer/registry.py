"""Registry of inference heads, by the name used in ``infer.models``.

Built-in heads are listed as ``"module:attribute"`` strings and imported only when
asked for, so ``tilecat infer`` with one model does not import the others. Later heads
(photo-z, latent VAE) add one line to :data:`BUILTIN` or call :func:`register_head`.
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError
from .heads import Head

__all__ = ["BUILTIN", "register_head", "get_head", "available_heads"]

#: name -> "module:attribute" of a :class:`~tilecat.infer.heads.Head` instance
BUILTIN: dict[str, str] = {
    "morphology": "tilecat.morphology.head:HEAD",
    "structure": "tilecat.structure.head:HEAD",
    "photoz": "tilecat.photoz.head:HEAD",
    "latent": "tilecat.latent.head:HEAD",
}

_REGISTERED: dict[str, Head] = {}


def register_head(head: Head, *, replace: bool = False) -> None:
    """Register a head instance under ``head.name``.

    Raises
    ------
    ValueError
        The name is empty or already taken (unless ``replace``).
    """
    if not head.name:
        raise ValueError("a head needs a non-empty name")
    if not replace and (head.name in _REGISTERED or head.name in BUILTIN):
        raise ValueError(f"head {head.name!r} is already registered")
    _REGISTERED[head.name] = head


def available_heads() -> list[str]:
    """Names of all known heads, sorted."""
    return sorted(set(BUILTIN) | set(_REGISTERED))


def get_head(name: str) -> Head:
    """The head registered as ``name``.

    Raises
    ------
    ConfigError
        No head of that name.
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in BUILTIN:
        raise ConfigError(
            f"key 'infer.models': unknown model {name!r}; known: {available_heads()}"
        )
    module, attr = BUILTIN[name].split(":")
    head = getattr(importlib.import_module(module), attr)
    if not isinstance(head, Head):  # pragma: no cover - programming error
        raise TypeError(f"{BUILTIN[name]} is not a Head")
    return head
