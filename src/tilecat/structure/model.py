"""The structure network: ln r50, ln n, e1, e2 with heteroscedastic uncertainties.

:class:`StructureNet` maps stamps and the PSF FWHM of each band to 8 numbers: the
means ``mu`` of (ln r50 [r50 in pixels], ln n, e1, e2) and ``ln sigma`` of each,
trained with a Gaussian negative log-likelihood against the simulator's truth
(intrinsic, PSF-free profiles). The PSF FWHM (per band, in pixels, as
``ln(FWHM / 4 px)``) joins the pooled image features before the MLP, so the network
knows how much of the apparent size is PSF: the prediction is PSF-corrected for any
seeing, not only for the training set's.

:class:`MirrorAveraged` is the inference module: it averages the predictions for a
stamp and for its mirror image (whose e2 changes sign), so that the outputs are
exactly mirror-equivariant, and returns ``(mu, sigma)`` as an ``(N, 8)`` tensor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..morphology.net import DEFAULT_ARCH, MLP, Trunk

__all__ = ["TARGETS", "StructureNet", "MirrorAveraged", "build", "gaussian_nll",
           "MIRROR_SIGN", "LOG_SIGMA_MIN", "LOG_SIGMA_MAX"]

#: regression targets in output order
TARGETS: tuple[str, ...] = ("ln_r50_pix", "ln_sersic_n", "e1", "e2")
#: sign change of each target under a left-right mirror
MIRROR_SIGN: tuple[float, ...] = (1.0, 1.0, 1.0, -1.0)
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -7.0, 3.0


class StructureNet(nn.Module):
    """Trunk (+ PSF) + MLP -> ``(N, 8)``: ``mu`` (4) then ``ln sigma`` (4).

    ``forward(x, psf_pix)``: stamps ``(N, n_band, S, S)`` and PSF FWHM ``(N, n_band)``
    in pixels (ignored unless ``arch['psf_input']``).
    """

    def __init__(self, n_band: int, arch: dict[str, Any] | None = None) -> None:
        super().__init__()
        a = {**DEFAULT_ARCH, **(arch or {})}
        self.psf_input = bool(a.get("psf_input", False))
        self.trunk = Trunk(n_band, a["widths"], a["strides"], a["kernels"])
        n_in = self.trunk.n_features + (n_band if self.psf_input else 0)
        self.head = MLP(n_in, int(a["hidden"]), 2 * len(TARGETS), float(a["dropout"]))

    def forward(self, x: torch.Tensor, psf_pix: torch.Tensor | None = None) -> torch.Tensor:
        f = self.trunk(x)
        if self.psf_input:
            if psf_pix is None:
                raise ValueError("this structure network needs the PSF FWHM per band")
            f = torch.cat([f, torch.log(psf_pix.to(f.dtype).clamp(min=0.1) / 4.0)], dim=1)
        out = self.head(f)
        k = len(TARGETS)
        return torch.cat([out[:, :k], out[:, k:].clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)], dim=1)


def gaussian_nll(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean heteroscedastic Gaussian NLL per target (constant dropped).

    Parameters
    ----------
    out : (N, 8) tensor
        ``mu`` then ``ln sigma``.
    target : (N, 4) tensor
        True values; NaN entries are ignored.

    Returns
    -------
    (4,) tensor
        Mean NLL of each target over its finite entries.
    """
    k = target.shape[1]
    mu, log_sigma = out[:, :k], out[:, k:]
    ok = torch.isfinite(target)
    t = torch.where(ok, target, mu.detach())
    nll = 0.5 * ((t - mu) * torch.exp(-log_sigma)) ** 2 + log_sigma
    nll = torch.where(ok, nll, torch.zeros_like(nll))
    return nll.sum(0) / ok.sum(0).clamp(min=1)


class MirrorAveraged(nn.Module):
    """Inference: mirror-averaged ``(mu, sigma)``, ``(N, 8)``.

    ``forward(x, psf_fwhm)`` with the PSF FWHM per band in arcsec ``(N, n_band)``
    (converted to pixels with ``pixel_scale``). ``mu = [mu(x) + M mu(mirror x)] / 2``
    with ``M`` flipping the sign of e2; ``sigma = sqrt([sigma(x)^2 + sigma(mirror x)^2] / 2)``.
    """

    def __init__(self, net: StructureNet, pixel_scale: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.pixel_scale = float(pixel_scale)
        self.register_buffer("sign", torch.tensor(MIRROR_SIGN), persistent=False)

    def forward(self, x: torch.Tensor, psf_fwhm: torch.Tensor | None = None) -> torch.Tensor:
        n, k = x.shape[0], len(TARGETS)
        both = torch.cat([x, x.flip(-1)], dim=0)
        if both.device.type == "cpu":
            both = both.contiguous(memory_format=torch.channels_last)
        psf = None if psf_fwhm is None else torch.cat([psf_fwhm, psf_fwhm]) / self.pixel_scale
        out = self.net(both, psf).float()
        mu = (out[:n, :k] + out[n:, :k] * self.sign) / 2
        var = (torch.exp(2 * out[:n, k:]) + torch.exp(2 * out[n:, k:])) / 2
        return torch.cat([mu, torch.sqrt(var)], dim=1)


def build(card: dict[str, Any]) -> MirrorAveraged:
    """The (untrained) inference module described by a model card."""
    return MirrorAveraged(StructureNet(len(card["input"]["bands"]), card.get("arch")),
                          float(card["input"].get("pixel_scale", 1.0)))
