"""Device choice and mixed precision, shared by every network stage."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["select_device", "autocast"]


def select_device(pref: str = "auto") -> "torch.device":
    """The torch device to run on.

    Parameters
    ----------
    pref : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"``, or ``"mps"``.

    Raises
    ------
    ConfigError
        When a CUDA/MPS device is asked for but not available, or ``pref`` is unknown.
    """
    import torch

    pref = (pref or "auto").lower()
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref == "cpu":
        return torch.device("cpu")
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {pref!r} asked for, but CUDA is not available")
        return torch.device(pref)
    if pref == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("device 'mps' asked for, but MPS is not available")
        return torch.device("mps")
    raise ConfigError(f"unknown device {pref!r} (auto, cpu, cuda, cuda:N, mps)")


@contextlib.contextmanager
def autocast(device: "torch.device", enabled: bool = True) -> Iterator[None]:
    """Mixed precision (fp16 autocast) on CUDA; a no-op elsewhere.

    Parameters
    ----------
    device : torch.device
        The device the model runs on.
    enabled : bool
        Turn autocast off even on CUDA (e.g. for exactness tests).
    """
    import torch

    if enabled and device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            yield
    else:
        yield
