"""Fast multi-band rendering of small scenes in Fourier space.

A scene (galaxy + neighbours) is a list of unit-flux GalSim profiles, each with a
flux per band. Every profile's Fourier transform is evaluated **once** on a fixed
k-grid (``GSObject.drawKImage``); each band's image is then

    image_b = IDFT[ (sum_p flux_pb K_p(k)) * PSF_b(k) ]

with ``PSF_b`` the discrete Fourier transform of the band's Moffat PSF sampled at
pixel centres (the conditions' PSF is the effective, pixel-convolved PSF, so no
extra pixel response is applied). One inverse FFT per band replaces one GalSim FFT
draw per band and profile: about an order of magnitude faster for 4 bands, and
identical to ``galsim.Convolve(profile, psf).drawImage(method='no_pixel')`` up to the
periodic wrap of the ``n * scale`` grid and the truncation of the galaxy transform
at the Nyquist frequency (both negligible for PSF-convolved stamps with ``n`` twice
the stamp size).

Sums of many small shifted Gaussians (spiral-arm knots) are rendered in real space
on the pixel grid and transformed with one FFT: evaluating 100 Gaussians on the
whole k-grid costs ~15 ms, the real-space path ~0.3 ms.

Conventions: ``K(k) = integral I(x) exp(-i k.x) d^2x`` (GalSim's); pixel ``(iy, ix)``
of an ``n x n`` grid is at ``x = (ix - n // 2) * scale`` (the origin of the
profiles lands on pixel ``n // 2``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["KGrid", "moffat_image"]


def moffat_image(n: int, scale: float, fwhm: float, beta: float) -> np.ndarray:
    """Unit-sum Moffat sampled at pixel centres of an n x n grid, centred on n // 2.

    Parameters
    ----------
    n : int
        Grid size, pixels.
    scale : float
        Pixel scale, arcsec.
    fwhm : float
        FWHM, arcsec.
    beta : float
        Moffat beta (> 1).

    Returns
    -------
    ndarray, shape (n, n), float64
    """
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    c = (np.arange(n) - n // 2) * scale
    r2 = c[None, :] ** 2 + c[:, None] ** 2
    img = (1.0 + r2 / alpha**2) ** (-beta)
    return img / img.sum()


class KGrid:
    """An ``n x n`` pixel grid of scale ``scale`` (arcsec) and its half-plane k-grid.

    Transforms are stored in the real-FFT layout, shape ``(n, n // 2 + 1)``:
    ``kx = ix * dk`` for ``ix = 0 .. n/2`` and ``ky`` in FFT order (0, dk, ...,
    -dk), as complex64.

    Parameters
    ----------
    n : int
        Grid size in pixels (even); stamps are cropped from its centre.
    scale : float
        Pixel scale, arcsec/pixel.
    """

    def __init__(self, n: int, scale: float) -> None:
        if n % 2:
            raise ValueError(f"k-grid size must be even, got {n}")
        self.n = int(n)
        self.scale = float(scale)
        self.dk = 2.0 * math.pi / (self.n * self.scale)
        self.kx = (np.arange(self.n // 2 + 1) * self.dk)[None, :]
        self.ky = (np.fft.fftfreq(self.n, d=1.0 / self.n) * self.dk)[:, None]
        self.shape = (self.n, self.n // 2 + 1)

    # ------------------------------------------------------------------ transforms
    def kimage(self, obj: Any) -> np.ndarray:
        """Fourier transform of a GalSim profile on this grid (half-plane, complex64)."""
        import galsim

        fast = _gaussian_sum(obj)
        if fast is not None:
            return self.real_to_k(self._gaussians_image(*fast))
        h = self.n // 2
        k = obj.drawKImage(bounds=galsim.BoundsI(0, h, -h, h - 1), scale=self.dk,
                           recenter=False).array  # rows ky = -n/2 .. n/2-1
        return np.fft.ifftshift(k, axes=0).astype(np.complex64)

    def real_to_k(self, img: np.ndarray) -> np.ndarray:
        """Half-plane transform of an image whose origin is pixel (n//2, n//2)."""
        import scipy.fft

        return scipy.fft.rfft2(np.fft.ifftshift(img, axes=(-2, -1))).astype(np.complex64)

    def shift_phase(self, dx: float, dy: float) -> np.ndarray:
        """Phase factor shifting a profile by (dx, dy) arcsec (complex64, separable)."""
        return (np.exp(-1j * self.ky * dy) * np.exp(-1j * self.kx * dx)).astype(np.complex64)

    def point_k(self, x: float, y: float, flux: float = 1.0) -> np.ndarray:
        """Transform of a point source of ``flux`` at (x, y) arcsec."""
        return np.complex64(flux) * self.shift_phase(x, y)

    def psf_k(self, fwhm: float, beta: float) -> np.ndarray:
        """Transform of the pixel-sampled Moffat PSF (unit sum)."""
        return self.real_to_k(moffat_image(self.n, self.scale, fwhm, beta))

    def to_images(self, kparts: np.ndarray, fluxes: np.ndarray, psf_k: np.ndarray | None,
                  crop: int | None = None) -> np.ndarray:
        """Images of all bands.

        Parameters
        ----------
        kparts : ndarray, shape (P, n, n//2+1) complex
            Unit-flux part transforms (already shifted to their positions).
        fluxes : ndarray, shape (P, B)
            Flux of each part in each band.
        psf_k : ndarray, shape (B, n, n//2+1) complex, or None
            PSF transforms per band (None: no convolution).
        crop : int, optional
            Return the central ``crop x crop`` pixels (pixel n//2 -> crop//2).

        Returns
        -------
        ndarray, shape (B, crop, crop) float32
            Flux per pixel.
        """
        import scipy.fft

        p = kparts.shape[0]
        kp = np.ascontiguousarray(kparts, dtype=np.complex64)
        # real weights times complex parts: one float32 matmul on the interleaved view
        kb = (np.asarray(fluxes, np.float32).T @ kp.view(np.float32).reshape(p, -1))
        kb = kb.view(np.complex64).reshape((-1,) + self.shape)
        if psf_k is not None:
            kb *= psf_k
        img = scipy.fft.irfft2(kb, s=(self.n, self.n))
        img = np.fft.fftshift(img, axes=(-2, -1))
        if crop is not None:
            lo = self.n // 2 - crop // 2
            img = img[:, lo:lo + crop, lo:lo + crop]
        return np.ascontiguousarray(img, dtype=np.float32)

    def radius_pixels(self) -> np.ndarray:
        """Distance (pixels) of every pixel of the n x n image from pixel (n//2, n//2)."""
        c = np.arange(self.n) - self.n // 2
        return np.hypot(c[None, :], c[:, None])

    # ------------------------------------------------------------------ gaussians
    def _gaussians_image(self, jac: np.ndarray, offset: tuple[float, float], flux: float,
                         sig: np.ndarray, xy: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``flux * sum_j w_j N(A x_j + offset, A A^T sig_j^2)`` on the pixel grid."""
        n, s = self.n, self.scale
        pos = xy @ jac.T + np.asarray(offset)  # (K, 2) arcsec
        cov = (sig[:, None, None] ** 2) * (jac @ jac.T)[None]  # (K, 2, 2) arcsec^2
        cov = cov + np.eye(2)[None] * (s * s / 12.0)  # pixel-integration smoothing
        det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
        inv = np.stack([cov[:, 1, 1], -cov[:, 0, 1], cov[:, 0, 0]], axis=1) / det[:, None]
        half = int(min(math.ceil(4.0 * math.sqrt(float(np.max(cov[:, [0, 1], [0, 1]])))
                                 / s) + 1, n // 2 - 1))
        off = np.arange(-half, half + 1)
        cx = np.rint(pos[:, 0] / s).astype(np.int64) + n // 2  # nearest pixel
        cy = np.rint(pos[:, 1] / s).astype(np.int64) + n // 2
        px = cx[:, None] + off[None, :]  # (K, m)
        py = cy[:, None] + off[None, :]
        dx = (px - n // 2) * s - pos[:, 0:1]
        dy = (py - n // 2) * s - pos[:, 1:2]
        q = (inv[:, 0, None, None] * dx[:, None, :] ** 2
             + 2 * inv[:, 1, None, None] * dx[:, None, :] * dy[:, :, None]
             + inv[:, 2, None, None] * dy[:, :, None] ** 2)
        val = np.exp(-0.5 * q) * (w / (2 * np.pi * np.sqrt(det)))[:, None, None] * s * s
        ok = ((px >= 0) & (px < n))[:, None, :] & ((py >= 0) & (py < n))[:, :, None]
        flat = (py[:, :, None] * n + px[:, None, :])
        img = np.bincount(flat[ok], weights=val[ok], minlength=n * n).reshape(n, n)
        img *= flux / max(img.sum(), 1e-300)
        return img


def _gaussian_sum(obj: Any) -> tuple | None:
    """Recognise a transformed sum of many small Gaussians.

    Two forms: ``Transformation(Sum(shifted Gaussians))`` (spiral-arm knots) and
    ``Transformation(Convolution(RandomKnots, Gaussian))`` (star-forming clumps).

    Returns (jac (2, 2), offset (x, y), flux, sigmas (K,), positions (K, 2),
    weights (K,)) or None when ``obj`` is not of such a form (>= 20 Gaussians, >= 10 knots).
    """
    import galsim

    jac = np.eye(2)
    offset = np.zeros(2)
    flux = float(obj.flux)  # includes flux ratios and Jacobian determinants
    o = obj
    while isinstance(o, galsim.Transformation):
        j = np.asarray(o.jac, dtype=float).reshape(2, 2)
        # x -> J x + off applied on top of the inner transformation
        offset = offset + jac @ np.array([o.offset.x, o.offset.y])
        jac = jac @ j
        o = o.original
    if isinstance(o, galsim.Convolution) and len(o.obj_list) == 2:
        knots, blur = o.obj_list
        if (isinstance(knots, galsim.RandomKnots) and isinstance(blur, galsim.Gaussian)
                and knots.npoints >= 10):
            pts = np.asarray(knots.points, dtype=float)
            k = pts.shape[0]
            return (jac, (offset[0], offset[1]), flux, np.full(k, float(blur.sigma)), pts,
                    np.full(k, 1.0 / k))
        return None
    if not isinstance(o, galsim.Sum) or len(o.obj_list) < 20:
        return None
    sig, xy, w = [], [], []
    for c in o.obj_list:
        cflux = float(c.flux)
        coff = np.zeros(2)
        while isinstance(c, galsim.Transformation):
            j = c.jac
            if j is not None and (j[0, 0] != 1 or j[1, 1] != 1 or j[0, 1] != 0 or j[1, 0] != 0):
                return None
            coff = coff + np.array([c.offset.x, c.offset.y])
            c = c.original
        if not isinstance(c, galsim.Gaussian):
            return None
        sig.append(c.sigma)
        xy.append(coff)
        w.append(cflux)
    w_arr = np.asarray(w)
    return jac, (offset[0], offset[1]), flux, np.asarray(sig), np.asarray(xy), w_arr / w_arr.sum()
