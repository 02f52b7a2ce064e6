"""The photo-z network: conv features + aperture colours -> softmax over redshift bins.

After Pasquet et al. (2019): a CNN reads the multi-band stamps; its pooled features
are concatenated with catalog-like photometry and an MLP outputs ``K`` logits, one
per bin of a :class:`~tilecat.photoz.grid.ZGrid`. The photometry is computed inside
the network from the stamps and the per-band background noise ``sigma`` (the cutouts'
``sigma(object, band)``): stamps are ``arcsinh(F / sigma)``, so colours cannot be
known without ``sigma``. For each band and aperture radius the network gets the
asinh magnitude (softened by the aperture noise), adjacent colours, the noise
itself and (``use_psf``) the PSF FWHM of each band, since aperture colours depend on
the seeing in each band (:class:`PhotoFeatures`; fixed aperture kernels applied as a
grouped convolution, so the result is batch-invariant). With ``use_mask`` the
features know about masked pixels (exactly 0 in the cutouts: defects, outside the
image): each aperture flux is divided by the unmasked fraction of the aperture
(masked pixels filled with the aperture's mean) and that fraction is a feature too.

:class:`PhotoZModule` is the inference module: ``(stamps, sigma[, psf_fwhm]) -> PDF
(N, K)``, the softmax of the logits divided by a temperature fitted on validation data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..infer.layers import BatchInvariantLinear
from ..morphology.net import Trunk
from .grid import ZGrid
from .photometry import ZEROPOINT, aperture_weights

__all__ = ["DEFAULT_ARCH", "PhotoFeatures", "PhotoZNet", "PhotoZModule", "build"]

#: default hyperparameters (stored in each model card)
DEFAULT_ARCH: dict[str, Any] = {
    "widths": [16, 32, 48, 64, 96],
    "strides": [2, 2, 1, 2, 2],
    "kernels": [5, 3, 3, 3, 3],
    "radii": [2.0, 4.0, 8.0, 12.0],
    "hidden": 192,
    "dropout": 0.1,
    "use_psf": True,
    "use_mask": True,
}
_PREF = 2.5 / float(np.log(10.0))


class PhotoFeatures(nn.Module):
    """Aperture photometry features from ``(stamps, sigma[, psf_fwhm])``.

    Parameters
    ----------
    n_band : int
    size : int
        Stamp side (pixels).
    radii : sequence of float
        Aperture radii (pixels), centred on pixel ``(size // 2, size // 2)``.
    ref : int
        Index of the band whose magnitudes are given (colours give the others).
    use_psf : bool
        Also take the PSF FWHM of each band.
    use_mask : bool
        Correct aperture fluxes for masked pixels (exactly 0) and give the masked
        fraction of every aperture.

    Notes
    -----
    Output ``(N, A + (B - 1) A + B [+ B] [+ B A])``: the reference band's asinh
    magnitudes in the ``A`` apertures, adjacent-band colours per aperture, ln of each
    band's background noise (nanomaggies) [and ln of each band's PSF FWHM (arcsec)]
    [and the masked fraction of each band's apertures], standardised with the training
    set's mean and standard deviation (buffers ``mean``/``std``; the masked fractions
    are left as they are, mean 0 and std 1).
    """

    def __init__(self, n_band: int, size: int, radii: Any, ref: int,
                 use_psf: bool = False, use_mask: bool = False) -> None:
        super().__init__()
        w = aperture_weights(size, list(radii))  # (A, S, S)
        a = w.shape[0]
        self.n_band, self.n_ap, self.ref = n_band, a, int(ref)
        kern = np.broadcast_to(w[None], (n_band, a, size, size)).reshape(n_band * a, 1, size,
                                                                          size)
        self.register_buffer("kernel", torch.from_numpy(np.ascontiguousarray(kern)),
                             persistent=False)
        noise = np.sqrt((w.astype(np.float64) ** 2).sum(axis=(1, 2)))
        self.register_buffer("ln_noise", torch.from_numpy(np.log(noise).astype(np.float32)),
                             persistent=False)
        self.register_buffer("area", torch.from_numpy(
            w.astype(np.float64).sum(axis=(1, 2)).astype(np.float32)), persistent=False)
        self.use_psf = bool(use_psf)
        self.use_mask = bool(use_mask)
        self.n_features = (a + (n_band - 1) * a + n_band * (2 if self.use_psf else 1)
                           + (n_band * a if self.use_mask else 0))
        self.register_buffer("mean", torch.zeros(self.n_features))
        self.register_buffer("std", torch.ones(self.n_features))

    def raw(self, x: torch.Tensor, sigma: torch.Tensor,
            psf_fwhm: torch.Tensor | None = None) -> torch.Tensor:
        """Unstandardised features ``(N, n_features)``.

        ``sigma`` (N, B) in nanomaggies; ``psf_fwhm`` (N, B) in arcsec (needed when
        ``use_psf``).
        """
        n = x.shape[0]
        f = nn.functional.conv2d(torch.sinh(x.float()), self.kernel.to(x.device),
                                 groups=self.n_band)  # flux / sigma, (N, B*A, 1, 1)
        f = f.reshape(n, self.n_band, self.n_ap)
        masked = None
        if self.use_mask:
            valid = nn.functional.conv2d((x != 0).float(), self.kernel.to(x.device),
                                         groups=self.n_band).reshape(n, self.n_band, self.n_ap)
            valid = (valid / self.area).clamp(0.0, 1.0)  # unmasked fraction of each aperture
            f = f / valid.clamp_min(0.1)
            masked = 1.0 - valid
        ln_b = torch.log(sigma.float().clamp_min(1e-30))[:, :, None] + self.ln_noise
        # luptitude with the aperture noise b as softening: F / b = f / noise
        lup = ZEROPOINT - _PREF * (torch.asinh(f / (2.0 * torch.exp(self.ln_noise))) + ln_b)
        colours = (lup[:, :-1, :] - lup[:, 1:, :]).reshape(n, -1)
        parts = [lup[:, self.ref, :], colours, ln_b[:, :, 0]]
        if self.use_psf:
            if psf_fwhm is None:
                raise ValueError("this photo-z network needs the PSF FWHM of each band")
            parts.append(torch.log(psf_fwhm.float().clamp_min(1e-3)))
        if masked is not None:
            parts.append(masked.reshape(n, -1))
        return torch.cat(parts, dim=1)

    @property
    def mask_slice(self) -> slice:
        """Positions of the masked-fraction features (empty without ``use_mask``)."""
        k = self.n_band * self.n_ap if self.use_mask else 0
        return slice(self.n_features - k, self.n_features)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor,
                psf_fwhm: torch.Tensor | None = None) -> torch.Tensor:
        """Standardised features ``(N, n_features)``."""
        return (self.raw(x, sigma, psf_fwhm) - self.mean) / self.std


class PhotoZNet(nn.Module):
    """Stamps + sigma -> logits over ``n_bins`` redshift bins.

    Parameters
    ----------
    n_band : int
    size : int
        Stamp side (pixels).
    n_bins : int
        ``K``.
    arch : dict, optional
        Overrides of :data:`DEFAULT_ARCH`.
    ref : int
        Reference band index (see :class:`PhotoFeatures`).
    """

    def __init__(self, n_band: int, size: int, n_bins: int, arch: dict[str, Any] | None = None,
                 ref: int = 1) -> None:
        super().__init__()
        a = {**DEFAULT_ARCH, **(arch or {})}
        self.trunk = Trunk(n_band, a["widths"], a["strides"], a["kernels"])
        self.photo = PhotoFeatures(n_band, size, a["radii"], ref, bool(a["use_psf"]),
                                   bool(a.get("use_mask", False)))
        h = int(a["hidden"])
        self.fc1 = BatchInvariantLinear(self.trunk.n_features + self.photo.n_features, h)
        self.fc2 = BatchInvariantLinear(h, h)
        self.fc3 = BatchInvariantLinear(h, int(n_bins))
        self.drop = nn.Dropout(float(a["dropout"]))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor,
                psf_fwhm: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (N, B, S, S) arcsinh stamps, ``sigma`` (N, B) nanomaggies, ``psf_fwhm``
        (N, B) arcsec -> logits (N, K)."""
        h = torch.cat([self.trunk(x), self.photo(x, sigma, psf_fwhm)], dim=1)
        h = self.drop(torch.relu(self.fc1(h)))
        h = self.drop(torch.relu(self.fc2(h)))
        return self.fc3(h)


