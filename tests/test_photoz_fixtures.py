"""Helpers (no tests here): synthetic galaxy stamp stores and cutouts for photo-z / latent tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

BANDS = ["g", "r", "i", "z"]


def blob_stamps(n: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Gaussian galaxies whose colours depend on redshift, with unit background noise.

    Returns stamps (arcsinh(F / sigma)), sigma (nanomaggy), redshift, mags, labels.
    """
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.05, 1.2, n)
    mag_r = rng.uniform(18.0, 22.0, n)
    colour = np.stack([0.3 + 1.2 * z, np.zeros(n), -0.2 - 0.5 * z, -0.3 - 0.8 * z], 1)
    mags = mag_r[:, None] + colour
    sigma = np.tile(rng.uniform(0.003, 0.008, (n, 1)), (1, len(BANDS))).astype(np.float32)
    flux = 10 ** (-0.4 * (mags - 22.5))  # nanomaggy
    c = size // 2
    y, x = np.mgrid[:size, :size] - c
    r50 = rng.uniform(1.0, 3.0, n)
    s = r50 / 1.1774
    prof = np.exp(-0.5 * (x**2 + y**2)[None] / s[:, None, None] ** 2) / (2 * np.pi * s[:, None,
                                                                                        None] ** 2)
    img = flux[:, :, None, None] * prof[:, None] + sigma[:, :, None, None] * rng.normal(
        size=(n, len(BANDS), size, size))
    stamps = np.arcsinh(img / sigma[:, :, None, None]).astype(np.float32)
    kinds = np.array(["elliptical", "spiral", "irregular", "edgeon"], dtype=object)[
        np.arange(n) % 4]
    t_class = np.where(kinds == "elliptical", "smooth", "featured").astype(object)
    return {"stamps": stamps, "sigma": sigma, "redshift": z, "mags": mags, "kind": kinds,
            "t_class": t_class}


def write_stamp_store(path: Path, n: int, size: int = 32, seed: int = 0,
                      n_artifacts: int = 0) -> Path:
    """A store in the layout of ``tilecat simulate-stamps --kind galaxy``."""
    import xarray as xr

    d = blob_stamps(n + n_artifacts, size, seed)
    t_class = d["t_class"].copy()
    t_class[n:] = "artifact"
    data = {
        "stamps": (("object", "band", "y", "x"), d["stamps"]),
        "sigma": (("object", "band"), d["sigma"]),
        "psf_fwhm": (("object", "band"), np.full(d["sigma"].shape, 1.2, np.float32)),
        "redshift": (("object",), d["redshift"]),
        "kind": (("object",), d["kind"].astype(object)),
        "t_class": (("object",), t_class.astype(object)),
        "population": (("object",), np.array(["parametric"] * (n + n_artifacts), dtype=object)),
        "edge_on": (("object",), d["kind"] == "edgeon"),
        "spiral_arms": (("object",), d["kind"] == "spiral"),
        "merger": (("object",), np.zeros(n + n_artifacts, bool)),
        "snr": (("object",), np.full(n + n_artifacts, 50.0)),
        "r50": (("object",), np.full(n + n_artifacts, 0.5)),
    }
    for j, b in enumerate(BANDS):
        data[f"mag_{b}"] = (("object",), d["mags"][:, j])
    ds = xr.Dataset(data, coords={"band": np.array(BANDS, dtype=object)})
    ds.attrs.update({"bands": BANDS, "pixel_scale": 0.262, "seed": seed, "heldout": False,
                     "recipe": {"population": "parametric"}})
    ds.to_zarr(path, zarr_format=3, consolidated=False, mode="w")
    return path


def infer_config(tmp: Path, models: list[str], model_dirs: dict[str, str],
                 batch_size: int = 64) -> dict:
    """A minimal configuration for :func:`tilecat.infer.run_infer`."""
    return {
        "survey": {"name": "t", "bands": BANDS, "pixel_scale": 0.262,
                   "zeropoints": {b: 22.5 for b in BANDS}},
        "tiles": str(tmp / "tiles.tsv"),
        "results": str(tmp / "results"),
        "infer": {"models": models, "batch_size": batch_size, "device": "cpu", "gpu": False,
                  "model_dirs": model_dirs},
    }


def write_cutouts(cfg: dict, tile: str, n: int, size: int, seed: int = 0,
                  with_sigma: bool = True, chunk: int = 7, with_psf: bool = False
                  ) -> np.ndarray:
    """``cutouts.zarr`` of ``n`` blob galaxies (object ids shuffled); returns the ids."""
    import xarray as xr

    from tilecat.survey import tile_paths

    d = blob_stamps(n, size, seed)
    rng = np.random.default_rng(seed + 1)
    ids = (2 * 1_000_000 + rng.permutation(np.arange(1, n + 1))).astype(np.int64)
    data = {"stamp": (("object", "band", "y", "x"), d["stamps"]),
            "object_id": (("object",), ids)}
    if with_sigma:
        data["sigma"] = (("object", "band"), d["sigma"])
    if with_psf:
        data["psf_fwhm"] = (("object", "band"), np.full(d["sigma"].shape, 1.2, np.float32))
    ds = xr.Dataset(data, coords={"band": np.array(BANDS, dtype=object)})
    path = tile_paths(cfg, tile)["cutouts"]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_zarr(path, zarr_format=3, consolidated=False, mode="w",
               encoding={"stamp": {"chunks": (chunk, len(BANDS), size, size)}})
    return ids
