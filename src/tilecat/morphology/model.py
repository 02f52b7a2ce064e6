"""The morphology network and its spin-symmetrised inference wrapper.

:class:`MorphologyNet` maps stamps to logits of every answer of the tree
(:data:`~tilecat.morphology.tree.QUESTIONS`, concatenated). :class:`SpinSymmetric`
turns it into probabilities that are exactly equivariant under a mirror flip:

    p(x) = [softmax(f(x)) + P softmax(f(mirror x))] / 2

with ``P`` swapping the answers S and Z of ``spin`` (identity elsewhere). Then
``p(mirror x) = P p(x)`` holds bit for bit: a mirrored galaxy gets S and Z exactly
swapped and every other answer unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .net import DEFAULT_ARCH, MLP, Trunk
from .tree import N_ANSWERS, QUESTIONS, answer_slices, mirror_permutation

__all__ = ["MorphologyNet", "SpinSymmetric", "build", "softmax_per_question", "mirror"]


def mirror(x: torch.Tensor) -> torch.Tensor:
    """Mirror stamps ``(N, C, H, W)`` left-right (flip the x axis)."""
    return x.flip(-1)


def softmax_per_question(logits: torch.Tensor) -> torch.Tensor:
    """``(N, N_ANSWERS)`` logits -> conditional probabilities, softmax within each question."""
    parts = [torch.softmax(logits[:, s], dim=1) for s in answer_slices().values()]
    return torch.cat(parts, dim=1)


class MorphologyNet(nn.Module):
    """Trunk + MLP -> ``(N, N_ANSWERS)`` logits.

    Parameters
    ----------
    n_band : int
        Input bands.
    arch : dict
        Trunk and MLP hyperparameters (see :data:`~tilecat.morphology.net.DEFAULT_ARCH`).
    """

    def __init__(self, n_band: int, arch: dict[str, Any] | None = None) -> None:
        super().__init__()
        a = {**DEFAULT_ARCH, **(arch or {})}
        self.psf_input = bool(a.get("psf_input", False))
        self.trunk = Trunk(n_band, a["widths"], a["strides"], a["kernels"])
        n_in = self.trunk.n_features + (n_band if self.psf_input else 0)
        self.head = MLP(n_in, int(a["hidden"]), N_ANSWERS, float(a["dropout"]))

    def forward(self, x: torch.Tensor, psf_pix: torch.Tensor | None = None) -> torch.Tensor:
        """Stamps ``(N, n_band, S, S)`` (+ PSF FWHM per band in pixels ``(N, n_band)`` when
        ``arch['psf_input']``: how much of what the image shows is seeing) -> logits."""
        f = self.trunk(x)
        if self.psf_input:
            if psf_pix is None:
                raise ValueError("this morphology network needs the PSF FWHM per band")
            f = torch.cat([f, torch.log(psf_pix.to(f.dtype).clamp(min=0.1) / 4.0)], dim=1)
        return self.head(f)


class SpinSymmetric(nn.Module):
    """Mirror-symmetrised probabilities of a :class:`MorphologyNet` (inference)."""

    def __init__(self, net: MorphologyNet, pixel_scale: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.pixel_scale = float(pixel_scale)
        self.register_buffer("perm", torch.as_tensor(mirror_permutation()), persistent=False)

    def forward(self, x: torch.Tensor, psf_fwhm: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, C, H, W)`` (+ PSF FWHM per band in arcsec ``(N, C)`` for a network with
        PSF input) -> ``(N, N_ANSWERS)`` symmetrised conditional probabilities."""
        n = x.shape[0]
        both = torch.cat([x, mirror(x)], dim=0)
        if both.device.type == "cpu":
            both = both.contiguous(memory_format=torch.channels_last)
        psf = None if psf_fwhm is None else torch.cat([psf_fwhm, psf_fwhm]) / self.pixel_scale
        p = softmax_per_question(self.net(both, psf).float())
        return (p[:n] + p[n:][:, self.perm]) / 2


def build(card: dict[str, Any]) -> SpinSymmetric:
    """The (untrained) inference module described by a model card."""
    n_band = len(card["input"]["bands"])
    answers = [[q.name, list(q.answers)] for q in QUESTIONS]
    if card.get("questions") not in (None, answers):
        from ..errors import ModelError

        raise ModelError("morphology card: its questions/answers differ from this "
                         "tilecat version's decision tree")
    return SpinSymmetric(MorphologyNet(n_band, card.get("arch")),
                         float(card["input"].get("pixel_scale", 1.0)))
