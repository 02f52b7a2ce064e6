"""Benchmark: the whole detect stage vs sep alone, seconds per megapixel.

Builds a synthetic 4-band 2048×2048 tile store (Gaussian and exponential
galaxies + stars, noise, a few masked cosmic rays) unless ``data/demo`` holds a
simulated, ingested tile store, then times

* ``run_detect`` (load the store, background per band, detection image, sep
  extraction with deblending, AUTO/aperture photometry in every band, r50, flags,
  Parquet, 64×64 cutouts of every source in every band, segmap into the store);
* sep alone: ``sep.Background`` + ``sep.extract`` (same settings) on the same
  detection image.

The last printed line is JSON: ``detect_s_per_mpix``, ``vs_sep`` (ratio of the two
times) and the details.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

BANDS = ["g", "r", "i", "z"]


def synthetic_store(root: Path, size: int, nsrc: int, seed: int = 0) -> dict:
    """Write a synthetic tile store under ``root``; return its config."""
    import xarray as xr

    from tilecat.bits import bit
    from tilecat.config import validate_config
    from tilecat.store import write_arrays, write_group
    from tilecat.survey import tile_paths

    rng = np.random.default_rng(seed)
    noise = np.array([0.04, 0.05, 0.06, 0.08], np.float32)
    image = rng.normal(0, 1, (len(BANDS), size, size)).astype(np.float32) * noise[:, None, None]
    dq = np.zeros(image.shape, np.uint16)
    half = 20
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    for _ in range(nsrc):
        x0, y0 = rng.uniform(0, size, 2)
        ix, iy = int(x0), int(y0)
        dx, dy = xx - (x0 - ix), yy - (y0 - iy)
        r_e = rng.lognormal(np.log(1.5), 0.5)
        q = rng.uniform(0.3, 1.0)
        th = rng.uniform(0, np.pi)
        u = dx * np.cos(th) + dy * np.sin(th)
        v = (-dx * np.sin(th) + dy * np.cos(th)) / q
        r = np.hypot(u, v)
        prof = np.exp(-r / r_e) if rng.random() < 0.6 else np.exp(-0.5 * (r / r_e) ** 2)
        prof /= prof.sum()
        flux = 10 ** rng.uniform(-0.3, 2.0)
        sed = rng.uniform(0.5, 1.5, len(BANDS))
        ys, xs = slice(max(iy - half, 0), min(iy + half + 1, size)), \
            slice(max(ix - half, 0), min(ix + half + 1, size))
        ps = prof[ys.start - (iy - half):ys.stop - (iy - half),
                  xs.start - (ix - half):xs.stop - (ix - half)]
        image[:, ys, xs] += (flux * sed[:, None, None] * ps[None]).astype(np.float32)
    for _ in range(200):  # masked cosmic rays
        b, y, x = rng.integers(0, len(BANDS)), rng.integers(0, size), rng.integers(0, size)
        image[b, y, x] += 20.0
        dq[b, y, x] = bit("cosmic_ray")
    image += 0.2
    invvar = np.broadcast_to((1 / noise**2)[:, None, None], image.shape).astype(np.float32)
    cfg = validate_config({
        "survey": {"name": "bench", "bands": BANDS, "pixel_scale": 0.262,
                   "zeropoints": {b: 22.5 for b in BANDS},
                   "files": {"image": {"pattern": "unused/{tile}-{band}.fits"}}},
        "tiles": str(root / "tiles.tsv"),
        "results": str(root / "results"),
    })
    store = tile_paths(cfg, "bench")["store"]
    wcs = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0,
           "CRPIX1": size / 2, "CRPIX2": size / 2, "CD1_1": -0.262 / 3600, "CD1_2": 0.0,
           "CD2_1": 0.0, "CD2_2": 0.262 / 3600}
    write_group(store, {"wcs": wcs, "bands": BANDS, "pixel_scale": 0.262})
    dims = ("band", "y", "x")
    coords = {"band": np.array(BANDS, dtype=object)}
    write_arrays(store, {
        "image": xr.DataArray(image, dims=dims, coords=coords),
        "invvar": xr.DataArray(invvar, dims=dims, coords=coords),
        "dq": xr.DataArray(dq, dims=dims, coords=coords),
    }, chunks={k: (1, 1024, 1024) for k in ("image", "invvar", "dq")})
    return cfg


def sep_alone(det: np.ndarray, err: np.ndarray, mask: np.ndarray, dcfg: dict) -> float:
    """Seconds for sep.Background + sep.extract on the detection image."""
    import sep

    from tilecat.detect.extract import DEFAULT_KERNEL

    t0 = time.perf_counter()
    bkg = sep.Background(det, mask=mask, bw=dcfg["back_size"], bh=dcfg["back_size"],
                         fw=dcfg["back_filtersize"], fh=dcfg["back_filtersize"])
    sub = det - bkg.back()
    sep.extract(sub, dcfg["thresh"], err=err, mask=mask, minarea=dcfg["minarea"],
                filter_kernel=DEFAULT_KERNEL, filter_type="conv",
                deblend_nthresh=dcfg["deblend_nthresh"], deblend_cont=dcfg["deblend_cont"])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--sources", type=int, default=4000)
    args = parser.parse_args()

    import pyarrow.parquet as pq

    from tilecat.detect import run_detect
    from tilecat.detect.detimage import detection_image
    from tilecat.detect.inputs import load_tile
    from tilecat.survey import tile_paths

    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        cfg = synthetic_store(root, args.size, args.sources)
        print(f"synthetic {len(BANDS)}-band {args.size}x{args.size} store written in "
              f"{time.perf_counter() - t0:.1f} s")
        paths = tile_paths(cfg, "bench")
        mpix = args.size * args.size / 1e6

        timings: list[dict] = []

        class Grab(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if hasattr(record, "timings"):
                    timings.append(record.timings)

        logger = logging.getLogger("tilecat.detect.run")
        logger.addHandler(Grab())
        logger.setLevel(logging.INFO)
        runs = []
        for _ in range(2):  # the first run also pays the imports
            t0 = time.perf_counter()
            run_detect(cfg, "bench", 0)
            runs.append(time.perf_counter() - t0)
        best = int(np.argmin(runs))
        t_stage = runs[best]
        t_load, t_measure = timings[best]["load"], timings[best]["measure"]
        nsrc = pq.read_metadata(paths["sources"]).num_rows

        data = load_tile(cfg, "bench", paths["store"])
        det = detection_image(data.image, data.sigma, data.masked)
        mask = np.ascontiguousarray(det.mask, dtype=np.uint8)
        t_sep = min(sep_alone(det.data, det.err, mask, cfg["detect"]) for _ in range(2))

    t_write = timings[best]["write"]
    print(f"sources detected: {nsrc}")
    print(f"detect stage   : {t_stage:6.2f} s = {t_stage / mpix:.3f} s/Mpix "
          f"(load {t_load:.2f} s, measure {t_measure:.2f} s, write {t_write:.2f} s; best of 2)")
    print(f"sep alone      : {t_sep:6.2f} s = {t_sep / mpix:.3f} s/Mpix "
          "(Background + extract on the detection image)")
    print(f"stage / sep    : {t_stage / t_sep:.1f}x")
    print(json.dumps({
        "detect_s_per_mpix": round(t_stage / mpix, 4),
        "vs_sep": round(t_stage / t_sep, 2),
        "sep_s_per_mpix": round(t_sep / mpix, 4),
        "load_s": round(t_load, 3),
        "measure_s": round(t_measure, 3),
        "write_s": round(t_write, 3),
        "n_sources": int(nsrc),
        "mpix": mpix,
        "bands": len(BANDS),
    }))


if __name__ == "__main__":
    main()
