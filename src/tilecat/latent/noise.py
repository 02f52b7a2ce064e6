"""Per-pixel noise of arcsinh-normalised stamps, for the reconstruction chi^2.

Stamps hold ``x = arcsinh(s)`` with ``s = F / sigma`` (``sigma`` the band's background
noise). Propagating a flux noise ``sigma_F`` through the arcsinh gives
``sigma_x = (sigma_F / sigma) / sqrt(1 + s^2)``. Our choice of ``sigma_F``:

    sigma_F^2 = sigma^2 (1 + eps^2 s^2)

i.e. the background noise plus a fractional floor ``eps`` (default 5 %) of the local
flux, standing for the source's Poisson noise (its gain is not in the cutouts) and
for what no 40-number model can reproduce in bright cores. Hence

    sigma_x^2 = (1 + eps^2 s^2) / (1 + s^2),   s = sinh(x),

which is 1 on the background and tends to ``eps`` on bright pixels. It is evaluated
at the observed stamp, so the chi^2 of a reconstruction ``r`` is
``mean((x - r)^2 / sigma_x^2)`` over pixels and bands (about 1 for a reconstruction
within the noise).
"""

from __future__ import annotations

import torch

__all__ = ["EPS", "asinh_variance", "chi2_per_pixel"]

#: fractional flux-noise floor
EPS = 0.05


def asinh_variance(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-pixel noise variance of arcsinh stamps ``x`` (same shape)."""
    s2 = torch.sinh(x) ** 2
    return (1.0 + eps * eps * s2) / (1.0 + s2)


def chi2_per_pixel(x: torch.Tensor, recon: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Reconstruction chi^2 per pixel of each stamp: ``(N, B, S, S)`` -> ``(N,)``."""
    r = (x - recon) ** 2 / asinh_variance(x, eps)
    return r.flatten(1).mean(dim=1)
