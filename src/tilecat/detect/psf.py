"""The PSF shape of one band, measured on the tile's stars: a joint Moffat fit.

Model of the effective (pixel-convolved) PSF, sampled at pixel centres::

    I(x, y) = A_k (1 + r^2 / alpha^2) ** (-beta),   r^2 = (x - x_k)^2 + (y - y_k)^2,
    FWHM = 2 alpha sqrt(2 ** (1 / beta) - 1)

fitted to the pixels of the selected stars jointly: ``beta`` (and, in the free fit,
the FWHM) is shared, each star has its own centre and amplitude; no background term
(the detect stage has subtracted it).

Star selection (:func:`select_stars`), per band:

1. not truncated by the tile edge (the caller's ``exclude``), the band's AUTO S/N at
   least ``min_snr``;
2. on the stellar locus: the band's half-light radius (``sep.flux_radius`` within 3
   FWHMs, or ``_RMAX_UNKNOWN`` pixels, other sources' segments masked) within
   ``LOCUS_TOL`` (log) of the locus, the S/N-weighted mode of the radii (stars share
   one radius and dominate the bright end; galaxies spread above it). With a header
   FWHM known, radii outside 0.47-1.5 FWHM (no Moffat of beta 1.36-inf has them:
   noise peaks, unmasked defects, fragments) are dropped first;
3. clean and isolated: the fit disc (radius ``FIT_RADIUS_FWHM`` FWHMs) lies inside
   the tile, has no ``saturated``/``bleed``/``nodata`` pixel, no other source with
   more than ``NEIGHBOUR_SNR_FRAC`` of the star's S/N centred in it, nothing masked,
   flagged or belonging to another source (segments grown by ``NEIGHBOUR_GROW``
   pixels) in the core (``CORE_RADIUS_FWHM`` FWHMs), and at most ``MAX_BAD_FRAC`` of
   the disc lost to those; lost pixels are left out of the fit (a deblended star is
   accepted on these terms);
4. the ``max_stars`` of highest S/N are fitted.

Fit (:func:`fit_moffat`, ``scipy.optimize.least_squares``, analytic sparse
Jacobian): residuals ``(model - data) / sigma``, ``sigma`` the pixel noise from the
inverse variance. A first fit measures how far the stars depart from a Moffat beyond
the noise; that common fractional error (:func:`error_floor`; 0 for true Moffat
stars, ~10 % on real coadds) is added in quadrature to the noise, so the bright cores
do not set beta alone and a star's reduced chi^2 no longer grows with its S/N; stars
whose chi^2 is then an outlier (compact galaxies, blends, unflagged defects) are
dropped and the fit is repeated. With the band's FWHM known (the image header,
``tile.zarr`` attribute ``psf_fwhm``) the FWHM is held at that value, so beta is the
only shape parameter and the pair (FWHM, beta) the models receive is one consistent
Moffat; a free fit of both is always made too and reported (``fwhm_fit``,
``beta_fit``) for quality assessment. Fewer than ``min_stars`` usable stars, a
failed fit, or a free-fit FWHM more than ``FWHM_DISAGREE`` from the header's (the
sources are not the PSF: e.g. a band whose bright stars are all saturated, where the
locus falls on compact galaxies) give the configured default beta
(``source = "default"``).
The result is deterministic (no random numbers, a fixed star order).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bits import bit

__all__ = [
    "PSFEstimate",
    "MoffatFit",
    "StarSelection",
    "BETA_RANGE",
    "moffat_alpha",
    "moffat_r50",
    "select_stars",
    "fit_moffat",
    "estimate_psf",
]

log = logging.getLogger(__name__)

#: Reported beta is clipped to this range (dimensionless).
BETA_RANGE: tuple[float, float] = (1.2, 8.0)
#: Bounds of beta inside the fit (wider than BETA_RANGE so the clip is visible).
_FIT_BETA = (1.05, 20.0)
#: Default minimum per-band AUTO S/N of a PSF star.
MIN_SNR = 20.0
#: Half-width of the stellar locus in natural log of the half-light radius (~ +-6 %).
LOCUS_TOL = 0.06
#: Half-width in log r50 of the window that finds the locus (its mode).
LOCUS_PEAK_TOL = 0.03
#: Smallest stellar half-light radius: in FWHMs when the FWHM is known (a Gaussian,
#: the beta -> inf Moffat, has 0.5; noise scatters a little below), else in pixels.
_R50_MIN_FWHM = 0.47
_R50_MIN_PIX = 0.8
#: Radius of the fitted disc, in FWHMs.
FIT_RADIUS_FWHM = 3.5
#: Radius of the core that must be clean, in FWHMs.
CORE_RADIUS_FWHM = 1.5
#: Other sources' segments are grown by this many pixels before masking.
NEIGHBOUR_GROW = 2
#: A star is dropped when a source with more than this fraction of its S/N has its
#: centre inside the fit disc.
NEIGHBOUR_SNR_FRAC = 0.2
#: A star is dropped when more than this fraction of its fit disc is lost.
MAX_BAD_FRAC = 0.3
#: Relative difference of the free-fit and header FWHMs above which the star sample is
#: rejected (default beta): compact galaxies or blends, not the header's PSF.
FWHM_DISAGREE = 0.15
#: Bits that disqualify a star anywhere in its fit disc.
FATAL_BITS = bit("saturated") | bit("bleed") | bit("nodata")
#: Aperture radius (pixels) of the half-light radii when no FWHM is known.
_RMAX_UNKNOWN = 15.0


@dataclass(frozen=True)
class PSFEstimate:
    """The Moffat PSF of one band of one tile.

    Attributes
    ----------
    fwhm_arcsec : float
        FWHM [arcsec] that goes with ``beta``: the header value when known (the fit
        held it fixed), else the free fit's; NaN when neither exists.
    beta : float
        Moffat beta (dimensionless), clipped to :data:`BETA_RANGE`; the default
        when ``source == "default"``.
    n_stars : int
        Stars used by the final fit (``"default"``: usable stars found, fewer than
        the minimum, or 0 after a failed fit).
    source : str
        ``"stars"`` (measured) or ``"default"`` (configured default beta).
    fwhm_fit_arcsec : float
        FWHM [arcsec] of the free fit (FWHM and beta both free); NaN if not measured.
    beta_fit : float
        Beta of the free fit (dimensionless, clipped); NaN if not measured.
    """

    fwhm_arcsec: float
    beta: float
    n_stars: int
    source: str
    fwhm_fit_arcsec: float = math.nan
    beta_fit: float = math.nan

    def as_attrs(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None) for the cutouts store attributes.

        Keys ``fwhm`` [arcsec], ``beta``, ``n_stars``, ``source``, ``fwhm_fit``
        [arcsec], ``beta_fit``; floats rounded to 6 significant digits.
        """
        def num(v: float) -> float | None:
            return None if not np.isfinite(v) else float(f"{v:.6g}")

        return {"fwhm": num(self.fwhm_arcsec), "beta": num(self.beta),
                "n_stars": int(self.n_stars), "source": self.source,
                "fwhm_fit": num(self.fwhm_fit_arcsec), "beta_fit": num(self.beta_fit)}


