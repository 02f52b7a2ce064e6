"""Training augmentations: D4 about the centre pixel, worse observing conditions, and
what the pipeline's cutouts have that simulated stamps lack.

Cutouts put the source on pixel ``(S // 2, S // 2)``; for even ``S`` a plain
rotation or mirror moves that pixel by one, which would shift the objects off the
apertures of :mod:`tilecat.photoz.photometry`. :func:`d4_centred` rolls the result
back so the centre pixel stays the centre (one wrapped row/column at the edge).
:func:`degrade` blurs and adds noise to emulate worse seeing and shallower depth.

The stamp simulator renders every galaxy on an exactly known sky, with every pixel
valid. The detect stage's cutouts have a sky estimate (a residual of ~0.01 sigma per
pixel after its source-masked second pass) and 0 in masked pixels and outside the
image (DESIGN.md §4): :func:`sky_offset` and :func:`mask_regions` put both into the
training stamps.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..morphology.fit import d4

__all__ = ["d4_centred", "degrade", "sky_offset", "mask_regions", "DEFAULT_SKY",
           "DEFAULT_MASK"]

#: default :func:`sky_offset` arguments
DEFAULT_SKY: dict[str, float] = {"prob": 0.5, "scale": 0.01}
#: default :func:`mask_regions` arguments
DEFAULT_MASK: dict[str, float] = {"prob_edge": 0.08, "prob_defect": 0.15}


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


#: Moffat beta values of the transform table (``beta_range`` is sampled on them)
_BETA_STEP = 0.1
_U_MAX, _U_STEP = 64.0, 0.01


@functools.lru_cache(maxsize=4)
def _moffat_table(b_lo: float, b_hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fourier transforms of unit-flux Moffat profiles on a grid of ``u = k alpha``.

    ``F(k) = 2^(2 - beta) / Gamma(beta - 1) (k alpha)^(beta - 1) K_(beta - 1)(k alpha)``
    (the Hankel transform of ``(beta - 1) / (pi alpha^2) (1 + r^2 / alpha^2)^-beta``;
    ``F(0) = 1``). Returns the betas (nb,) and the table (nb, nu), float32.
    """
    from scipy.special import gamma, kv

    betas = np.arange(b_lo, b_hi + 1e-9, _BETA_STEP) if b_hi > b_lo else np.array([b_lo])
    u = np.arange(0.0, _U_MAX + _U_STEP, _U_STEP)
    nu = betas[:, None] - 1.0
    with np.errstate(invalid="ignore", over="ignore"):
        t = 2.0 ** (1.0 - nu) / gamma(nu) * u[None, :] ** nu * kv(nu, u[None, :])
    t[:, 0] = 1.0
    t = np.nan_to_num(t, nan=0.0, posinf=0.0)
    return (torch.from_numpy(betas.astype(np.float32)),
            torch.from_numpy(t.astype(np.float32)))


