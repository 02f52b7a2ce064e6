"""Photo-z training / evaluation sets read from galaxy stamp stores.

Reads the stores written by ``tilecat simulate-stamps --kind galaxy`` (SIM_CONTRACT):
``stamps(object, band, y, x)`` = arcsinh(F / sigma), ``sigma(object, band)``
[nanomaggy], ``psf_fwhm(object, band)`` [arcsec], ``redshift``, ``mag_<band>`` [AB], ``population``, ``kind``, ``t_class``
and ``snr``. Stars and artefacts (``t_class == "artifact"`` or ``is_star``) are
dropped unless asked for: a photo-z is trained and scored on galaxies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["PhotoZSet", "load_photoz_set", "load_photoz_sets"]

_OPTIONAL = ("population", "kind", "t_class", "snr", "is_star")


@dataclass
class PhotoZSet:
    """Stamps with their redshifts and photometric truth.

    Attributes
    ----------
    stamps : ndarray of float32 (N, B, S, S)
        arcsinh(F / sigma); non-finite values set to 0.
    sigma : ndarray of float32 (N, B)
        Background noise per band [nanomaggy].
    z : ndarray of float64 (N,)
        True redshift.
    mags : ndarray of float64 (N, B)
        True total AB magnitudes per band.
    psf_fwhm : ndarray of float32 (N, B) or None
        PSF FWHM per band [arcsec].
    labels : dict
        ``population``, ``kind``, ``t_class``, ``snr`` when present (N,).
    bands : list of str
    pixel_scale : float
        arcsec / pixel.
    attrs : dict
        Store attributes (seed, heldout, recipe, ...), plus ``parts`` for several stores.
    """

    stamps: np.ndarray
    sigma: np.ndarray
    z: np.ndarray
    mags: np.ndarray
    psf_fwhm: np.ndarray | None
    labels: dict[str, np.ndarray]
    bands: list[str]
    pixel_scale: float
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def subset(self, index: np.ndarray) -> "PhotoZSet":
        """Rows ``index`` (a copy)."""
        return PhotoZSet(self.stamps[index], self.sigma[index], self.z[index], self.mags[index],
                         None if self.psf_fwhm is None else self.psf_fwhm[index],
                         {k: v[index] for k, v in self.labels.items()}, list(self.bands),
                         self.pixel_scale, dict(self.attrs))

    def mag(self, band: str = "r") -> np.ndarray:
        """True magnitude in ``band`` (the middle band when absent), (N,)."""
        j = self.bands.index(band) if band in self.bands else len(self.bands) // 2
        return self.mags[:, j]


def _strings(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "SUOT":
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values],
                        dtype=object)
    return values


def load_photoz_set(path: str | Path, limit: int | None = None,
                    galaxies_only: bool = True) -> PhotoZSet:
    """Read one galaxy stamp store.

    Parameters
    ----------
    path : path
        Zarr store.
    limit : int, optional
        Read only the first ``limit`` objects (before dropping non-galaxies).
    galaxies_only : bool
        Drop stars and artefacts.

    Raises
    ------
    InputError
        Store missing or without ``stamps``, ``sigma``, ``redshift``.
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise InputError("-", str(path), "stamp set does not exist")
    try:
        ds = xr.open_dataset(path, engine="zarr", consolidated=False, chunks=None)
    except Exception as exc:  # zarr/xarray raise many types for a broken store
        raise InputError("-", str(path), f"cannot open stamp set: {exc}") from exc
    for var in ("stamps", "sigma", "redshift"):
        if var not in ds.variables:
            raise InputError("-", str(path), f"no variable {var!r} (not a galaxy stamp set?)")
    attrs = dict(ds.attrs)
    bands = ([str(b) for b in ds["band"].values] if "band" in ds.coords
             else [str(b) for b in attrs.get("bands", [])])
    sl = slice(None) if limit is None else slice(0, int(limit))
    labels = {k: _strings(np.asarray(ds[k][sl].values)) for k in _OPTIONAL if k in ds.variables}
    n = int(ds["redshift"][sl].shape[0])
    keep = np.ones(n, bool)
    if galaxies_only:
        if "t_class" in labels:
            keep &= labels["t_class"] != "artifact"
        if "is_star" in labels:
            keep &= ~np.asarray(labels["is_star"], bool)
    idx = np.flatnonzero(keep)
    stamps = np.asarray(ds["stamps"][sl].values, np.float32)[idx]
    stamps = np.nan_to_num(stamps, nan=0.0, posinf=0.0, neginf=0.0)
    mags = np.stack([np.asarray(ds[f"mag_{b}"][sl].values, np.float64)
                     if f"mag_{b}" in ds.variables else np.full(n, np.nan) for b in bands],
                    axis=1)[idx]
    return PhotoZSet(
        stamps=stamps,
        sigma=np.asarray(ds["sigma"][sl].values, np.float32)[idx],
        z=np.asarray(ds["redshift"][sl].values, np.float64)[idx],
        mags=mags,
        psf_fwhm=(np.asarray(ds["psf_fwhm"][sl].values, np.float32)[idx]
                  if "psf_fwhm" in ds.variables else None),
        labels={k: v[idx] for k, v in labels.items()},
        bands=bands,
        pixel_scale=float(attrs.get("pixel_scale", np.nan)),
        attrs=attrs,
    )


def load_photoz_sets(paths: str | Path | Sequence[str | Path], limit: int | None = None,
                     galaxies_only: bool = True) -> PhotoZSet:
    """Read and concatenate several stores (same bands and stamp size).

    ``limit`` applies to each store. ``attrs`` are the first store's plus ``parts``
    (name, seed, heldout flag, population and size of each store).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    sets = [load_photoz_set(p, limit, galaxies_only) for p in paths]
    if not sets:
        raise InputError("-", "", "no stamp sets given")
    first = sets[0]
    for p, s in zip(paths, sets):
        if s.bands != first.bands or s.stamps.shape[1:] != first.stamps.shape[1:]:
            raise InputError("-", str(p), "stamp set differs in bands or stamp size")
    keys = set.intersection(*(set(s.labels) for s in sets))
    attrs = dict(first.attrs)
    attrs["parts"] = [{"path": Path(p).name, "seed": s.attrs.get("seed"),
                       "heldout": s.attrs.get("heldout"),
                       "population": (s.attrs.get("recipe") or {}).get("population"),
                       "n_galaxies": len(s)} for p, s in zip(paths, sets)]
    return PhotoZSet(
        stamps=np.concatenate([s.stamps for s in sets]),
        sigma=np.concatenate([s.sigma for s in sets]),
        z=np.concatenate([s.z for s in sets]),
        mags=np.concatenate([s.mags for s in sets]),
        psf_fwhm=(None if any(s.psf_fwhm is None for s in sets)
                  else np.concatenate([s.psf_fwhm for s in sets])),
        labels={k: np.concatenate([s.labels[k] for s in sets]) for k in keys},
        bands=list(first.bands), pixel_scale=first.pixel_scale, attrs=attrs)
