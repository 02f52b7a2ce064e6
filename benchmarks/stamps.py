"""Throughput of the training-set generators: galaxy stamps (k-space renderer) vs GalSim.

Times ``make_galaxy_stamps`` (64 x 64 x 4 bands, end to end including the Zarr write)
with the given workers, then the peer: the same galaxies drawn the standard GalSim way,
``galsim.Convolve(profile_band, psf_band).drawImage`` once per band (rendering only,
one process). Ends with one JSON line of figures.

Usage: python benchmarks/stamps.py [--number 3000] [--workers 2] [--patches 200]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _galsim_peer(cfg: dict, n: int, seed: int) -> float:
    """Stamps per CPU second of per-band GalSim FFT draws of the same kind of galaxies."""
    import galsim

    from tilecat.simulate.conditions import draw_conditions
    from tilecat.simulate.galaxies import build_galaxy
    from tilecat.simulate.population import draw_galaxies
    from tilecat.simulate.stamps import _gsparams, _quantise, stamp_config

    scfg = stamp_config(cfg)
    rng = np.random.default_rng(seed)
    gsp = _gsparams(scfg)
    specs = draw_galaxies(n, rng, scfg)
    for s in specs:
        _quantise(s)
    models = [build_galaxy(s, gsp) for s in specs]
    conds = draw_conditions(scfg, rng)
    bands = scfg["survey"]["bands"]
    psfs = {b: conds[b].psf(gsp) for b in bands}
    scale = scfg["survey"]["pixel_scale"]
    for m in models[:20]:  # warm the Sersic tables, as the stamp run does
        galsim.Convolve(m.profile("r", gsp), psfs["r"], gsparams=gsp).drawImage(
            nx=64, ny=64, scale=scale, method="no_pixel")
    t0 = time.process_time()
    for m in models:
        for b in bands:
            galsim.Convolve(m.profile(b, gsp), psfs[b], gsparams=gsp).drawImage(
                nx=64, ny=64, scale=scale, method="no_pixel")
    return n / (time.process_time() - t0)


def _cpu() -> float:
    """CPU seconds used by this process and its finished children."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--number", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--patches", type=int, default=200)
    ap.add_argument("--peer", type=int, default=300, help="galaxies for the GalSim peer")
    args = ap.parse_args()

    from tilecat.simulate.config import load_sim_config
    from tilecat.simulate.patches import make_defect_patches
    from tilecat.simulate.stamps import make_galaxy_stamps

    cfg = load_sim_config(None)
    with tempfile.TemporaryDirectory() as d:
        t0, c0 = time.perf_counter(), _cpu()
        make_galaxy_stamps(cfg, Path(d) / "s.zarr", args.number, seed=11, workers=args.workers)
        dt, dc = time.perf_counter() - t0, _cpu() - c0
        rate = args.number / dt
        cpu_rate = args.number / dc
        t0 = time.perf_counter()
        make_defect_patches(cfg, Path(d) / "p.zarr", args.patches, seed=11,
                            workers=args.workers)
        prate = args.patches / (time.perf_counter() - t0)
    peer = _galsim_peer(cfg, args.peer, seed=11)
    print(f"galaxy stamps 64x64x4, {args.workers} workers: {rate:8.1f} stamps/s "
          f"({args.number} in {dt:.1f} s, incl. start-up and Zarr write)")
    print(f"  per CPU second: {cpu_rate:8.1f} stamps (x{args.workers} = "
          f"{cpu_rate * args.workers:.1f} stamps/s on {args.workers} idle cores)")
    print(f"GalSim per-band FFT draws (main galaxy only, no neighbours/noise/labels): "
          f"{peer:8.1f} stamps per CPU second")
    print(f"defect patches 128x128, {args.workers} workers: {prate:8.1f} patches/s")
    print(json.dumps({"stamps_per_s": round(rate, 1), "workers": args.workers,
                      "stamps_per_cpu_s": round(cpu_rate, 1),
                      "number": args.number, "galsim_peer_stamps_per_cpu_s": round(peer, 1),
                      "ratio_per_cpu_vs_galsim": round(cpu_rate / peer, 2),
                      "patches_per_s": round(prate, 1)}))


if __name__ == "__main__":
    main()
