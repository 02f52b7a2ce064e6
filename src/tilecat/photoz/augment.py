"""Training augmentations: D4 about the centre pixel, and worse observing conditions.

Cutouts put the source on pixel ``(S // 2, S // 2)``; for even ``S`` a plain
rotation or mirror moves that pixel by one, which would shift the objects off the
apertures of :mod:`tilecat.photoz.photometry`. :func:`d4_centred` rolls the result
back so the centre pixel stays the centre (one wrapped row/column at the edge).
:func:`degrade` blurs and adds noise to emulate worse seeing and shallower depth.
"""

from __future__ import annotations

import torch

from ..morphology.fit import d4

__all__ = ["d4_centred", "degrade"]


def d4_centred(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element ``k`` (0..7) of D4 on ``(N, C, S, S)`` stamps, about pixel ``(S//2, S//2)``."""
    if k == 0:
        return x
    s = x.shape[-1]
    c = s // 2
    probe = torch.zeros((1, 1, s, s))
    probe[0, 0, c, c] = 1.0
    pos = int(torch.argmax(d4(probe, k)))
    dy, dx = c - pos // s, c - pos % s
    return torch.roll(d4(x, k), shifts=(dy, dx), dims=(-2, -1))


def degrade(x: torch.Tensor, sigma: torch.Tensor, gen: torch.Generator, prob: float = 0.5,
            max_noise_factor: float = 2.5, max_blur_fwhm: float = 4.5,
            psf_fwhm: torch.Tensor | None = None, pixel_scale: float = 0.262
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Observing-condition augmentation: worse seeing and shallower depth, per band.

    With probability ``prob`` per stamp, each band is convolved with a Gaussian of
    FWHM uniform in ``[0, max_blur_fwhm]`` pixels (added in quadrature to the PSF),
    then white noise is added so that the background noise grows by a factor ``k``
    log-uniform in ``[1, max_noise_factor]``; ``sigma`` is multiplied by ``k``.

    Parameters
    ----------
    x : tensor (N, B, S, S)
        arcsinh(F / sigma) stamps.
    sigma : tensor (N, B)
        Background noise per band (nanomaggies).
    gen : torch.Generator
        Random stream (training is reproducible).
    psf_fwhm : tensor (N, B), optional
        PSF FWHM per band [arcsec]; the blur is added to it in quadrature.
    pixel_scale : float
        arcsec / pixel (for ``psf_fwhm``).

    Returns
    -------
    (x', sigma', psf_fwhm')
        ``psf_fwhm'`` is None when ``psf_fwhm`` is.
    """
    n, nb, s, _ = x.shape
    pick = torch.rand(n, generator=gen) < prob
    if not bool(pick.any()):
        return x, sigma, psf_fwhm
    idx = torch.nonzero(pick)[:, 0]
    m = idx.numel()
    snr = torch.sinh(x[idx].float())  # F / sigma
    fwhm = torch.rand(m, nb, generator=gen) * max_blur_fwhm
    sd = (fwhm / 2.3548).clamp_min(1e-3)
    half = int(max(1, round(3 * max_blur_fwhm / 2.3548)))
    r = torch.arange(-half, half + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (r[None, None, :] / sd[:, :, None]) ** 2)  # (m, B, K)
    g = torch.where(fwhm[:, :, None] < 0.05, (r == 0).float().expand_as(g), g)
    g = g / g.sum(-1, keepdim=True)
    kk = 2 * half + 1
    g1 = g.reshape(m * nb, 1, 1, kk)  # separable Gaussian: rows, then columns
    blurred = torch.nn.functional.conv2d(snr.reshape(1, m * nb, s, s), g1,
                                         padding=(0, half), groups=m * nb)
    blurred = torch.nn.functional.conv2d(blurred, g1.reshape(m * nb, 1, kk, 1),
                                         padding=(half, 0), groups=m * nb).reshape(m, nb, s, s)
    resid = ((g ** 2).sum(-1)) ** 2  # (m, B): white-noise variance left after the blur
    lo, hi = 0.0, float(torch.log(torch.tensor(max_noise_factor)))
    k = torch.exp(lo + (hi - lo) * torch.rand(m, nb, generator=gen))
    add = torch.sqrt((k ** 2 - resid).clamp_min(0.0))
    noise = torch.randn(m, nb, s, s, generator=gen) * add[:, :, None, None]
    out_x = x.clone()
    out_s = sigma.clone()
    out_x[idx] = torch.asinh((blurred + noise) / k[:, :, None, None]).to(x.dtype)
    out_s[idx] = (sigma[idx].float() * k).to(sigma.dtype)
    out_p = None
    if psf_fwhm is not None:
        out_p = psf_fwhm.clone()
        out_p[idx] = torch.sqrt(psf_fwhm[idx].float() ** 2
                                + (fwhm * pixel_scale) ** 2).to(psf_fwhm.dtype)
    return out_x, out_s, out_p
