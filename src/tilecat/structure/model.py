"""The structure network: ln r50, ln n, e1, e2 with heteroscedastic uncertainties.

:class:`StructureNet` maps stamps and the PSF FWHM of each band to 8 numbers: the
means ``mu`` of (ln r50 [r50 in pixels], ln n, e1, e2) and ``ln sigma`` of each,
trained with a Gaussian negative log-likelihood against the simulator's truth
(intrinsic, PSF-free profiles). The PSF FWHM (per band, in pixels, as
``ln(FWHM / 4 px)``) joins the pooled image features before the MLP, so the network
knows how much of the apparent size is PSF: the prediction is PSF-corrected for any
seeing, not only for the training set's. With ``arch['psf_beta_input']`` the Moffat
beta of each band's PSF joins them too (as :func:`beta_feature` ``= 3 / beta - 1``):
at a given FWHM a low-beta PSF puts much more light into its wings (its own
half-light radius is 0.57 FWHM at beta 4.5, 0.68 at 2.5, 1.13 at 1.5), which a
network told only the FWHM reads as a larger galaxy.

:class:`MirrorAveraged` is the inference module: it averages the predictions for a
stamp and for its mirror image (whose e2 changes sign), so that the outputs are
exactly mirror-equivariant, and returns ``(mu, sigma)`` as an ``(N, 8)`` tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..morphology.net import DEFAULT_ARCH, MLP, Trunk

__all__ = ["TARGETS", "StructureNet", "MirrorAveraged", "build", "gaussian_nll",
           "beta_feature", "add_beta_input", "predict_structure", "MIRROR_SIGN", "LOG_SIGMA_MIN",
           "LOG_SIGMA_MAX", "BETA_MIN"]

#: regression targets in output order
TARGETS: tuple[str, ...] = ("ln_r50_pix", "ln_sersic_n", "e1", "e2")
#: sign change of each target under a left-right mirror
MIRROR_SIGN: tuple[float, ...] = (1.0, 1.0, 1.0, -1.0)
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -7.0, 3.0
#: Moffat betas below this are clamped to it (beta <= 1 has infinite flux)
BETA_MIN = 1.2


def beta_feature(beta: torch.Tensor) -> torch.Tensor:
    """Network feature of the PSF's Moffat beta: ``3 / beta - 1``, beta clamped >= 1.2.

    Why ``1 / beta``: it is bounded (0 is the Gaussian limit beta -> inf, so a large
    or poorly constrained beta measured on a tile's stars lands near the training
    range, where ``ln(beta - 1)`` would grow without bound), finite for every beta > 1,
    and about as smooth in it as the PSF's light in the wings; ``3 / beta - 1`` puts
    the training range 1.5-4.5 at 1 to -0.33 (beta 3 at 0), of the order of the
    ``ln(FWHM / 4 px)`` features. NaN stays NaN.

    Parameters
    ----------
    beta : tensor (N, n_band)
        Moffat beta per band (dimensionless).
    """
    return 3.0 / beta.clamp(min=BETA_MIN) - 1.0


class StructureNet(nn.Module):
    """Trunk (+ PSF) + MLP -> ``(N, 8)``: ``mu`` (4) then ``ln sigma`` (4).

    ``forward(x, psf_pix, psf_beta)``: stamps ``(N, n_band, S, S)``, PSF FWHM
    ``(N, n_band)`` in pixels (ignored unless ``arch['psf_input']``) and the PSF's
    Moffat beta ``(N, n_band)`` (ignored unless ``arch['psf_beta_input']``, which
    needs ``psf_input``). The MLP's input is ``[trunk features, ln(FWHM / 4 px),
    beta_feature(beta)]``.
    """

    def __init__(self, n_band: int, arch: dict[str, Any] | None = None) -> None:
        super().__init__()
        a = {**DEFAULT_ARCH, **(arch or {})}
        self.psf_input = bool(a.get("psf_input", False))
        self.psf_beta_input = bool(a.get("psf_beta_input", False))
        if self.psf_beta_input and not self.psf_input:
            raise ValueError("structure arch: psf_beta_input needs psf_input")
        self.trunk = Trunk(n_band, a["widths"], a["strides"], a["kernels"])
        n_in = (self.trunk.n_features + (n_band if self.psf_input else 0)
                + (n_band if self.psf_beta_input else 0))
        self.head = MLP(n_in, int(a["hidden"]), 2 * len(TARGETS), float(a["dropout"]))

    def forward(self, x: torch.Tensor, psf_pix: torch.Tensor | None = None,
                psf_beta: torch.Tensor | None = None) -> torch.Tensor:
        f = self.trunk(x)
        if self.psf_input:
            if psf_pix is None:
                raise ValueError("this structure network needs the PSF FWHM per band")
            feats = [f, torch.log(psf_pix.to(f.dtype).clamp(min=0.1) / 4.0)]
            if self.psf_beta_input:
                if psf_beta is None:
                    raise ValueError("this structure network needs the PSF's Moffat beta "
                                     "per band (input 'psf_beta')")
                feats.append(beta_feature(psf_beta.to(f.dtype)))
            f = torch.cat(feats, dim=1)
        out = self.head(f)
        k = len(TARGETS)
        return torch.cat([out[:, :k], out[:, k:].clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)], dim=1)


def gaussian_nll(out: torch.Tensor, target: torch.Tensor,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean heteroscedastic Gaussian NLL per target (constant dropped).

    Parameters
    ----------
    out : (N, 8) tensor
        ``mu`` then ``ln sigma``.
    target : (N, 4) tensor
        True values; NaN entries are ignored.
    weight : (N,) tensor, optional
        Per-object weight of the first target's (ln r50) term: its mean becomes
        ``sum(w nll) / n`` over the finite entries (other targets unweighted).

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
    if weight is not None:
        nll = torch.cat([nll[:, :1] * weight[:, None].to(nll.dtype), nll[:, 1:]], dim=1)
    return nll.sum(0) / ok.sum(0).clamp(min=1)


class MirrorAveraged(nn.Module):
    """Inference: mirror-averaged ``(mu, sigma)``, ``(N, 8)``.

    ``forward(x, psf_fwhm, psf_beta)`` with the PSF FWHM per band in arcsec
    ``(N, n_band)`` (converted to pixels with ``pixel_scale``) and, for a network with
    ``psf_beta_input``, the PSF's Moffat beta per band ``(N, n_band)``. ``mu = [mu(x) + M mu(mirror x)] / 2``
    with ``M`` flipping the sign of e2; ``sigma = sqrt([sigma(x)^2 + sigma(mirror x)^2] / 2)``.
    """

    def __init__(self, net: StructureNet, pixel_scale: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.pixel_scale = float(pixel_scale)
        self.register_buffer("sign", torch.tensor(MIRROR_SIGN), persistent=False)

    def forward(self, x: torch.Tensor, psf_fwhm: torch.Tensor | None = None,
                psf_beta: torch.Tensor | None = None) -> torch.Tensor:
        n, k = x.shape[0], len(TARGETS)
        both = torch.cat([x, x.flip(-1)], dim=0)
        if both.device.type == "cpu":
            both = both.contiguous(memory_format=torch.channels_last)
        psf = None if psf_fwhm is None else torch.cat([psf_fwhm, psf_fwhm]) / self.pixel_scale
        beta = None if psf_beta is None else torch.cat([psf_beta, psf_beta])
        out = self.net(both, psf, beta).float()
        mu = (out[:n, :k] + out[n:, :k] * self.sign) / 2
        var = (torch.exp(2 * out[:n, k:]) + torch.exp(2 * out[n:, k:])) / 2
        return torch.cat([mu, torch.sqrt(var)], dim=1)


def build(card: dict[str, Any]) -> MirrorAveraged:
    """The (untrained) inference module described by a model card."""
    return MirrorAveraged(StructureNet(len(card["input"]["bands"]), card.get("arch")),
                          float(card["input"].get("pixel_scale", 1.0)))


@torch.no_grad()
def add_beta_input(net: StructureNet, arch: dict[str, Any]) -> StructureNet:
    """A copy of ``net`` (without beta input) that also takes the Moffat beta.

    The new network has ``arch`` (``net``'s with ``psf_beta_input: true``) and every
    weight of ``net``; the first MLP layer's weights of the new beta features are zero,
    so it computes exactly what ``net`` computed, whatever the beta, until trained.

    Raises
    ------
    ValueError
        ``net`` already takes beta, or has no PSF input.
    """
    if net.psf_beta_input or not net.psf_input:
        raise ValueError("add_beta_input: need a network with psf_input and without "
                         "psf_beta_input")
    n_band = net.trunk.layers[0].conv.in_channels
    new = StructureNet(n_band, {**arch, "psf_input": True, "psf_beta_input": True})
    state = dict(net.state_dict())
    w = state["head.fc1.weight"]
    state["head.fc1.weight"] = torch.cat([w, w.new_zeros(w.shape[0], n_band)], dim=1)
    new.load_state_dict(state)
    return new


def predict_structure(module: nn.Module, stamps: np.ndarray,
                      inputs: Sequence[np.ndarray] = (), batch_size: int = 256) -> np.ndarray:
    """Run the inference module over stamps with its per-object inputs, as the engine does.

    Parameters
    ----------
    module : MirrorAveraged
        Called as ``module(x, *inputs)`` per batch (eval, inference mode).
    stamps : ndarray of float32, shape (N, n_band, S, S)
    inputs : sequence of ndarray, each (N, n_band)
        The head's ``inputs`` in order (``psf_fwhm`` [arcsec], then ``psf_beta``).
    batch_size : int

    Returns
    -------
    ndarray of float32, shape (N, 8)
        ``mu`` then ``sigma``.
    """
    from ..morphology.fit import predict

    out = predict(module, stamps, batch_size, aux=list(inputs))
    return out.reshape(-1, 2 * len(TARGETS))
