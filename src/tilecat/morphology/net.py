"""A small, compute-efficient CNN trunk for galaxy stamps (shared by morphology and structure).

Input ``(N, n_band, S, S)`` float32 arcsinh-normalised stamps (S = 64 by default),
channels_last on CPU. The trunk is a plain stack of 3x3 convolutions (a strided 5x5
stem, then widths doubling as the resolution halves), batch-norm + ReLU, ending in
global average and max pooling concatenated: ``(N, 2 * width[-1])`` features.

Few thin layers at full resolution and wide layers at low resolution keep the
arithmetic in large convolutions, which oneDNN runs near the machine's matmul
peak. For inference :meth:`Trunk.fuse` folds each batch norm into its convolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..infer.layers import BatchInvariantLinear

__all__ = ["DEFAULT_ARCH", "ConvBNReLU", "Trunk", "MLP", "fuse_all"]

#: default trunk hyperparameters (stored in each model card)
DEFAULT_ARCH: dict[str, Any] = {
    "widths": [32, 64, 96, 96, 192, 192],
    "strides": [2, 1, 2, 1, 2, 1],
    "kernels": [5, 3, 3, 3, 3, 3],
    "hidden": 128,
    "dropout": 0.2,
}


class ConvBNReLU(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + ReLU, foldable into one biased conv."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the (eval-mode) batch norm into the convolution, in place."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv = nn.Conv2d(self.conv.in_channels, self.conv.out_channels, self.conv.kernel_size,
                         self.conv.stride, self.conv.padding, bias=True)
        conv.weight.copy_(self.conv.weight * scale[:, None, None, None])
        conv.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv = conv.to(self.conv.weight.device)
        self.bn = nn.Identity()


class Trunk(nn.Module):
    """Conv stack + global avg/max pooling.

    Parameters
    ----------
    n_band : int
        Input channels.
    widths, strides, kernels : sequences of int
        One entry per conv layer.
    """

    def __init__(self, n_band: int, widths: Sequence[int], strides: Sequence[int],
                 kernels: Sequence[int]) -> None:
        super().__init__()
        layers, cin = [], n_band
        for w, s, k in zip(widths, strides, kernels, strict=True):
            layers.append(ConvBNReLU(cin, int(w), int(k), int(s)))
            cin = int(w)
        self.layers = nn.Sequential(*layers)
        self.n_features = 2 * cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, n_band, S, S)`` -> ``(N, n_features)``."""
        h = self.layers(x)
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)

    def fuse(self) -> None:
        """Fold batch norms (call in eval mode, before inference)."""
        for m in self.layers:
            m.fuse()


class MLP(nn.Module):
    """features -> hidden (ReLU, dropout) -> outputs, batch-invariant at inference."""

    def __init__(self, n_in: int, hidden: int, n_out: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = BatchInvariantLinear(n_in, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = BatchInvariantLinear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def fuse_all(module: nn.Module) -> nn.Module:
    """Fold every :class:`ConvBNReLU` of ``module`` (eval mode) in place; returns it."""
    module.eval()
    for m in module.modules():
        if isinstance(m, ConvBNReLU):
            m.fuse()
    return module
