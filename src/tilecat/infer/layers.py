"""Layers whose per-object result does not depend on the batch it is computed in.

The engine promises the same outputs for any ``infer.batch_size``. Convolutions,
pooling and element-wise ops on CPU already give bit-identical per-sample results
whatever the batch size, but ``torch.nn.Linear`` does not: BLAS picks gemv for one
row and differently blocked gemm kernels for others, changing the summation order
(differences of ~1e-7). :class:`BatchInvariantLinear` computes each output row as a
broadcast multiply + sum over the input features, whose reduction order is fixed by
the feature count alone. It costs N*in*out multiply-adds like a matmul; heads keep
their fully-connected layers small, so the price is negligible next to the convs.
"""

from __future__ import annotations

import math

import torch

__all__ = ["BatchInvariantLinear"]


class BatchInvariantLinear(torch.nn.Module):
    """``y = x @ W.T + b`` with a batch-size-independent summation order.

    Parameters
    ----------
    in_features, out_features : int
        Sizes, as :class:`torch.nn.Linear` (same parameter names and init, so a
        ``state_dict`` is interchangeable with ``nn.Linear``'s).
    bias : bool
        Learn an additive bias.

    Notes
    -----
    In training mode it falls back to ``torch.nn.functional.linear`` (faster and
    the result is the same up to rounding); in eval mode it uses the invariant form.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features))
        self.bias = torch.nn.Parameter(torch.empty(out_features)) if bias else None
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (N, in_features) -> (N, out_features)."""
        if self.training:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        y = (x.unsqueeze(-2) * self.weight).sum(-1)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
