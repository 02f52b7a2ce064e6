"""Galaxy stamp training sets (``tilecat simulate-stamps --kind galaxy``) in memory.

Store layout (SIM_CONTRACT): ``stamps(object, band, y, x)`` float32 arcsinh(F/sigma),
``sigma(object, band)``, label variables along ``object`` (t_class, edge_on, ...,
r50 [arcsec], sersic_n, q, e1, e2, snr, ``psf_fwhm(object, band)`` [arcsec],
optionally ``psf_beta(object, band)`` [Moffat beta, dimensionless]); attrs
``bands``, ``pixel_scale`` [arcsec/pixel], ``seed``, ``heldout``, ``recipe``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["StampSet", "load_stamps", "load_stamp_sets", "LABEL_COLUMNS"]

#: label/structure variables read along ``object`` when present
LABEL_COLUMNS: tuple[str, ...] = (
    "kind", "t_class", "edge_on", "spiral_arms", "spin", "bar", "bulge_size", "merger",
    "roundness", "r50", "sersic_n", "q", "e1", "e2", "snr", "redshift", "bulge_to_total",
)


@dataclass
class StampSet:
    """A stamp training set in memory.

    Attributes
    ----------
    stamps : ndarray of float32, shape (N, n_band, S, S)
        arcsinh(F / sigma_band); non-finite values set to 0.
    labels : dict
        Label column -> array (N,) (strings as object arrays, booleans as bool).
    psf_fwhm : ndarray, shape (N, n_band) or None
        PSF FWHM per object and band [arcsec].
    bands : list of str
    pixel_scale : float
        arcsec / pixel.
    attrs : dict
        The store's attributes (seed, heldout, recipe, class frequencies, ...).
    psf_beta : ndarray, shape (N, n_band) or None
        Moffat beta of the PSF per object and band (dimensionless); None for sets
        simulated before it was recorded.
    """

    stamps: np.ndarray
    labels: dict[str, np.ndarray]
    psf_fwhm: np.ndarray | None
    bands: list[str]
    pixel_scale: float
    attrs: dict[str, Any] = field(default_factory=dict)
    psf_beta: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.stamps.shape[0])

    def subset(self, index: np.ndarray) -> "StampSet":
        """Rows ``index`` (a copy)."""
        return StampSet(
            stamps=self.stamps[index],
            labels={k: v[index] for k, v in self.labels.items()},
            psf_fwhm=None if self.psf_fwhm is None else self.psf_fwhm[index],
            bands=list(self.bands),
            pixel_scale=self.pixel_scale,
            attrs=dict(self.attrs),
            psf_beta=None if self.psf_beta is None else self.psf_beta[index],
        )


def _decode(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "SUOT":
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values],
                        dtype=object)
    return values


def load_stamps(path: str | Path, limit: int | None = None) -> StampSet:
    """Read a galaxy stamp set fully into memory.

    Parameters
    ----------
    path : path
        The Zarr store written by ``tilecat simulate-stamps --kind galaxy``.
    limit : int, optional
        Read only the first ``limit`` objects.

    Raises
    ------
    InputError
        Missing store or variables.
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise InputError("-", str(path), "stamp set does not exist")
    ds = xr.open_dataset(path, engine="zarr", consolidated=False, chunks=None)
    if "stamps" not in ds:
        raise InputError("-", str(path), "no 'stamps' variable (not a galaxy stamp set?)")
    sl = slice(None) if limit is None else slice(0, int(limit))
    stamps = np.asarray(ds["stamps"][sl].values, dtype=np.float32)
    stamps = np.nan_to_num(stamps, nan=0.0, posinf=0.0, neginf=0.0)
    labels = {c: _decode(np.asarray(ds[c][sl].values)) for c in LABEL_COLUMNS
              if c in ds.variables and ds[c].dims == ("object",)}
    psf = np.asarray(ds["psf_fwhm"][sl].values, np.float64) if "psf_fwhm" in ds else None
    beta = np.asarray(ds["psf_beta"][sl].values, np.float64) if "psf_beta" in ds else None
    attrs = dict(ds.attrs)
    if "band" in ds.coords:
        bands = [str(b) for b in ds["band"].values]
    else:
        bands = [str(b) for b in attrs.get("bands", [])]
    if "pixel_scale" not in attrs:
        raise InputError("-", str(path), "attribute 'pixel_scale' missing")
    return StampSet(stamps=stamps, labels=labels, psf_fwhm=psf, bands=bands,
                    pixel_scale=float(attrs["pixel_scale"]), attrs=attrs, psf_beta=beta)


def load_stamp_sets(paths: str | Path | list[str | Path] | tuple[str | Path, ...],
                    limit: int | None = None) -> StampSet:
    """Read one or several stamp sets (same bands, size and pixel scale), concatenated.

    ``attrs`` are those of the first set, plus ``parts``: the list of every set's
    path, seed and size. ``limit`` caps the total number of objects.
    """
    if isinstance(paths, (str, Path)):
        return load_stamps(paths, limit)
    sets: list[StampSet] = []
    total = 0
    for p in paths:
        if limit is not None and total >= limit:
            break
        s = load_stamps(p, None if limit is None else limit - total)
        if sets and (s.bands != sets[0].bands or s.stamps.shape[1:] != sets[0].stamps.shape[1:]
                     or abs(s.pixel_scale - sets[0].pixel_scale) > 1e-9):
            raise InputError("-", str(p), "stamp set differs in bands, size or pixel scale")
        sets.append(s)
        total += len(s)
    if not sets:
        raise InputError("-", "", "no stamp sets given")
    keys = set.intersection(*(set(s.labels) for s in sets))
    attrs = dict(sets[0].attrs)
    attrs["parts"] = [{"path": Path(p).name, "seed": s.attrs.get("seed"), "n": len(s)}
                      for p, s in zip(paths, sets)]
    return StampSet(
        stamps=np.concatenate([s.stamps for s in sets]),
        labels={k: np.concatenate([np.asarray(s.labels[k]) for s in sets]) for k in keys},
        psf_fwhm=None if any(s.psf_fwhm is None for s in sets)
        else np.concatenate([s.psf_fwhm for s in sets]),
        bands=sets[0].bands, pixel_scale=sets[0].pixel_scale, attrs=attrs,
        psf_beta=None if any(s.psf_beta is None for s in sets)
        else np.concatenate([s.psf_beta for s in sets]))
