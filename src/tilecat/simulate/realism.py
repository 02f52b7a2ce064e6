"""Realism figures: compare a simulated tile with a real survey image.

Three comparisons, each computed the same way on every image:

* background noise: the pull ``image * sqrt(invvar)`` in source-free pixels (width
  from the 1.4826 MAD and the plain standard deviation, excess kurtosis), the robust
  noise sigma, and the noise correlation ratio ``std(4x4 block sums) / (4 sigma)``
  (1 for white noise, > 1 for resampled coadds). Without an inverse-variance map the
  pull uses the robust sigma of the source-free pixels;
* source counts: sep detections (matched filter, 3 sigma, 5 pixels) per deg^2 per
  magnitude bin (Kron fluxes, AB);
* sizes: sep ``flux_radius`` (half-light radius, arcsec) distribution quantiles.

sep (SExtractor's algorithms as a library) does the detection and photometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.ndimage as ndi
import scipy.stats

from ..normalize import robust_sigma

__all__ = [
    "ImageStats",
    "measure_image",
    "noise_stats",
    "source_table",
    "count_density",
    "stellar_r50",
    "comparison_table",
    "MAG_BINS",
    "moffat_fwhm_from_r50",
    "depth_from_sigma",
    "matched_sim_config",
]

#: Magnitude bin edges of the source counts (AB).
MAG_BINS: np.ndarray = np.arange(16.0, 27.0, 1.0)


@dataclass
class ImageStats:
    """Realism figures of one image.

    Attributes
    ----------
    name : str
        Label of the image.
    pixscale : float
        arcsec/pixel.
    area_deg2 : float
        Area of the valid pixels, deg^2.
    noise : dict
        Keys ``sigma`` (robust noise, flux units), ``pull_width`` (1.4826 MAD of the
        pull), ``pull_std`` (standard deviation of the pulls with |pull| < 8),
        ``kurtosis`` (excess, |pull| < 8), ``corr_ratio`` (4x4 block-sum noise over
        4 sigma), ``filtered_pull_width`` (robust width of the pulls filtered with
        sep's 3x3 detection kernel, over its white-noise value), ``err_scale`` (factor
        applied to the weight-map sigma for detection), ``n_pix`` (source-free pixels).
    counts : ndarray, shape (len(MAG_BINS) - 1,)
        Detections per deg^2 per magnitude.
    r50_q : dict
        Quantiles 10, 25, 50, 75, 90 % of flux_radius (arcsec) of detections with
        S/N > 10, plus ``stellar`` (the stellar-locus r50, arcsec).
    n_sources : int
        Number of detections.
    """

    name: str
    pixscale: float
    area_deg2: float
    noise: dict[str, float]
    counts: np.ndarray
    r50_q: dict[str, float]
    n_sources: int
    extra: dict[str, Any] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "pixscale": round(self.pixscale, 4),
            "area_deg2": round(self.area_deg2, 6),
            "n_sources": self.n_sources,
            **{k: round(float(v), 4) for k, v in self.noise.items()},
            "counts_per_deg2_mag": {f"{lo:.0f}-{lo + 1:.0f}": round(float(c), 1)
                                    for lo, c in zip(MAG_BINS[:-1], self.counts)},
            "r50_arcsec": {k: round(float(v), 3) for k, v in self.r50_q.items()},
        }


def _native(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def _detect(image: np.ndarray, err: np.ndarray, mask: np.ndarray, thresh: float = 3.0,
            minarea: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """sep detection; returns (objects, segmentation map)."""
    import sep

    sep.set_extract_pixstack(max(int(image.size), 300000))
    sep.set_sub_object_limit(4096)
    objs, seg = sep.extract(image, thresh, err=err, mask=mask, minarea=minarea,
                            segmentation_map=True, deblend_cont=0.005)
    return objs, seg


def noise_stats(image: np.ndarray, sigma_map: np.ndarray, source_free: np.ndarray
                ) -> dict[str, float]:
    """Background noise figures from source-free pixels.

    Parameters
    ----------
    image : ndarray (ny, nx)
        Background-subtracted image, flux units.
    sigma_map : ndarray (ny, nx)
        Expected noise per pixel (from invvar, or a constant robust sigma).
    source_free : ndarray of bool (ny, nx)
        Pixels used.

    Returns
    -------
    dict
        sigma, pull_width, pull_std, kurtosis, corr_ratio, n_pix.
    """
    pull = image[source_free] / sigma_map[source_free]
    core = pull[np.abs(pull) < 8]
    sig = robust_sigma(image[source_free])
    # noise correlation: sums over 4x4 blocks that are entirely source-free
    ny, nx = image.shape
    b = 4
    by, bx = ny // b, nx // b
    blk = image[: by * b, : bx * b].reshape(by, b, bx, b)
    free = source_free[: by * b, : bx * b].reshape(by, b, bx, b).all(axis=(1, 3))
    sums = blk.sum(axis=(1, 3))[free]
    corr = robust_sigma(sums) / (b * sig) if sums.size > 50 else float("nan")
    # noise of the detection-filtered image (sep's default 3x3 kernel) w.r.t. the
    # white-noise expectation: the scale that makes a matched-filter threshold honest
    k = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])
    k /= k.sum()
    filt = ndi.convolve(np.where(source_free, image / sigma_map, 0.0), k, mode="constant")
    free3 = ndi.binary_erosion(source_free, np.ones((3, 3), bool))
    fvals = filt[free3]
    filt_ratio = (robust_sigma(fvals) / math.sqrt(float(np.sum(k**2)))
                  if fvals.size > 100 else float("nan"))
    return {
        "sigma": float(sig),
        "filtered_pull_width": float(filt_ratio),
        "pull_width": float(robust_sigma(pull)),
        "pull_std": float(np.std(core)),
        "kurtosis": float(scipy.stats.kurtosis(core)),
        "corr_ratio": float(corr),
        "n_pix": float(pull.size),
    }


def source_table(image: np.ndarray, err: np.ndarray, mask: np.ndarray, pixscale: float,
                 zeropoint: float = 22.5) -> dict[str, np.ndarray]:
    """Detect sources and measure Kron magnitude, S/N and half-light radius.

    Returns
    -------
    dict of arrays
        ``mag`` (AB), ``snr``, ``r50`` (arcsec), ``flag`` plus the segmentation map
        under ``seg``.
    """
    import sep

    objs, seg = _detect(image, err, mask)
    x, y, a, b, th = objs["x"], objs["y"], objs["a"], objs["b"], objs["theta"]
    a = np.maximum(a, 0.5)
    b = np.maximum(b, 0.5)
    th = np.clip(th, -np.pi / 2 + 1e-6, np.pi / 2 - 1e-6)
    kr, kflag = sep.kron_radius(image, x, y, a, b, th, 6.0, mask=mask)
    kr = np.where(np.isfinite(kr) & (kr > 0), kr, 1.0)
    r_ap = np.maximum(2.5 * kr, 3.5 / np.sqrt(a * b))  # at least 3.5 px radius
    flux, ferr, fflag = sep.sum_ellipse(image, x, y, a, b, th, r_ap, err=err, mask=mask,
                                        subpix=1)
    r50, rflag = sep.flux_radius(image, x, y, 6.0 * a, 0.5, normflux=flux, subpix=5,
                                 mask=mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, zeropoint - 2.5 * np.log10(flux), np.nan)
        snr = np.where(ferr > 0, flux / ferr, 0.0)
    return {"mag": mag, "snr": snr, "r50": r50 * pixscale, "flag": fflag | rflag | kflag,
            "seg": seg}


def count_density(mag: np.ndarray, area_deg2: float, bins: np.ndarray = MAG_BINS
                  ) -> np.ndarray:
    """Number counts per deg^2 per magnitude in ``bins``."""
    h, _ = np.histogram(mag[np.isfinite(mag)], bins=bins)
    return h / area_deg2 / np.diff(bins)


def stellar_r50(r50: np.ndarray, snr: np.ndarray) -> float:
    """Half-light radius of the stellar locus (arcsec): mode of r50 at S/N > 30.

    The mode of the small-radius end of the high-S/N distribution, found as the
    peak of a histogram of the smallest 40 % of r50 values.
    """
    v = np.sort(r50[(snr > 30) & np.isfinite(r50) & (r50 > 0)])
    if v.size < 5:
        return float("nan")
    v = v[: max(int(0.4 * v.size), 5)]
    h, e = np.histogram(v, bins=max(v.size // 5, 5))
    k = int(np.argmax(h))
    return float(0.5 * (e[k] + e[k + 1]))


def measure_image(name: str, image: np.ndarray, pixscale: float,
                  invvar: np.ndarray | None = None, valid: np.ndarray | None = None,
                  zeropoint: float = 22.5, subtract_background: bool = True,
                  calibrate: bool = True) -> ImageStats:
    """All realism figures of one image.

    Parameters
    ----------
    name : str
        Label.
    image : ndarray (ny, nx)
        Flux per pixel (nanomaggies for zeropoint 22.5).
    pixscale : float
        arcsec/pixel.
    invvar : ndarray (ny, nx), optional
        Inverse variance; without it the noise is the robust sigma of the sky.
    valid : ndarray of bool (ny, nx), optional
        Pixels with data (default: invvar > 0 and finite image).
    zeropoint : float
        AB zeropoint of the flux unit.
    subtract_background : bool
        Subtract a sep background (64-px mesh) first.
    calibrate : bool
        When the noise of the detection-filtered sky differs from what the weight map
        predicts for white noise (``noise['filtered_pull_width']`` != 1: e.g. the
        correlated noise of a resampled coadd), detect again with the weight-map sigma
        scaled by that factor, so that every image's counts are made at the same
        significance w.r.t. its actual noise (``noise['err_scale']`` records it).
    """
    import sep

    img = _native(image)
    ok = np.isfinite(img)
    if invvar is not None:
        iv = _native(invvar)
        ok &= np.isfinite(iv) & (iv > 0)
    if valid is not None:
        ok &= valid
    img[~ok] = 0.0
    mask = ~ok
    if subtract_background:
        bkg = sep.Background(img, mask=mask, bw=64, bh=64, fw=3, fh=3)
        img = img - bkg.back()
        img[mask] = 0.0
    if invvar is not None:
        with np.errstate(divide="ignore"):
            err = np.where(ok, 1.0 / np.sqrt(np.where(ok, iv, 1.0)), 0.0)
    else:
        err = np.full(img.shape, robust_sigma(img[ok]))
    fill = float(np.median(err[ok]))
    err_det = np.where(ok, err, fill)
    src = source_table(img, err_det, mask, pixscale, zeropoint)
    seg = src.pop("seg")
    free = ok & ~ndi.binary_dilation(seg > 0, iterations=4)
    free &= ~ndi.binary_dilation(mask, iterations=2)
    if invvar is None:  # robust sigma of the sky itself
        err_det = np.full(img.shape, robust_sigma(img[free]))
    noise = noise_stats(img, err_det, free)
    scale_err = noise["filtered_pull_width"] if calibrate else 1.0
    if not np.isfinite(scale_err):
        scale_err = 1.0
    if abs(scale_err - 1.0) > 0.02:
        # detect at the same significance w.r.t. the actual noise of the filtered image
        src = source_table(img, err_det * scale_err, mask, pixscale, zeropoint)
        src.pop("seg")
    noise["err_scale"] = float(scale_err)
    area = ok.sum() * (pixscale / 3600.0) ** 2
    good = src["snr"] > 10
    r = src["r50"][good & np.isfinite(src["r50"]) & (src["r50"] > 0)]
    q = np.percentile(r, [10, 25, 50, 75, 90]) if r.size else [math.nan] * 5
    r50_q = dict(zip(("q10", "q25", "q50", "q75", "q90"), (float(v) for v in q)))
    r50_q["stellar"] = stellar_r50(src["r50"], src["snr"])
    return ImageStats(name=name, pixscale=pixscale, area_deg2=float(area), noise=noise,
                      counts=count_density(src["mag"], area), r50_q=r50_q,
                      n_sources=int(src["mag"].size),
                      extra={"mag": src["mag"], "snr": src["snr"], "r50": src["r50"]})


def comparison_table(stats: list[ImageStats]) -> str:
    """Side-by-side text table of several images' figures."""
    w = 14
    head = f"{'':26s}" + "".join(f"{s.name[:w]:>{w}s}" for s in stats)
    rows = [head, "-" * len(head)]

    def row(label: str, vals: list[float], fmt: str) -> None:
        rows.append(f"{label:26s}" + "".join(
            f"{format(v, fmt) if np.isfinite(v) else 'nan':>{w}s}" for v in vals))

    row("pixel scale [arcsec]", [s.pixscale for s in stats], ".3f")
    row("area [deg2]", [s.area_deg2 for s in stats], ".5f")
    row("noise sigma [nmgy]", [s.noise["sigma"] for s in stats], ".5f")
    row("pull width (MAD)", [s.noise["pull_width"] for s in stats], ".3f")
    row("pull std (|p|<8)", [s.noise["pull_std"] for s in stats], ".3f")
    row("pull excess kurtosis", [s.noise["kurtosis"] for s in stats], ".3f")
    row("noise corr. ratio 4x4", [s.noise["corr_ratio"] for s in stats], ".3f")
    row("filtered pull width", [s.noise["filtered_pull_width"] for s in stats], ".3f")
    row("detection sigma scale", [s.noise["err_scale"] for s in stats], ".3f")
    row("detections", [s.n_sources for s in stats], ".0f")
    rows.append("counts [deg^-2 mag^-1]")
    for i, lo in enumerate(MAG_BINS[:-1]):
        row(f"  {lo:.0f} < mag < {lo + 1:.0f}", [s.counts[i] for s in stats], ".0f")
    rows.append("flux_radius r50 [arcsec] (S/N > 10)")
    for k in ("q10", "q25", "q50", "q75", "q90", "stellar"):
        row(f"  {k}", [s.r50_q[k] for s in stats], ".3f")
    return "\n".join(rows)


