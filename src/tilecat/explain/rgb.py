"""Colour pictures of multi-band stamps: Lupton et al. (2004) arcsinh RGB (astropy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["rgb_bands", "lupton_rgb"]


def rgb_bands(bands: Sequence[str]) -> tuple[int, int, int]:
    """Indices of the bands shown as (R, G, B).

    ``(i, r, g)`` when present (SDSS convention), else ``(z, r, g)``, else the last
    three bands reddest first (a single band is shown grey).
    """
    names = list(bands)
    for trio in (("i", "r", "g"), ("z", "r", "g")):
        if all(b in names for b in trio):
            return tuple(names.index(b) for b in trio)  # type: ignore[return-value]
    if len(names) >= 3:
        return (len(names) - 1, len(names) - 2, len(names) - 3)
    return (len(names) - 1, max(len(names) - 2, 0), 0)


def lupton_rgb(stamp: np.ndarray, bands: Sequence[str], *, stretch: float | None = None,
               q: float = 10.0) -> np.ndarray:
    """An 8-bit RGB picture of one stamp.

    Parameters
    ----------
    stamp : ndarray, shape (n_band, S, S)
        arcsinh(F / sigma_band) as stored in cutouts.zarr; inverted to F / sigma
        (flux in units of each band's noise) before the Lupton stretch.
    bands : sequence of str
        Band names of the stamp's first axis.
    stretch, q : float
        ``astropy.visualization.make_lupton_rgb`` parameters (in noise units);
        ``stretch`` defaults to max(3, 5 % of the brightest pixel's mean intensity),
        so that faint and bright objects both show structure.

    Returns
    -------
    ndarray of uint8, shape (S, S, 3)
        Row 0 at the bottom when shown with ``origin='lower'``.
    """
    from astropy.visualization import make_lupton_rgb

    lin = np.sinh(np.asarray(stamp, dtype=np.float64))
    r, g, b = (lin[k] for k in rgb_bands(bands))
    if stretch is None:
        stretch = max(3.0, 0.05 * float(np.percentile((r + g + b) / 3, 99.9)))
    return make_lupton_rgb(r, g, b, minimum=0.0, stretch=stretch, Q=q)