def _moffat_ft(fwhm_pix: torch.Tensor, beta_idx: torch.Tensor, table: torch.Tensor,
               betas: torch.Tensor, n: int) -> torch.Tensor:
    """Moffat transforms (m, B, n, n // 2 + 1) on the rfft2 grid of an ``n x n`` image
    (pixel units), interpolated in the table; 0 beyond its range."""
    ky = 2 * torch.pi * torch.fft.fftfreq(n)
    kx = 2 * torch.pi * torch.fft.rfftfreq(n)
    kr = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2).reshape(-1)  # (n * (n//2+1),)
    beta = betas[beta_idx]  # (m, B)
    alpha = fwhm_pix / (2.0 * torch.sqrt(2.0 ** (1.0 / beta) - 1.0))
    pos = kr[None, None, :] * alpha[..., None] / _U_STEP
    nu = table.shape[1]
    i0 = pos.floor().clamp(0, nu - 2)
    w = (pos - i0).clamp(0.0, 1.0)
    rows = table[beta_idx]  # (m, B, nu)
    i0 = i0.long()
    t = torch.gather(rows, 2, i0) * (1 - w) + torch.gather(rows, 2, i0 + 1) * w
    t = torch.where(pos >= nu - 1, torch.zeros_like(t), t)
    return t.reshape(*fwhm_pix.shape, n, n // 2 + 1)


def _moffat_blur(snr: torch.Tensor, psf_pix: torch.Tensor, blur_pix: torch.Tensor,
                 beta_idx: torch.Tensor, table: torch.Tensor, betas: torch.Tensor,
                 pad: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn Moffat PSFs of FWHM ``psf_pix`` into Moffat PSFs of FWHM
    ``sqrt(psf_pix^2 + blur_pix^2)`` (same beta): convolution with the kernel whose
    transform is the ratio of the two Moffat transforms (FFT, ``pad`` zero pixels).

    Returns the blurred images (m, B, S, S) and the sum of the kernel's squares (m, B)
    (the white-noise variance left).
    """
    s = snr.shape[-1]
    n = s + pad
    t1 = _moffat_ft(psf_pix, beta_idx, table, betas, n)
    t2 = _moffat_ft(torch.sqrt(psf_pix ** 2 + blur_pix ** 2), beta_idx, table, betas, n)
    ratio = torch.where(t1 > 1e-6, t2 / t1.clamp_min(1e-6), torch.zeros_like(t1))
    ratio = torch.where(blur_pix[..., None, None] < 0.05, torch.ones_like(ratio), ratio)
    padded = torch.nn.functional.pad(snr.float(), (0, pad, 0, pad))
    out = torch.fft.irfft2(torch.fft.rfft2(padded) * ratio, s=(n, n))[..., :s, :s]
    # Parseval on the half-plane layout: columns 1 .. n/2 - 1 stand for two
    wcol = torch.full((n // 2 + 1,), 2.0)
    wcol[0] = 1.0
    wcol[-1] = 1.0 if n % 2 == 0 else 2.0
    resid = (ratio ** 2 * wcol).sum(dim=(-2, -1)) / (n * n)
    return out, resid


def degrade(x: torch.Tensor, sigma: torch.Tensor, gen: torch.Generator, prob: float = 0.5,
            max_noise_factor: float = 2.5, max_blur_fwhm: float = 4.5,
            psf_fwhm: torch.Tensor | None = None, pixel_scale: float = 0.262,
            kernel: str = "gaussian", beta_range: tuple[float, float] = (2.5, 4.5)
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Observing-condition augmentation: worse seeing and shallower depth, per band.

    With probability ``prob`` per stamp, each band is blurred by ``b`` pixels FWHM,
    ``b`` uniform in ``[0, max_blur_fwhm]`` (added in quadrature to the PSF FWHM),
    then white noise is added so that the background noise grows by a factor ``k``
    log-uniform in ``[1, max_noise_factor]``; ``sigma`` is multiplied by ``k``.

    ``kernel="gaussian"`` convolves with a Gaussian of FWHM ``b``: the PSF becomes a
    Moffat convolved with a Gaussian, whose wings are relatively weaker than those of
    a Moffat of the same FWHM (aperture colours then differ from a survey's with that
    seeing; measured: PDFs biased low on stamps simulated with broader Moffat PSFs).
    ``kernel="moffat"`` (needs ``psf_fwhm``) turns the stamp's Moffat PSF (``beta``
    drawn uniform in ``beta_range`` on a 0.1 grid, the simulator's range) into a Moffat of
    FWHM ``sqrt(psf^2 + b^2)`` with the same ``beta`` (analytic Moffat transforms).

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
    if kernel not in ("gaussian", "moffat"):
        raise ValueError(f"degrade: kernel must be 'gaussian' or 'moffat', not {kernel!r}")
    if kernel == "moffat" and psf_fwhm is None:
        raise ValueError("degrade: kernel='moffat' needs the PSF FWHM of each stamp")
    n, nb, s, _ = x.shape
    pick = torch.rand(n, generator=gen) < prob
    if not bool(pick.any()):
        return x, sigma, psf_fwhm
    idx = torch.nonzero(pick)[:, 0]
    m = idx.numel()
    snr = torch.sinh(x[idx].float())  # F / sigma
    fwhm = torch.rand(m, nb, generator=gen) * max_blur_fwhm
    if kernel == "gaussian":
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
                                             padding=(half, 0),
                                             groups=m * nb).reshape(m, nb, s, s)
        resid = ((g ** 2).sum(-1)) ** 2  # (m, B): white-noise variance left after the blur
    lo, hi = 0.0, float(torch.log(torch.tensor(max_noise_factor)))
    k = torch.exp(lo + (hi - lo) * torch.rand(m, nb, generator=gen))
    if kernel == "moffat":
        assert psf_fwhm is not None
        betas, table = _moffat_table(*(round(float(v), 3) for v in beta_range))
        bi = torch.randint(0, len(betas), (m,), generator=gen)[:, None].expand(m, nb)
        psf_pix = psf_fwhm[idx].float() / float(pixel_scale)
        blurred, resid = _moffat_blur(snr, psf_pix, fwhm, bi, table, betas)
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


def sky_offset(x: torch.Tensor, gen: torch.Generator, prob: float = 0.5,
               scale: float = 0.015) -> torch.Tensor:
    """Sky-subtraction errors: a constant offset per band, in units of the noise.

    With probability ``prob`` per stamp, band ``b`` becomes
    ``arcsinh(sinh(x_b) + d_b)`` with ``d_b ~ N(0, scale)`` (sigma units, independent
    per band). Masked pixels (exactly 0) stay 0.

    Parameters
    ----------
    x : tensor (N, B, S, S)
        arcsinh(F / sigma) stamps.
    gen : torch.Generator
    prob, scale : float

    Returns
    -------
    tensor (N, B, S, S)
    """
    n, nb = x.shape[:2]
    pick = (torch.rand(n, generator=gen) < prob).float()
    d = torch.randn(n, nb, generator=gen) * float(scale) * pick[:, None]
    if not bool((d != 0).any()):
        return x
    out = torch.asinh(torch.sinh(x.float()) + d[:, :, None, None])
    return torch.where(x == 0, torch.zeros_like(out), out).to(x.dtype)


def mask_regions(x: torch.Tensor, gen: torch.Generator, prob_edge: float = 0.08,
                 prob_defect: float = 0.15) -> torch.Tensor:
    """Zero what the detect stage zeroes: the image edge and masked defects.

    * with probability ``prob_edge`` per stamp, every band loses the rows (or
      columns) beyond a random distance of 6 to S/2 - 1 pixels from the centre on
      one random side (a source near the tile edge);
    * with probability ``prob_defect`` per stamp, each band independently (p = 0.5,
      at least one band) gets one masked defect: a trail (a line 2-8 pixels wide at
      a random angle passing within 20 pixels of the centre), a bad column (1-3
      pixels wide, within 20 pixels) or 1-3 cosmic-ray blobs (radius 1-2.5 pixels,
      within 16 pixels).

    Parameters
    ----------
    x : tensor (N, B, S, S)
    gen : torch.Generator
    prob_edge, prob_defect : float

    Returns
    -------
    tensor (N, B, S, S), a copy where anything was masked
    """
    n, nb, s, _ = x.shape
    c = s // 2
    u = torch.rand(n, 2, generator=gen)
    edge = torch.nonzero(u[:, 0] < prob_edge)[:, 0].tolist()
    defect = torch.nonzero(u[:, 1] < prob_defect)[:, 0].tolist()
    if not edge and not defect:
        return x
    out = x.clone()
    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32) - c,
                            torch.arange(s, dtype=torch.float32) - c, indexing="ij")

    def ri(lo: int, hi: int) -> int:  # integer in [lo, hi]
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    def rf(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(1, generator=gen))

    for i in edge:
        d = ri(6, c - 1)
        side = ri(0, 3)
        if side == 0:
            out[i, :, c + d:, :] = 0
        elif side == 1:
            out[i, :, :c - d, :] = 0
        elif side == 2:
            out[i, :, :, c + d:] = 0
        else:
            out[i, :, :, :c - d] = 0
    for i in defect:
        bands = torch.nonzero(torch.rand(nb, generator=gen) < 0.5)[:, 0].tolist()
        if not bands:
            bands = [ri(0, nb - 1)]
        for b in bands:
            kind = ri(0, 2)
            if kind == 0:  # trail: |distance to the line| < w / 2
                theta = rf(0.0, float(torch.pi))
                off = rf(-20.0, 20.0)
                w = rf(2.0, 8.0)
                dist = (xx * torch.sin(torch.tensor(theta)) - yy * torch.cos(torch.tensor(theta))
                        - off)
                m = dist.abs() < w / 2
            elif kind == 1:  # bad column
                x0 = ri(-20, 20)
                m = (xx >= x0) & (xx < x0 + ri(1, 3))
            else:  # cosmic-ray blobs
                m = torch.zeros((s, s), dtype=torch.bool)
                for _ in range(ri(1, 3)):
                    cy, cx, r = rf(-16.0, 16.0), rf(-16.0, 16.0), rf(1.0, 2.5)
                    m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            out[i, b][m] = 0
    return out
