"""The tile's pixel grid: every band must share one (same shape, same WCS).

Two bands are on one grid when their shapes are equal and the sky position of each
of five test pixels (the four corners and the centre) under the first band's WCS
maps back, under the other band's WCS, to within ``survey.wcs_tolerance_pix`` pixels.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["GridPlane", "celestial_wcs", "check_grid", "pixel_scale_arcsec", "wcs_cards"]


@dataclass(frozen=True)
class GridPlane:
    """One band's image plane as the grid check sees it.

    Attributes
    ----------
    band : str
    label : str
        ``path[HDU]`` of the image (for messages).
    path : str
    shape : tuple of int
        ``(ny, nx)``.
    header : astropy.io.fits.Header
    """

    band: str
    label: str
    path: str
    shape: tuple[int, int]
    header: Any


def celestial_wcs(header: Any, tile: str, path: str) -> Any:
    """The celestial (2-d) WCS of an image header.

    Raises
    ------
    InputError
        The header has no usable celestial WCS.
    """
    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            w = WCS(header)
            cel = w.celestial
    except Exception as exc:
        raise InputError(tile, path, f"image header has an invalid WCS: {exc}") from exc
    if not cel.has_celestial or cel.naxis != 2:
        raise InputError(tile, path, "image header has no celestial WCS (RA/Dec axes)")
    return cel


def wcs_cards(wcs: Any) -> dict[str, Any]:
    """The WCS as a dict of FITS cards (``astropy.wcs.WCS(dict)`` reads it back)."""
    from astropy.wcs import FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        hdr = wcs.to_header(relax=True)
    return {k: hdr[k] for k in hdr if k not in ("COMMENT", "HISTORY", "")}


def pixel_scale_arcsec(wcs: Any) -> float:
    """Mean pixel scale at the reference pixel, arcsec/pixel."""
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)


def _test_pixels(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = shape
    x = np.array([0, nx - 1, 0, nx - 1, (nx - 1) / 2], dtype=float)
    y = np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2], dtype=float)
    return x, y


def check_grid(planes: Sequence[GridPlane], tolerance_pix: float, tile: str) -> Any:
    """Check that every band shares the first band's pixel grid.

    Parameters
    ----------
    planes : sequence of GridPlane
        One per band, in band order.
    tolerance_pix : float
        Largest allowed offset (pixels) at the test pixels.
    tile : str

    Returns
    -------
    astropy.wcs.WCS
        The tile's celestial WCS (the first band's).

    Raises
    ------
    InputError
        Naming both band files: a shape mismatch, a missing WCS, or WCS offsets above
        the tolerance.
    """
    ref = planes[0]
    ref_wcs = celestial_wcs(ref.header, tile, ref.path)
    x, y = _test_pixels(ref.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        world = ref_wcs.pixel_to_world_values(x, y)
    for p in planes[1:]:
        if p.shape != ref.shape:
            raise InputError(
                tile, p.path, f"band {p.band} image {p.label} has shape {p.shape}, band "
                f"{ref.band} image {ref.label} has {ref.shape}: bands must share one pixel grid"
            )
        w = celestial_wcs(p.header, tile, p.path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                xb, yb = w.world_to_pixel_values(*world)
        except Exception as exc:
            raise InputError(
                tile, p.path, f"band {p.band}: cannot map band {ref.band}'s sky positions "
                f"through this WCS: {exc}"
            ) from exc
        off = np.hypot(np.asarray(xb) - x, np.asarray(yb) - y)
        worst = int(np.nanargmax(off)) if np.isfinite(off).any() else 0
        if not np.all(np.isfinite(off)) or off.max() > tolerance_pix:
            raise InputError(
                tile, p.path, f"band {p.band} image {p.label} is not on the pixel grid of "
                f"band {ref.band} image {ref.label}: WCS differ by {float(off[worst]):.3g} px at "
                f"pixel (x={x[worst]:g}, y={y[worst]:g}), more than "
                f"survey.wcs_tolerance_pix={tolerance_pix:g}"
            )
    return ref_wcs