@dataclass(frozen=True)
class MoffatFit:
    """Result of :func:`fit_moffat`.

    Attributes
    ----------
    fwhm : float
        FWHM [pixels] (the fixed value when it was held).
    beta : float
        Moffat beta (unclipped, within the fit bounds).
    x, y, amplitude : ndarray of float64, shape (n,)
        Per-star centre [pixels, 0-based] and peak value [image units].
    chi2_red : ndarray of float64, shape (n,)
        Per-star reduced chi^2 of the fit (with its error floor).
    mismatch : ndarray of float64, shape (n,)
        Per-star squared fractional model error: (sum (data - model)^2 - sum sigma^2)
        / sum model^2 (about 0, or negative, when the residuals are noise).
    excess : ndarray of float64, shape (n,)
        Per-star significance of the residuals beyond the pixel noise,
        (sum (data - model)^2 / sum sigma^2 - 1) sqrt(npix / 2).
    success : bool
        The optimiser converged.
    """

    fwhm: float
    beta: float
    x: np.ndarray
    y: np.ndarray
    amplitude: np.ndarray
    chi2_red: np.ndarray
    mismatch: np.ndarray
    excess: np.ndarray
    success: bool


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Moffat core radius alpha (units of ``fwhm``) for a FWHM and beta > 0."""
    return float(fwhm) / (2.0 * math.sqrt(2.0 ** (1.0 / float(beta)) - 1.0))


def moffat_r50(fwhm: float, beta: float) -> float:
    """Half-light radius (units of ``fwhm``) of an untruncated Moffat, beta > 1."""
    return moffat_alpha(fwhm, beta) * math.sqrt(2.0 ** (1.0 / (float(beta) - 1.0)) - 1.0)


def _disc(radius: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Offsets (dy, dx) of the pixels within ``radius`` of a pixel centre, and the half-size."""
    r = int(math.ceil(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = dy**2 + dx**2 <= radius**2
    return dy[keep], dx[keep], r


def _grow(mask: np.ndarray, n: int) -> np.ndarray:
    if n <= 0 or not mask.any():
        return mask
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=n)


def _stellar_locus(r50: np.ndarray, snr: np.ndarray, tol: float = LOCUS_PEAK_TOL) -> float:
    """Half-light radius of the stellar locus [pixels].

    The S/N-weighted mode of ``log r50``: each source counts ``clip(snr / 30, 1, 10)``
    (bright sources are mostly stars, and their radii are precise), the density at a
    source is the weighted count within ``tol`` of it; the smallest radius wins ties.
    The result is the weighted mean of ``log r50`` within ``tol`` of the densest point.
    """
    order = np.argsort(r50, kind="stable")
    lr = np.log(np.asarray(r50, np.float64)[order])
    w = np.clip(np.asarray(snr, np.float64)[order] / 30.0, 1.0, 10.0)
    cum = np.concatenate([[0.0], np.cumsum(w)])
    lo = np.searchsorted(lr, lr - tol, side="left")
    hi = np.searchsorted(lr, lr + tol, side="right")
    dens = cum[hi] - cum[lo]
    i = int(np.flatnonzero(dens >= dens.max() * (1.0 - 1e-9))[0])  # smallest radius
    sl = slice(lo[i], hi[i])
    return float(np.exp(np.average(lr[sl], weights=w[sl])))


@dataclass(frozen=True)
class StarSelection:
    """Result of :func:`select_stars`.

    Attributes
    ----------
    index : ndarray of int64, shape (n,)
        Indices into the candidate arrays, highest S/N first.
    fwhm_guess : float
        FWHM [pixels] used to size the fit disc (header value or from the locus).
    radius : float
        Fit disc radius [pixels].
    r50_locus : float
        Half-light radius of the stellar locus [pixels] (NaN if no candidates).
    """

    index: np.ndarray
    fwhm_guess: float
    radius: float
    r50_locus: float


def select_stars(
    image: np.ndarray,
    bad: np.ndarray,
    bits: np.ndarray,
    segmap: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    snr: np.ndarray,
    exclude: np.ndarray | None = None,
    *,
    fwhm_pix: float | None = None,
    min_snr: float = MIN_SNR,
    max_stars: int = 30,
) -> StarSelection:
    """Choose isolated, unsaturated, compact, bright sources to fit the PSF on.

    Parameters
    ----------
    image : ndarray of float32, shape (ny, nx)
        Background-subtracted flux of the band.
    bad : ndarray of bool, shape (ny, nx)
        Pixels not to use (masked or flagged in this band).
    bits : ndarray of uint16, shape (ny, nx)
        The band's defect / data-quality bits (:mod:`tilecat.bits`).
    segmap : ndarray of int32, shape (ny, nx)
        Segmentation map, source ``k`` (index ``k - 1``) has value ``k``.
    x, y : ndarray of float64, shape (n,)
        Source centres [pixels, 0-based].
    snr : ndarray, shape (n,)
        The band's S/N of each source.
    exclude : ndarray of bool, shape (n,), optional
        Sources not to use (e.g. truncated by the tile edge).
    fwhm_pix : float, optional
        Known FWHM [pixels] (header); else guessed from the stellar locus.
    min_snr : float
        Minimum S/N.
    max_stars : int
        At most this many stars, highest S/N first.

    Returns
    -------
    StarSelection
    """
    import sep

    from .background import as_sep_array

    ny, nx = image.shape
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    snr = np.nan_to_num(np.asarray(snr, np.float64), nan=0.0)
    keep = (snr >= min_snr) & np.isfinite(x) & np.isfinite(y)
    if exclude is not None:
        keep &= ~np.asarray(exclude, bool)
    cand = np.flatnonzero(keep)
    known = fwhm_pix is not None and np.isfinite(fwhm_pix) and fwhm_pix > 0
    if cand.size == 0:
        f = float(fwhm_pix) if known else math.nan
        return StarSelection(np.zeros(0, np.int64), f, FIT_RADIUS_FWHM * f, math.nan)

    rmax = 3.0 * float(fwhm_pix) if known else _RMAX_UNKNOWN
    data = as_sep_array(image)
    r50, _ = sep.flux_radius(
        data, x[cand], y[cand], np.full(cand.size, rmax), 0.5,
        mask=as_sep_array(bad, np.uint8), segmap=as_sep_array(segmap, np.int32),
        seg_id=(cand + 1).astype(np.int32), subpix=5)
    ok = np.isfinite(r50) & (r50 >= _R50_MIN_PIX)
    if known:
        ok &= (r50 >= _R50_MIN_FWHM * fwhm_pix) & (r50 <= 1.5 * fwhm_pix)
    locus = _stellar_locus(r50[ok], snr[cand][ok]) if ok.any() else math.nan
    if not np.isfinite(locus):
        f = float(fwhm_pix) if known else math.nan
        return StarSelection(np.zeros(0, np.int64), f, FIT_RADIUS_FWHM * f, math.nan)
    on = ok & (np.abs(np.log(np.where(ok, r50, 1.0)) - math.log(locus)) <= LOCUS_TOL)
    cand = cand[on]
    # a Moffat of beta ~ 3.5 has r50 = 0.62 FWHM
    fwhm = float(fwhm_pix) if known else locus / 0.62
    radius = float(np.clip(FIT_RADIUS_FWHM * fwhm, 5.0, 30.0))
    core = CORE_RADIUS_FWHM * fwhm
    dy, dx, h = _disc(radius)
    in_core = dy**2 + dx**2 <= core**2
    order = cand[np.argsort(-snr[cand], kind="stable")]
    chosen: list[int] = []
    for i in order:
        cx, cy = int(np.floor(x[i] + 0.5)), int(np.floor(y[i] + 0.5))
        if cy - h < 0 or cx - h < 0 or cy + h >= ny or cx + h >= nx:
            continue
        near = np.hypot(x - x[i], y - y[i]) < radius
        near[i] = False
        if (snr[near] > NEIGHBOUR_SNR_FRAC * snr[i]).any():
            continue
        sl = (slice(cy - h, cy + h + 1), slice(cx - h, cx + h + 1))
        yy, xx = dy + h, dx + h
        if (bits[sl][yy, xx] & FATAL_BITS).any():
            continue
        seg = segmap[sl]
        others = _grow((seg != 0) & (seg != i + 1), NEIGHBOUR_GROW)
        lost = (bad[sl] | others)[yy, xx]
        if lost[in_core].any() or lost.mean() > MAX_BAD_FRAC:
            continue
        chosen.append(int(i))
        if len(chosen) >= max_stars:
            break
    return StarSelection(np.asarray(chosen, np.int64), fwhm, radius, locus)


def _pack(image: np.ndarray, sigma: np.ndarray, use: np.ndarray, x: np.ndarray,
          y: np.ndarray, radius: float, segmap: np.ndarray | None,
          seg_id: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Pixels of every star's disc: (star index, x, y, data, sigma), usable ones only.

    With ``segmap`` and ``seg_id``, other sources' segments (grown by
    :data:`NEIGHBOUR_GROW` pixels) are left out of each star's disc.
    """
    ny, nx = image.shape
    dy, dx, h = _disc(radius)
    sid, px, py = [], [], []
    for k in range(len(x)):
        cx, cy = int(np.floor(x[k] + 0.5)), int(np.floor(y[k] + 0.5))
        xx, yy = cx + dx, cy + dy
        inside = (xx >= 0) & (xx < nx) & (yy >= 0) & (yy < ny)
        xx, yy = xx[inside], yy[inside]
        good = use[yy, xx] & np.isfinite(image[yy, xx]) & (sigma[yy, xx] > 0) \
            & np.isfinite(sigma[yy, xx])
        if segmap is not None and seg_id is not None:
            ys0, xs0 = max(cy - h - NEIGHBOUR_GROW, 0), max(cx - h - NEIGHBOUR_GROW, 0)
            seg = segmap[ys0:cy + h + NEIGHBOUR_GROW + 1, xs0:cx + h + NEIGHBOUR_GROW + 1]
            others = _grow((seg != 0) & (seg != seg_id[k]), NEIGHBOUR_GROW)
            good &= ~others[yy - ys0, xx - xs0]
        sid.append(np.full(int(good.sum()), k))
        px.append(xx[good])
        py.append(yy[good])
    s = np.concatenate(sid).astype(np.int64)
    xs = np.concatenate(px)
    ys = np.concatenate(py)
    return (s, xs.astype(np.float64), ys.astype(np.float64),
            image[ys, xs].astype(np.float64), sigma[ys, xs].astype(np.float64))


def fit_moffat(
    image: np.ndarray,
    sigma: np.ndarray,
    use: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    radius: float,
    fwhm0: float,
    beta0: float = 3.0,
    *,
    fwhm_fixed: float | None = None,
    floor: float = 0.0,
    start: MoffatFit | None = None,
    segmap: np.ndarray | None = None,
    seg_id: np.ndarray | None = None,
) -> MoffatFit:
    """Joint Moffat fit of several stars: shared shape, per-star centre and amplitude.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Background-subtracted flux.
    sigma : ndarray, shape (ny, nx)
        Per-pixel 1-sigma noise (flux units).
    use : ndarray of bool, shape (ny, nx)
        Pixels that may be fitted.
    x, y : ndarray, shape (n,)
        Initial star centres [pixels, 0-based]; each star's pixels are those within
        ``radius`` [pixels] of its rounded initial centre.
    radius : float
        Fit disc radius [pixels].
    fwhm0, beta0 : float
        Starting FWHM [pixels] and beta (ignored with ``start``).
    fwhm_fixed : float, optional
        Hold the FWHM at this value [pixels]; beta is then the only shape parameter.
    floor : float
        Fractional model error: the residual of a pixel is divided by
        ``sqrt(sigma**2 + (floor * model)**2)``, ``model`` that of ``start``.
    start : MoffatFit, optional
        A fit of the same stars: starting point and the model of the error floor.
    segmap : ndarray of int32, shape (ny, nx), optional
        Segmentation map; with ``seg_id``, other sources' segments (grown by
        :data:`NEIGHBOUR_GROW` pixels) are not fitted.
    seg_id : ndarray of int, shape (n,), optional
        Each star's own segment number.

    Returns
    -------
    MoffatFit
    """
    from scipy.optimize import least_squares
    from scipy.sparse import csr_matrix

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = len(x)
    sid, px, py, d, s = _pack(image, sigma, use, x, y, radius, segmap, seg_id)
    fixed = fwhm_fixed is not None
    nsh = 1 if fixed else 2
    # sparsity pattern of the Jacobian (CSR, column indices sorted within rows)
    col_index = np.column_stack([np.broadcast_to(np.arange(nsh), (d.size, nsh)),
                                 nsh + 3 * sid[:, None] + np.arange(3)[None, :]])
    indptr = np.arange(d.size + 1) * (nsh + 3)

    def shape_of(p: np.ndarray) -> tuple[float, float]:
        return (float(fwhm_fixed) if fixed else float(p[1])), float(p[0])

    def parts(p: np.ndarray) -> tuple[Any, ...]:
        fwhm, beta = shape_of(p)
        st = p[nsh:].reshape(n, 3)
        alpha = moffat_alpha(fwhm, beta)
        ddx, ddy = px - st[sid, 0], py - st[sid, 1]
        u = 1.0 + (ddx**2 + ddy**2) / alpha**2
        prof = u ** (-beta)
        return fwhm, beta, alpha, ddx, ddy, u, prof, st[sid, 2] * prof

    if start is not None:
        shape0 = [start.beta] + ([] if fixed else [start.fwhm])
        p0 = np.concatenate([shape0, np.column_stack([start.x, start.y,
                                                      start.amplitude]).ravel()])
        model0 = parts(p0)[-1]
    else:
        a0 = np.empty(n)
        near = (px - x[sid]) ** 2 + (py - y[sid]) ** 2 <= 2.0
        for k in range(n):  # brightest usable pixel near the centre
            v = d[(sid == k) & near]
            a0[k] = max(float(v.max()) if v.size else float(d[sid == k].max()), 1e-30)
        p0 = np.concatenate([[beta0] + ([] if fixed else [fwhm0]),
                             np.column_stack([x, y, a0]).ravel()])
        model0 = np.zeros_like(d)
    err = np.sqrt(s**2 + (floor * np.maximum(model0, 0.0)) ** 2)

    def fun(p: np.ndarray) -> np.ndarray:
        return (parts(p)[-1] - d) / err

    def jac(p: np.ndarray) -> Any:
        fwhm, beta, alpha, ddx, ddy, u, prof, m = parts(p)
        dm_dalpha = 2.0 * beta * m * (ddx**2 + ddy**2) / (alpha**3 * u)
        s2 = 2.0 ** (1.0 / beta)
        dalpha_dbeta = alpha * s2 * math.log(2.0) / (2.0 * (s2 - 1.0) * beta**2)
        cols = [-m * np.log(u) + dm_dalpha * dalpha_dbeta]
        if not fixed:
            cols.append(dm_dalpha * alpha / fwhm)
        cols += [2.0 * beta * m * ddx / (alpha**2 * u), 2.0 * beta * m * ddy / (alpha**2 * u),
                 prof]
        vals = np.column_stack(cols) / err[:, None]
        # each row: the shared columns, then its own star's (x, y, amplitude)
        return csr_matrix((vals.ravel(), col_index.ravel(), indptr), shape=(d.size, p.size))

    lo = [_FIT_BETA[0]] + ([] if fixed else [0.3 * fwhm0])
    hi = [_FIT_BETA[1]] + ([] if fixed else [4.0 * fwhm0])
    for k in range(n):
        lo += [x[k] - 2.0, y[k] - 2.0, 0.0]
        hi += [x[k] + 2.0, y[k] + 2.0, np.inf]
    p0 = np.clip(p0, np.asarray(lo) + 1e-9, np.asarray(hi) - 1e-9)
    res = least_squares(fun, p0, jac=jac, bounds=(lo, hi), method="trf", tr_solver="lsmr",
                        x_scale="jac", xtol=1e-6, ftol=1e-6, max_nfev=200)
    fwhm, beta = shape_of(res.x)
    st = res.x[nsh:].reshape(n, 3)
    m = parts(res.x)[-1]
    npix = np.bincount(sid, minlength=n)
    rr = np.bincount(sid, weights=(d - m) ** 2, minlength=n)
    chi2 = np.bincount(sid, weights=res.fun**2, minlength=n) / np.maximum(npix - 3, 1)
    mismatch = (rr - np.bincount(sid, weights=s**2, minlength=n)) \
        / np.maximum(np.bincount(sid, weights=m**2, minlength=n), 1e-300)
    excess = (rr / np.bincount(sid, weights=s**2, minlength=n) - 1.0) \
        * np.sqrt(np.maximum(npix, 1) / 2.0)
    return MoffatFit(fwhm=fwhm, beta=beta, x=st[:, 0].copy(), y=st[:, 1].copy(),
                     amplitude=st[:, 2].copy(), chi2_red=chi2, mismatch=mismatch,
                     excess=excess, success=bool(res.success))


def error_floor(fit: MoffatFit, min_excess: float = 5.0) -> float:
    """Fractional PSF model error common to the stars of ``fit`` (0 for a perfect model).

    The median of the per-star ``mismatch`` (residual variance beyond the noise over
    the model's sum of squares) among the stars whose residuals exceed the noise
    significantly (``excess > min_excess``); 0 when none does. Clipped to [0, 0.3].
    """
    sig = fit.excess > min_excess
    if not sig.any():
        return 0.0
    return float(np.clip(math.sqrt(max(float(np.median(fit.mismatch[sig])), 0.0)), 0.0, 0.3))


def _chi2_outliers(chi2: np.ndarray) -> np.ndarray:
    """True for stars whose reduced chi^2 is far above the others' (median + 5 MAD)."""
    med = float(np.median(chi2))
    mad = max(1.4826 * float(np.median(np.abs(chi2 - med))), 0.1 * med, 0.05)
    return chi2 > med + 5.0 * mad


def estimate_psf(
    image: np.ndarray,
    sigma: np.ndarray,
    bad: np.ndarray,
    bits: np.ndarray,
    segmap: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    snr: np.ndarray,
    pixel_scale: float,
    *,
    exclude: np.ndarray | None = None,
    fwhm_arcsec: float | None = None,
    beta_default: float = 3.0,
    min_stars: int = 5,
    max_stars: int = 30,
    min_snr: float = MIN_SNR,
) -> PSFEstimate:
    """Measure the Moffat PSF of one band from the sources detected on it.

    Parameters
    ----------
    image : ndarray of float32, shape (ny, nx)
        Background-subtracted flux of the band.
    sigma : ndarray of float32, shape (ny, nx)
        Per-pixel 1-sigma noise, flux units.
    bad : ndarray of bool, shape (ny, nx)
        Pixels that are masked or unusable in this band.
    bits : ndarray of uint16, shape (ny, nx)
        The band's defect / data-quality bits; any set bit keeps a pixel out of the
        fit, ``saturated``/``bleed``/``nodata`` disqualify the star.
    segmap : ndarray of int32, shape (ny, nx)
        Segmentation map (source index ``k - 1`` has value ``k``).
    x, y : ndarray of float64, shape (n,)
        Source centres [pixels, 0-based].
    snr : ndarray, shape (n,)
        The band's S/N of each source (e.g. AUTO flux / error).
    pixel_scale : float
        arcsec / pixel.
    exclude : ndarray of bool, shape (n,), optional
        Sources not to use (e.g. truncated by the tile edge).
    fwhm_arcsec : float, optional
        The band's FWHM from the image header [arcsec]; when given the FWHM is held
        at it for ``beta`` (and the free fit reported separately).
    beta_default : float
        Beta reported when the PSF cannot be measured.
    min_stars : int
        Fewest stars for a measurement.
    max_stars : int
        Most stars fitted (the highest S/N), bounding the run time.
    min_snr : float
        Minimum S/N of a PSF star.

    Returns
    -------
    PSFEstimate
    """
    known = fwhm_arcsec is not None and np.isfinite(fwhm_arcsec) and fwhm_arcsec > 0
    hdr_pix = float(fwhm_arcsec) / pixel_scale if known else None
    header = float(fwhm_arcsec) if known else math.nan

    def default(n: int) -> PSFEstimate:
        return PSFEstimate(fwhm_arcsec=header, beta=float(beta_default), n_stars=int(n),
                           source="default")

    if len(x) == 0:
        return default(0)
    sel = select_stars(image, bad, bits, segmap, x, y, snr, exclude, fwhm_pix=hdr_pix,
                       min_snr=min_snr, max_stars=max_stars)
    idx = sel.index
    if idx.size < min_stars:
        return default(idx.size)
    use = ~np.asarray(bad, bool) & (np.asarray(bits) == 0)
    xs, ys = np.asarray(x, np.float64)[idx], np.asarray(y, np.float64)[idx]
    ids = idx + 1
    f0 = sel.fwhm_guess
    common: dict[str, Any] = {"fwhm_fixed": hdr_pix, "segmap": segmap}
    try:
        first = fit_moffat(image, sigma, use, xs, ys, sel.radius, f0, seg_id=ids, **common)
        floor = error_floor(first)
        fit = first if floor == 0.0 else fit_moffat(
            image, sigma, use, xs, ys, sel.radius, f0, floor=floor, start=first, seg_id=ids,
            **common)
        # with the common model error in the noise, a star's chi^2 does not grow with
        # its S/N; a compact galaxy's, a blend's or an unflagged defect's does
        keep = ~_chi2_outliers(fit.chi2_red)
        if keep.sum() < min_stars:
            return default(int(keep.sum()))
        if not keep.all():
            xs, ys, ids = xs[keep], ys[keep], ids[keep]
            fit = fit_moffat(image, sigma, use, xs, ys, sel.radius, f0, floor=floor,
                             start=_subset(fit, keep), seg_id=ids, **common)
        free = fit if not known else fit_moffat(
            image, sigma, use, xs, ys, sel.radius, f0, fwhm_fixed=None, floor=floor,
            start=fit, seg_id=ids, segmap=segmap)
    except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
        log.warning("PSF fit failed (%s); default beta", exc)
        return default(0)
    if not all(np.isfinite(v) for v in (fit.beta, free.beta, free.fwhm)):
        return default(0)
    if known and abs(free.fwhm / hdr_pix - 1.0) > FWHM_DISAGREE:
        # the sources fitted are not the header's PSF (e.g. compact galaxies when the
        # band's bright stars are saturated): their beta would absorb the difference
        log.warning("PSF: free-fit FWHM %.3g arcsec of %d sources differs from the header's "
                    "%.3g arcsec by more than %d %%: not a clean star sample; default beta",
                    free.fwhm * pixel_scale, int(keep.sum()), header,
                    round(100 * FWHM_DISAGREE))
        return default(int(keep.sum()))
    lo, hi = BETA_RANGE
    return PSFEstimate(
        fwhm_arcsec=header if known else free.fwhm * pixel_scale,
        beta=float(np.clip(fit.beta, lo, hi)),
        n_stars=int(keep.sum()),
        source="stars",
        fwhm_fit_arcsec=free.fwhm * pixel_scale,
        beta_fit=float(np.clip(free.beta, lo, hi)),
    )


def _subset(fit: MoffatFit, keep: np.ndarray) -> MoffatFit:
    """The fit restricted to the stars ``keep`` (bool mask)."""
    return MoffatFit(fwhm=fit.fwhm, beta=fit.beta, x=fit.x[keep], y=fit.y[keep],
                     amplitude=fit.amplitude[keep], chi2_red=fit.chi2_red[keep],
                     mismatch=fit.mismatch[keep], excess=fit.excess[keep],
                     success=fit.success)
