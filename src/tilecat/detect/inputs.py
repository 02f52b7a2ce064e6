"""Read what the detect stage needs from a tile store.

From ``tile.zarr``: ``image``, ``invvar``, ``dq`` and, when the mask stage has run,
``defect_mask`` (all ``(band, y, x)``), plus the group attributes (``wcs``,
``zeropoints``, ``pixel_scale``; the survey configuration fills in what the store
does not hold).

Per pixel and band:

* ``bits`` = dq | defect_mask | ``nodata`` where the weight is zero or a value is
  not finite;
* ``masked`` = some bit of ``detect.mask_bits`` is set, or no data;
* ``sigma`` = 1 / sqrt(invvar) (the band's median sigma where there is no data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bits import bit
from ..errors import ConfigError, InputError
from ..normalize import sigma_from_invvar

__all__ = ["TileData", "mask_value", "load_tile"]


@dataclass
class TileData:
    """One tile's pixels and metadata, in memory.

    Attributes
    ----------
    tile : str
        Tile id.
    store : Path
        The ``tile.zarr`` it came from.
    bands : list of str
        Band names, in axis order.
    image : ndarray of float32, shape (band, ny, nx)
        Flux (config flux unit); non-finite values replaced by 0.
    sigma : ndarray of float32, shape (band, ny, nx)
        Per-pixel 1-sigma noise, flux units.
    bits : ndarray of uint16, shape (band, ny, nx)
        Defect / data-quality bits (``tilecat.bits``).
    masked : ndarray of bool, shape (band, ny, nx)
        Pixels ignored by detection and left out of the photometry.
    pixel_scale : float
        arcsec / pixel.
    zeropoints : dict of str to float
        AB magnitude of one flux unit, per band.
    flux_unit : str
        Unit of ``image`` (astropy syntax).
    attrs : dict
        The store's group attributes.
    """

    tile: str
    store: Path
    bands: list[str]
    image: np.ndarray
    sigma: np.ndarray
    bits: np.ndarray
    masked: np.ndarray
    pixel_scale: float
    zeropoints: dict[str, float]
    flux_unit: str = "nanomaggy"
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return int(self.image.shape[1]), int(self.image.shape[2])


def mask_value(names: list[str]) -> int:
    """OR of the named bits (``detect.mask_bits``).

    Raises
    ------
    ConfigError
        An unknown bit name.
    """
    value = 0
    for name in names:
        try:
            value |= bit(name)
        except KeyError as exc:
            raise ConfigError(f"detect.mask_bits: {exc.args[0]}") from exc
    return value


def _plane(ds: Any, name: str, tile: str, store: Path, dtype: Any) -> np.ndarray:
    if name not in ds.variables:
        raise InputError(tile, str(store), f"no {name!r} array (has ingest run?)")
    var = ds[name]
    if var.dims != ("band", "y", "x"):
        raise InputError(tile, str(store), f"{name} has dims {var.dims}, expected (band, y, x)")
    return np.ascontiguousarray(np.asarray(var.values), dtype=np.dtype(dtype).newbyteorder("="))


def load_tile(config: dict[str, Any], tile: str, store: str | Path) -> TileData:
    """Load ``store`` for detection.

    Parameters
    ----------
    config : dict
        Validated configuration (``survey`` and ``detect`` sections are used).
    tile : str
        Tile id (for messages).
    store : path
        ``tile.zarr``.

    Raises
    ------
    InputError
        Missing store or arrays, inconsistent shapes or bands.
    """
    from ..store import open_tile, read_attrs

    store = Path(store)
    if not (store / "zarr.json").exists():
        raise InputError(tile, str(store), "tile store does not exist (run ingest first)")
    try:
        ds = open_tile(store)
        attrs = read_attrs(store)
    except Exception as exc:  # zarr/xarray raise many types for a broken store
        raise InputError(tile, str(store), f"cannot open tile store: {exc}") from exc
    image = _plane(ds, "image", tile, store, np.float32)
    invvar = _plane(ds, "invvar", tile, store, np.float32)
    dq = _plane(ds, "dq", tile, store, np.uint16)
    if invvar.shape != image.shape or dq.shape != image.shape:
        raise InputError(tile, str(store), "image, invvar and dq shapes differ")
    bits = dq.copy()
    if "defect_mask" in ds.variables:
        dm = _plane(ds, "defect_mask", tile, store, np.uint16)
        if dm.shape != image.shape:
            raise InputError(tile, str(store), "defect_mask shape differs from image")
        bits |= dm
    if "band" in ds.coords:
        bands = [str(b) for b in ds["band"].values]
    else:
        bands = [str(b) for b in attrs.get("bands", config["survey"]["bands"])]
    if len(bands) != image.shape[0]:
        raise InputError(tile, str(store), f"{image.shape[0]} band planes but bands {bands}")
    survey = config["survey"]
    zps = {**{str(k): float(v) for k, v in survey["zeropoints"].items()},
           **{str(k): float(v) for k, v in (attrs.get("zeropoints") or {}).items()}}
    missing = [b for b in bands if b not in zps]
    if missing:
        raise InputError(tile, str(store), f"no zeropoint for band(s) {missing}")
    pixel_scale = float(attrs.get("pixel_scale") or survey["pixel_scale"])

    with np.errstate(invalid="ignore"):
        nodata = ~(np.isfinite(invvar) & (invvar > 0)) | ~np.isfinite(image)
    bits[nodata] |= np.uint16(bit("nodata"))
    masked = (bits & np.uint16(mask_value(config["detect"]["mask_bits"]))) != 0
    masked |= nodata
    image[~np.isfinite(image)] = 0.0
    sigma = np.empty_like(invvar)
    for b in range(len(bands)):
        if nodata[b].any():
            sigma[b] = sigma_from_invvar(invvar[b])
        else:
            np.sqrt(invvar[b], out=sigma[b])
            np.divide(np.float32(1), sigma[b], out=sigma[b])
    return TileData(
        tile=tile,
        store=store,
        bands=bands,
        image=image,
        sigma=sigma,
        bits=bits,
        masked=masked,
        pixel_scale=pixel_scale,
        zeropoints={b: zps[b] for b in bands},
        flux_unit=str(attrs.get("flux_unit") or survey.get("flux_unit", "nanomaggy")),
        attrs=attrs,
    )
