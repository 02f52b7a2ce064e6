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
        self.trunk = Trunk(n_band, a["widths"], a["strides"], a["kernels"])
        self.head = MLP(self.trunk.n_features, int(a["hidden"]), N_ANSWERS, float(a["dropout"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class SpinSymmetric(nn.Module):
    """Mirror-symmetrised probabilities of a :class:`MorphologyNet` (inference)."""

    def __init__(self, net: MorphologyNet) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("perm", torch.as_tensor(mirror_permutation()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, N_ANSWERS)`` symmetrised conditional probabilities."""
        n = x.shape[0]
        both = torch.cat([x, mirror(x)], dim=0)
        if both.device.type == "cpu":
            both = both.contiguous(memory_format=torch.channels_last)
        p = softmax_per_question(self.net(both).float())
        return (p[:n] + p[n:][:, self.perm]) / 2


def build(card: dict[str, Any]) -> SpinSymmetric:
    """The (untrained) inference module described by a model card."""
    n_band = len(card["input"]["bands"])
    answers = [[q.name, list(q.answers)] for q in QUESTIONS]
    if card.get("questions") not in (None, answers):
        from ..errors import ModelError

        raise ModelError("morphology card: its questions/answers differ from this "
                         "tilecat version's decision tree")
    return SpinSymmetric(MorphologyNet(n_band, card.get("arch")))
