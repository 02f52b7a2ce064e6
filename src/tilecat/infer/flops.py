"""Count the multiply-accumulates of a forward pass from the architecture (forward hooks).

Used by ``benchmarks/inference.py`` to turn measured throughput into achieved FLOP/s
(2 FLOP per MAC). Counts convolutions and fully-connected layers, which hold all but
a negligible part of the arithmetic of tilecat's CNNs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .layers import BatchInvariantLinear

__all__ = ["count_macs", "matmul_peak_gflops"]


def count_macs(module: nn.Module, x: torch.Tensor, *extra: torch.Tensor) -> int:
    """MACs of ``module(x, *extra)`` (conv + linear layers), for the whole batch ``x``.

    Parameters
    ----------
    module : nn.Module
        Any module (wrappers included: every conv/linear call inside is counted,
        e.g. twice for a mirror-averaged forward pass).
    x : tensor
        An input batch.
    """
    total = [0]

    def conv_hook(m: nn.Conv2d, inp: Any, out: torch.Tensor) -> None:
        kh, kw = m.kernel_size
        total[0] += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Module, inp: Any, out: torch.Tensor) -> None:
        total[0] += out.numel() * int(m.in_features)

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, (nn.Linear, BatchInvariantLinear)):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.inference_mode():
            module(x, *extra)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def matmul_peak_gflops(n: int = 2048, repeat: int = 5) -> float:
    """Best fp32 ``torch.matmul`` GFLOP/s of two ``n x n`` matrices on the CPU (this run)."""
    import time

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9
