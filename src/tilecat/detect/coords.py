"""Sky coordinates of pixel positions from the tile store's WCS.

The store's ``wcs`` attribute is a FITS header, either a dict of card name ->
value (preferred; ``COMMENT``/``HISTORY`` may be lists) or the header as a string
(80-character cards, or cards separated by newlines). Pixel coordinates are
0-based with (0, 0) the centre of the first pixel (numpy / sep convention), i.e.
FITS pixel = tilecat pixel + 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["header_from_attr", "wcs_from_attrs", "pixel_to_sky"]


def header_from_attr(value: Any) -> Any:
    """An ``astropy.io.fits.Header`` from a dict of cards or a header string."""
    from astropy.io import fits

    if isinstance(value, fits.Header):
        return value
    if isinstance(value, str):
        sep = "\n" if "\n" in value else ""
        return fits.Header.fromstring(value, sep=sep)
    if isinstance(value, dict):
        header = fits.Header()
        for key, val in value.items():
            if key in ("COMMENT", "HISTORY", "") or val is None:
                continue
            if isinstance(val, (list, tuple)) and len(val) == 2 and isinstance(val[1], str):
                header[key] = (val[0], val[1])  # (value, comment)
            else:
                header[key] = val
        return header
    raise TypeError(f"unsupported WCS header type {type(value).__name__}")


def wcs_from_attrs(attrs: dict[str, Any]) -> Any:
    """The celestial ``astropy.wcs.WCS`` of a tile store's attributes.

    Raises
    ------
    KeyError
        No ``wcs`` attribute.
    ValueError
        The header holds no celestial WCS.
    """
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    if "wcs" not in attrs:
        raise KeyError("the tile store has no 'wcs' attribute")
    header = header_from_attr(attrs["wcs"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, naxis=2)
    if not wcs.has_celestial:
        raise ValueError("the 'wcs' header has no celestial axes")
    return wcs.celestial


def pixel_to_sky(wcs: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of 0-based pixel positions (x along columns, y along rows)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size == 0:
        return np.zeros(0), np.zeros(0)
    ra, dec = wcs.all_pix2world(x, y, 0)
    return np.asarray(ra, dtype=np.float64) % 360.0, np.asarray(dec, dtype=np.float64)