def moffat_fwhm_from_r50(r50: float, beta: float = 3.0) -> float:
    """FWHM (same unit as ``r50``) of the Moffat whose half-light radius is ``r50``."""
    import galsim

    return float(r50 / galsim.Moffat(beta=beta, fwhm=1.0).half_light_radius)


def depth_from_sigma(sigma: float, fwhm: float, beta: float, pixscale: float) -> float:
    """5-sigma point-source AB depth of white noise ``sigma`` (nanomaggy/pixel).

    Inverse of the relation in :mod:`tilecat.simulate.conditions`:
    ``sigma = F5 / (5 sqrt(NEA))`` with NEA the Moffat noise-equivalent area in pixels.
    """
    from .conditions import moffat_nea_arcsec2

    nea_pix = moffat_nea_arcsec2(fwhm, beta) / pixscale**2
    return float(22.5 - 2.5 * math.log10(5.0 * sigma * math.sqrt(nea_pix)))


def matched_sim_config(band: str, pixscale: float, size: int, sigma: float, fwhm: float,
                       beta: float = 3.0, seed: int = 1, coadd: bool = True) -> dict[str, Any]:
    """Simulation settings of one single-band tile matching a real image.

    Parameters
    ----------
    band : str
        Band (LSST bandpass used for the simulated colours).
    pixscale : float
        arcsec/pixel.
    size : int
        Tile size, pixels.
    sigma : float
        Background noise to match (nanomaggy/pixel).
    fwhm : float
        PSF FWHM, arcsec.
    beta : float
        Moffat beta.
    seed : int
    coadd : bool
        Coadd-like defect rates (:meth:`DefectRates.coadd`).
    """
    from .config import load_sim_config
    from .defects import DefectRates

    depth = depth_from_sigma(sigma, fwhm, beta, pixscale)
    rates = DefectRates.coadd() if coadd else DefectRates()
    over = {
        "seed": seed,
        "tiles": 1,
        "survey": {"name": "realism", "bands": [band], "pixel_scale": pixscale,
                   "tile_size": size, "compress": False},
        "conditions": {"psf_fwhm": {band: [fwhm, fwhm]}, "psf_beta": [beta, beta],
                       "depth": {band: [depth, depth]}, "nodata_strip_prob": 0.0},
        "defects": {f: getattr(rates, f) for f in rates.__dataclass_fields__},
    }
    return load_sim_config(None, overrides=over)
