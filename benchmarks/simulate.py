"""Benchmark of the survey simulator (issue 2).

Figures:
* ``tiles_per_min_2048x4``: one 2048 x 2048 tile in 4 bands (demo survey, ~1500 objects),
  rendered and written (FITS + truth), in tiles per minute (one process);
* ``stamps_per_s_64x4``: 64 x 64 x 4-band galaxy stamps per second (SIM-B's stamp
  renderer when available, else the tile renderer on 64 x 64 tiles with one galaxy);
* ``noise_pull_std``: std of (image - noiseless) * sqrt(invvar) over background pixels
  (no object light above 0.1 sigma, no injected defect), read back from the FITS file;
* ``flux_ratio_median_bright``: median of sep aperture flux / true flux in r for isolated
  bright objects (S/N > 30, no neighbour within the aperture + 3 FWHM, no flagged pixel;
  aperture 4 FWHM for stars, 5 r50 + 3 FWHM for galaxies).

Run: ``.venv/bin/python benchmarks/simulate.py [--quick]``. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _tile_benchmark(size: int) -> dict:
    from astropy.io import fits

    from tilecat.simulate.config import load_sim_config
    from tilecat.simulate.tile import render_tile
    from tilecat.simulate.writer import write_tile

    cfg = load_sim_config(None, overrides={"survey": {"tile_size": size}, "seed": 7})
    render_tile(load_sim_config(None, overrides={"survey": {"tile_size": 64}}), 0)  # warm caches
    t0 = time.perf_counter()
    c0 = time.process_time()
    res = render_tile(cfg, 0, keep_noiseless=True)
    t_render = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        write_tile(res, tmp, cfg)
        t_write = time.perf_counter() - t1
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
        pulls = []
        for band in res.bands:
            c = res.conditions[band]
            with fits.open(Path(tmp) / res.tile / f"{res.tile}-{band}.fits.fz") as h:
                img = h["IMAGE"].data.astype(float)
                iv = h["INVVAR"].data.astype(float)
            bg = (res.noiseless[band] < 0.1 * c.sky_sigma) & (iv > 0) & (res.defects[band] == 0)
            bg &= res.dq[band] == 0
            pulls.append(((img - res.noiseless[band]) * np.sqrt(iv))[bg])
    pull_std = float(np.std(np.concatenate(pulls)))
    ratios = _flux_ratios(res)
    return dict(n_objects=len(res.truth), render_s=t_render, write_s=t_write, elapsed_s=elapsed,
                cpu_s=cpu,
                pull_std=pull_std, ratios=ratios, scale=(2048 / size) ** 2)


def _flux_ratios(res) -> np.ndarray:
    import pandas as pd
    import sep
    from scipy.spatial import cKDTree

    df = pd.DataFrame(res.truth)
    band = "r"
    c = res.conditions[band]
    img = res.image[band].astype(float)
    iv = res.invvar[band].astype(float)
    err = np.where(iv > 0, 1 / np.sqrt(np.where(iv > 0, iv, 1)), 0.0)
    rad = np.where(df.is_star, 4 * c.psf_fwhm_pix,
                   np.minimum(5 * df.r50 / c.pixscale + 3 * c.psf_fwhm_pix, 60))
    f, fe, flag = sep.sum_circle(img, df.x.values, df.y.values, rad, err=err)
    xy = df[["x", "y"]].to_numpy()
    tree = cKDTree(xy)
    d, _ = tree.query(xy, k=2)
    ny, nx = img.shape
    # no injected defect or flagged pixel inside the aperture
    bad = (res.defects[band] > 0) | (res.dq[band] > 0)
    bad_in = np.array([bad[max(int(y - r), 0):int(y + r) + 1, max(int(x - r), 0):int(x + r) + 1].any()
                       for x, y, r in zip(df.x, df.y, rad)])
    ok = ((d[:, 1] > rad + 3 * c.psf_fwhm_pix) & (df[f"flux_{band}"] / fe > 30) & ~bad_in
          & (df.x > rad) & (df.y > rad) & (df.x < nx - rad) & (df.y < ny - rad)).to_numpy()
    ok = ok & (df[f"flux_{band}"].to_numpy() * 0.02 < c.saturation)  # not saturated
    return f[ok] / df[f"flux_{band}"].to_numpy()[ok]


def _stamps_benchmark(n: int) -> float:
    from tilecat.simulate.config import load_sim_config

    cfg = load_sim_config(None)
    try:
        from tilecat.simulate import stamps
    except ImportError:
        stamps = None
    if stamps is not None and hasattr(stamps, "make_galaxy_stamps"):
        with tempfile.TemporaryDirectory() as tmp:
            stamps.make_galaxy_stamps(cfg, Path(tmp) / "w.zarr", 32, seed=1)  # warm up
            t0 = time.perf_counter()
            stamps.make_galaxy_stamps(cfg, Path(tmp) / "s.zarr", n, seed=2)
            return n / (time.perf_counter() - t0)
    from tilecat.simulate.population import draw_galaxies
    from tilecat.simulate.tile import render_tile

    small = load_sim_config(None, overrides={"survey": {"tile_size": 64},
                                             "stars": {"density": 0.0, "bright_per_tile": 0}})
    specs = draw_galaxies(n, np.random.default_rng(0), small)
    t0 = time.perf_counter()
    for k, s in enumerate(specs):
        render_tile(small, k, galaxies=[s])
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1024 x 1024 tile, scaled x4")
    ap.add_argument("--stamps", type=int, default=512)
    args = ap.parse_args()
    size = 1024 if args.quick else 2048
    tb = _tile_benchmark(size)
    per_tile_2048 = tb["elapsed_s"] * tb["scale"]
    print(f"tile {size}x{size}x4: {tb['n_objects']} objects, render {tb['render_s']:.1f} s, "
          f"write {tb['write_s']:.1f} s (CPU {tb['cpu_s']:.1f} s) -> {60 / per_tile_2048:.2f} "
          "tiles/min at 2048x2048x4 (wall clock)")
    print(f"background pull std: {tb['pull_std']:.4f}")
    r = tb["ratios"]
    print(f"isolated bright objects: {len(r)}, median flux ratio {np.median(r):.4f} "
          f"(16-84%: {np.percentile(r, 16):.4f} .. {np.percentile(r, 84):.4f})")
    sps = _stamps_benchmark(args.stamps)
    print(f"stamps 64x64x4: {sps:.1f} per second")
    print(json.dumps({
        "tiles_per_min_2048x4": round(60 / per_tile_2048, 3),
        "tile_2048x4_seconds": round(per_tile_2048, 2),
        "tile_2048x4_cpu_seconds": round(tb["cpu_s"] * tb["scale"], 2),
        "tile_objects": tb["n_objects"] * tb["scale"],
        "stamps_per_s_64x4": round(sps, 2),
        "noise_pull_std": round(tb["pull_std"], 4),
        "flux_ratio_median_bright": round(float(np.median(r)), 4),
        "n_bright_isolated": int(len(r)),
    }))


if __name__ == "__main__":
    main()
