"""Realism of the simulator: a simulated tile next to real survey images.

Reads the Legacy Survey DR6 brick 0959p805 g band (image + invvar, tile-compressed
FITS) and an SDSS field (bz2 FITS, no weight map; band from the file name), measures
the DR6 noise and PSF, simulates one g-band tile with the same pixel scale, noise
(from the median inverse variance) and PSF FWHM (from the stellar locus of sep's
flux_radius), and prints a side-by-side table of

* background noise: pull image*sqrt(invvar) in source-free pixels (robust width, std,
  excess kurtosis), robust sigma, 4x4 block noise ratio (noise correlation);
* source counts: sep detections (matched filter, 3 sigma, 5 pixels) per deg^2 per mag;
* sizes: flux_radius (arcsec) quantiles of S/N > 10 detections.

Ends with one JSON line of the figures.

Usage: python benchmarks/realism.py [--dr6-image F] [--dr6-invvar F] [--sdss F] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

import numpy as np

REAL = Path("/work/shared/realdata")
DR6 = REAL / "legacysurvey_dr6_brick_0959p805"
SDSS = REAL / "sdss_gri_ngc6976" / "reprojected_sdss_g.fits.bz2"


def _read(path: Path) -> tuple[np.ndarray, object]:
    """First image HDU of a (compressed) FITS file as float64, and its header."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        for h in hdul:
            if h.data is not None and h.data.ndim == 2:
                return np.asarray(h.data, dtype=np.float64), h.header
    raise SystemExit(f"{path}: no 2-D image HDU")


def _pixscale(header: object) -> float:
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(WCS(header))) * 3600.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dr6-image", type=Path, default=DR6 / "legacysurvey-0959p805-image-g.fits.fz")
    ap.add_argument("--dr6-invvar", type=Path,
                    default=DR6 / "legacysurvey-0959p805-invvar-g.fits.fz")
    ap.add_argument("--sdss", type=Path, default=SDSS)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--beta", type=float, default=3.0, help="Moffat beta of the simulated PSF")
    args = ap.parse_args()

    import warnings

    from astropy.wcs import FITSFixedWarning

    from tilecat.simulate.realism import (
        comparison_table,
        measure_image,
        matched_sim_config,
        moffat_fwhm_from_r50,
    )
    from tilecat.simulate.tile import render_tile

    warnings.simplefilter("ignore", FITSFixedWarning)
    t0 = time.perf_counter()
    img, hdr = _read(args.dr6_image)
    iv, _ = _read(args.dr6_invvar)
    scale = _pixscale(hdr)
    dr6 = measure_image("DR6 g (real)", img, scale, iv)
    good = iv > 0
    sigma_iv = float(np.median(1.0 / np.sqrt(iv[good])))
    fwhm = moffat_fwhm_from_r50(dr6.r50_q["stellar"], args.beta)
    npix = int(good.sum())
    size = int(round(math.sqrt(npix) / 8.0)) * 8  # same area as the brick's valid pixels

    cfg = matched_sim_config("g", scale, size, sigma_iv, fwhm, beta=args.beta, seed=args.seed)
    res = render_tile(cfg, 0)
    sim = measure_image("simulated g", res.image["g"], scale, res.invvar["g"])

    sd_img, sd_hdr = _read(args.sdss)
    m = re.search(r"_([ugrizy])\.fits", args.sdss.name)
    sd_band = m.group(1) if m else "?"
    sd_scale = _pixscale(sd_hdr)
    sdss = measure_image(f"SDSS {sd_band} (real)", sd_img, sd_scale)
    dt = time.perf_counter() - t0

    print(f"simulated tile: {size}x{size} px at {scale:.3f}\"/px, sigma(invvar) "
          f"{sigma_iv:.5f} nmgy (DR6 median), depth "
          f"{cfg['conditions']['depth']['g'][0]:.2f} mag (5 sigma point source), PSF Moffat "
          f"FWHM {fwhm:.2f}\" beta {args.beta} (from the DR6 stellar r50 "
          f"{dr6.r50_q['stellar']:.2f}\"), coadd-like defect rates")
    print(f"SDSS pixel scale from its WCS: {sd_scale:.3f}\"/px (3 x 0.396\", reprojected)")
    print()
    print(comparison_table([dr6, sim, sdss]))
    print()

    def cmp(a, b):
        return {k: round(float(b) / float(a), 3) if a else None for k, (a, b) in
                {"counts_ratio_sim_over_dr6_20_24": (a.counts[4:8].sum(), b.counts[4:8].sum()),
                 "r50_median_ratio_sim_over_dr6": (a.r50_q["q50"], b.r50_q["q50"])}.items()}

    print(f"({dt:.1f} s)")
    figs = {"dr6": dr6.figures(), "sim": sim.figures(), "sdss": sdss.figures(),
            "sim_settings": {"size": size, "pixscale": round(scale, 4),
                             "sigma": round(sigma_iv, 6), "psf_fwhm": round(fwhm, 3),
                             "psf_beta": args.beta,
                             "depth": round(cfg["conditions"]["depth"]["g"][0], 3)},
            **cmp(dr6, sim)}
    print(json.dumps(figs, sort_keys=True))


if __name__ == "__main__":
    main()
