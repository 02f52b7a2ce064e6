"""A small convolutional VAE for galaxy stamps (Xu et al. 2023 style, 40 latents).

Encoder: strided 3x3 / 5x5 convolutions (batch norm + ReLU) down to 4x4, then a
linear layer to the posterior mean and log-variance of ``n_latent`` Gaussians.
Decoder: a linear layer back to 4x4, then (nearest 2x upsampling + 3x3 conv + BN +
ReLU) up to the stamp size and a final 3x3 conv to the bands (arcsinh units, no
output activation). Fully-connected layers are
:class:`~tilecat.infer.layers.BatchInvariantLinear`, so encodings do not depend on
the batch size.

:class:`LatentModule` is the inference module: stamps -> ``{"latent": posterior
means (N, n_latent), "recon_chi2": (N,)}`` and, for a card whose outlier score uses it,
``"recon_chi2_core": (N,)`` (the chi^2 per pixel inside a central disc; deterministic:
no sampling).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..infer.layers import BatchInvariantLinear
from ..morphology.net import ConvBNReLU
from .noise import EPS, LIKELIHOODS, chi2_map, nll_per_stamp

__all__ = ["DEFAULT_ARCH", "LEGACY_LIKELIHOOD", "CORE_RADIUS_PX", "ConvVAE", "LatentModule",
           "build", "card_arch", "core_disc", "elbo_terms", "kl_per_dim"]

#: default hyperparameters (stored in each model card)
DEFAULT_ARCH: dict[str, Any] = {
    "n_latent": 40,
    "enc_widths": [32, 64, 96, 64],
    "enc_kernels": [5, 3, 3, 3],
    "dec_widths": [64, 48, 24, 12],
    "eps": EPS,
    "likelihood": "flux",
}

#: likelihood of a card whose ``arch`` has no ``likelihood`` key (the first model)
LEGACY_LIKELIHOOD = "asinh"

#: radius (pixels) of the central disc of ``recon_chi2_core`` (a quarter of a 64-pixel
#: stamp, 4.2" at 0.262"/pixel: the galaxy, not its neighbours at the stamp edges)
CORE_RADIUS_PX = 16.0


def core_disc(size: int, radius: float) -> torch.Tensor:
    """Float mask ``(size, size)``: 1 where the pixel centre lies within ``radius`` pixels
    of the stamp centre (pixel ``size // 2``, where cutouts put the object), else 0."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r2 = (yy - size // 2).double() ** 2 + (xx - size // 2).double() ** 2
    return (r2 < float(radius) ** 2).float()


class _Up(nn.Module):
    """Nearest 2x upsampling + ConvBNReLU 3x3."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


class ConvVAE(nn.Module):
    """Convolutional VAE.

    Parameters
    ----------
    n_band : int
    size : int
        Stamp side; must be divisible by 2 ** len(enc_widths).
    arch : dict, optional
        Overrides of :data:`DEFAULT_ARCH`.
    """

    def __init__(self, n_band: int, size: int, arch: dict[str, Any] | None = None) -> None:
        super().__init__()
        a = {**DEFAULT_ARCH, **(arch or {})}
        enc, dec = list(a["enc_widths"]), list(a["dec_widths"])
        if size % (2 ** len(enc)) or len(dec) != len(enc):
            raise ValueError(f"stamp size {size} must be divisible by 2**{len(enc)} and the "
                             "encoder and decoder need the same number of stages")
        self.n_latent = int(a["n_latent"])
        self.low = size // (2 ** len(enc))
        layers, cin = [], n_band
        for w, k in zip(enc, a["enc_kernels"], strict=True):
            layers.append(ConvBNReLU(cin, int(w), int(k), 2))
            cin = int(w)
        self.encoder = nn.Sequential(*layers)
        n_flat = cin * self.low * self.low
        self.to_post = BatchInvariantLinear(n_flat, 2 * self.n_latent)
        self.dec_in = int(dec[0])
        self.from_latent = BatchInvariantLinear(self.n_latent, self.dec_in * self.low ** 2)
        ups, cin = [], self.dec_in
        for w in dec:
            ups.append(_Up(cin, int(w)))
            cin = int(w)
        self.decoder = nn.Sequential(*ups)
        self.out = nn.Conv2d(cin, n_band, 3, 1, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stamps (N, B, S, S) -> posterior mean and log-variance, each (N, n_latent)."""
        h = self.encoder(x).flatten(1)
        post = self.to_post(h)
        return post[:, :self.n_latent], post[:, self.n_latent:].clamp(-12.0, 6.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, n_latent) -> reconstructed stamps (N, B, S, S) in arcsinh units."""
        h = torch.relu(self.from_latent(z)).reshape(-1, self.dec_in, self.low, self.low)
        return self.out(self.decoder(h))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction of a posterior sample, mean, log-variance)."""
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return self.decode(z), mu, logvar


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL of N(mu, exp(logvar)) from N(0, 1) per latent dimension, ``(N, D)``."""
    return 0.5 * (mu ** 2 + torch.exp(logvar) - 1.0 - logvar)


def elbo_terms(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
               eps: float = EPS, likelihood: str = LEGACY_LIKELIHOOD
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative log-likelihood and KL per stamp (batch means), the two ELBO terms.

    NLL: :func:`tilecat.latent.noise.nll_per_stamp` (Gaussian noise, ``likelihood``
    ``"flux"`` or ``"asinh"``, constants dropped); KL of N(mu, exp(logvar)) from N(0, I).
    """
    nll = nll_per_stamp(x, recon, eps, likelihood)
    return nll.mean(), kl_per_dim(mu, logvar).sum(1).mean()


class LatentModule(nn.Module):
    """Inference: stamps -> posterior means and reconstruction chi^2 per pixel.

    Parameters
    ----------
    vae : ConvVAE
    eps : float
        Fractional flux floor of the noise model.
    likelihood : str
        Noise model of the chi^2 (:data:`tilecat.latent.noise.LIKELIHOODS`).
    core_radius : float, optional
        If given (pixels), also return ``recon_chi2_core``: the chi^2 per pixel over
        every band inside the central disc of this radius (:func:`core_disc`).
    """

    def __init__(self, vae: ConvVAE, eps: float = EPS,
                 likelihood: str = LEGACY_LIKELIHOOD,
                 core_radius: float | None = None) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; known: {LIKELIHOODS}")
        self.vae = vae
        self.eps = float(eps)
        self.likelihood = likelihood
        self.core_radius = None if core_radius is None else float(core_radius)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.float()
        mu, _ = self.vae.encode(x)
        recon = self.vae.decode(mu)
        c = chi2_map(x, recon, self.eps, self.likelihood)
        out = {"latent": mu, "recon_chi2": c.flatten(1).mean(dim=1)}
        if self.core_radius is not None:
            disc = core_disc(int(x.shape[-1]), self.core_radius).to(c.device)
            out["recon_chi2_core"] = ((c * disc).flatten(1).sum(dim=1)
                                      / (disc.sum() * c.shape[1]))
        return out


def card_arch(card: dict[str, Any]) -> dict[str, Any]:
    """A card's architecture, default-filled (no ``likelihood`` key: the legacy one)."""
    given = dict(card.get("arch") or {})
    given.setdefault("likelihood", LEGACY_LIKELIHOOD)
    return {**DEFAULT_ARCH, **given}


def build(card: dict[str, Any]) -> LatentModule:
    """The (untrained) inference module described by a model card (with
    ``recon_chi2_core`` when the card's ``outlier_standardisation`` has a
    ``core_radius_px``)."""
    arch = card_arch(card)
    vae = ConvVAE(len(card["input"]["bands"]), int(card["input"]["stamp_size"]), arch)
    core = (card.get("outlier_standardisation") or {}).get("core_radius_px")
    return LatentModule(vae, float(arch["eps"]), str(arch["likelihood"]),
                        None if core is None else float(core))
