"""Defect-patch datasets (SIM_CONTRACT.md "Training sets") for training and evaluation.

A patch store (Zarr, written by ``tilecat simulate-stamps --kind defect``) holds raw
pixels as a tile store would: ``flux``, ``invvar``, ``dq``, ``truth`` with dims
``(patch, y, x)``. Here they become network inputs through the same
:func:`tilecat.mask.prepare.prepare_band` used at inference, and multi-label targets.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bits import DEFECT_CLASSES
from ..errors import InputError
from .prepare import prepare_band

__all__ = ["PatchSet", "load_patches", "make_patches", "bits_to_targets", "pixel_frequencies"]


@dataclass
class PatchSet:
    """Prepared patches.

    Attributes
    ----------
    x : ndarray of float32, shape (n, 2, h, w)
        Network inputs.
    truth : ndarray of uint16, shape (n, h, w)
        Truth bits (bit k = DEFECT_CLASSES[k]).
    attrs : dict
        The store's attributes (seed, heldout, recipe, frequencies...).
    path : str
    """

    x: np.ndarray
    truth: np.ndarray
    attrs: dict[str, Any]
    path: str


def bits_to_targets(truth: np.ndarray, n_classes: int = len(DEFECT_CLASSES)) -> np.ndarray:
    """uint16 bits (..., h, w) -> bool targets (..., K, h, w)."""
    t = np.asarray(truth)
    return np.stack([(t >> k) & 1 for k in range(n_classes)], axis=-3).astype(bool)


def pixel_frequencies(truth: np.ndarray) -> dict[str, float]:
    """Fraction of pixels carrying each class (the training priors P_T(c))."""
    n = truth.size
    return {c: float(np.count_nonzero((truth >> k) & 1)) / n for k, c in enumerate(DEFECT_CLASSES)}


def load_patches(path: str | Path, limit: int | None = None, resample_fraction: float = 0.0,
                 seed: int = 0) -> PatchSet:
    """Read a defect-patch store and prepare its patches.

    Parameters
    ----------
    path : path
        Zarr store with ``flux``, ``invvar``, ``truth`` (``dq`` unused as input).
    limit : int, optional
        Use only the first ``limit`` patches.
    resample_fraction : float
        Fraction of patches made coadd-like
        (:func:`tilecat.mask.augment.resample_some`, seeded by ``seed``) before
        preparation (training augmentation; 0 for evaluation).
    seed : int
        Seed of that choice.

    Raises
    ------
    InputError
        When a variable is missing.
    """
    import xarray as xr

    ds = xr.open_zarr(str(path), consolidated=False)
    for name in ("flux", "invvar", "truth"):
        if name not in ds:
            raise InputError("-", str(path), f"defect-patch store has no {name!r} variable")
    sl = slice(0, limit)
    flux = np.asarray(ds["flux"].isel(patch=sl).values, dtype=np.float32)
    invvar = np.asarray(ds["invvar"].isel(patch=sl).values, dtype=np.float32)
    truth = np.asarray(ds["truth"].isel(patch=sl).values).astype(np.uint16)
    if resample_fraction > 0:
        from .augment import resample_some

        flux = resample_some(flux, resample_fraction, np.random.default_rng([int(seed), 7]))
    x = np.stack([prepare_band(flux[i], invvar[i]) for i in range(flux.shape[0])])
    return PatchSet(x=x, truth=truth, attrs=dict(ds.attrs), path=str(path))


def make_patches(out: str | Path, n: int, seed: int, heldout: bool = False,
                 workers: int = 1, config: str | None = None) -> Path:
    """Simulate a defect-patch store with the simulator's own entry point (unless present).

    The store is reused when it exists with the same ``seed``, ``heldout``, number of
    patches and defect physics (``tilecat.simulate.defects.DEFECTS_VERSION``): it is a
    pure function of them.
    """
    import xarray as xr

    from ..simulate.cli import simulate_stamps_main
    from ..simulate.defects import DEFECTS_VERSION

    out = Path(out)
    if (out / "zarr.json").is_file():
        ds = xr.open_zarr(str(out), consolidated=False)
        if (int(ds.attrs.get("seed", -1)) == int(seed)
                and bool(ds.attrs.get("heldout", False)) == bool(heldout)
                and ds.sizes.get("patch") == n
                and int(ds.attrs.get("defects_version", 1)) == DEFECTS_VERSION):
            return out
    args = argparse.Namespace(out=str(out), kind="defect", config=config, number=int(n),
                              seed=int(seed), heldout=bool(heldout), workers=int(workers))
    simulate_stamps_main(args)
    return out