class PhotoZModule(nn.Module):
    """Inference: ``(stamps, sigma[, psf_fwhm]) -> softmax(logits / T)``, shape (N, K).

    Attributes
    ----------
    temperature : buffer
        Fitted on validation data (stored in the weights and the card).
    flux_scale : buffer (B,)
        Nanomaggies per flux unit of ``sigma`` (1 for a nanomaggy survey; set by the
        head from the survey zeropoints), not stored.
    """

    def __init__(self, net: PhotoZNet, n_band: int) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("flux_scale", torch.ones(n_band), persistent=False)

    @property
    def inputs(self) -> tuple[str, ...]:
        """Per-object inputs after the stamps (cutout / engine variable names)."""
        return ("sigma", "psf_fwhm") if self.net.photo.use_psf else ("sigma",)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor,
                psf_fwhm: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.net(x, sigma.float() * self.flux_scale, psf_fwhm)
        return torch.softmax(logits.float() / self.temperature, dim=1)


def build(card: dict[str, Any]) -> PhotoZModule:
    """The (untrained) inference module described by a model card."""
    bands = list(card["input"]["bands"])
    grid = ZGrid.from_meta(card["z_grid"])
    ref = bands.index("r") if "r" in bands else len(bands) // 2
    arch = dict(card.get("arch") or {})
    arch.setdefault("use_psf", False)  # cards written before the PSF input existed
    arch.setdefault("use_mask", False)  # cards written before the mask features existed
    net = PhotoZNet(len(bands), int(card["input"]["stamp_size"]), int(grid.n_bins), arch, ref)
    return PhotoZModule(net, len(bands))
