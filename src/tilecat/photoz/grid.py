"""The fixed redshift bin grid of the photo-z PDFs.

A :class:`ZGrid` is ``K`` equal bins between ``z_min`` and ``z_max``; the PDF of an
object is the probability of each bin (``K`` numbers summing to 1), with the density
taken as uniform inside a bin. The grid is stored in the model card and in the
catalog's file metadata (key ``tilecat.z_grid``, see :meth:`ZGrid.to_meta`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ModelError

__all__ = ["ZGrid", "DEFAULT_GRID", "META_KEY"]

#: Parquet file-metadata key holding the grid (JSON, see :meth:`ZGrid.to_meta`).
META_KEY = "tilecat.z_grid"


@dataclass(frozen=True)
class ZGrid:
    """Equal-width redshift bins.

    Attributes
    ----------
    z_min, z_max : float
        Range covered by the bins.
    n_bins : int
        Number of bins ``K``.
    """

    z_min: float = 0.0
    z_max: float = 1.5
    n_bins: int = 60

    def __post_init__(self) -> None:
        if not (self.z_max > self.z_min >= 0.0) or int(self.n_bins) < 2:
            raise ModelError(f"bad redshift grid: z_min={self.z_min}, z_max={self.z_max}, "
                             f"n_bins={self.n_bins} (need 0 <= z_min < z_max, n_bins >= 2)")

    @property
    def edges(self) -> np.ndarray:
        """Bin edges, float64 ``(K + 1,)``."""
        return np.linspace(self.z_min, self.z_max, int(self.n_bins) + 1)

    @property
    def centres(self) -> np.ndarray:
        """Bin centres, float64 ``(K,)``."""
        e = self.edges
        return 0.5 * (e[:-1] + e[1:])

    @property
    def width(self) -> float:
        """Bin width."""
        return (self.z_max - self.z_min) / int(self.n_bins)

    def two_hot(self, z: np.ndarray) -> np.ndarray:
        """Soft training targets: each ``z`` split between its two nearest bin centres.

        The weights are linear in the distance, so the mean of the target over the bin
        centres equals ``z`` exactly (inside the range of the centres; values outside
        go fully to the first or last bin).

        Parameters
        ----------
        z : ndarray (N,)
            True redshifts.

        Returns
        -------
        ndarray of float32, shape (N, K)
        """
        z = np.asarray(z, dtype=np.float64)
        k = int(self.n_bins)
        u = np.clip((z - self.z_min) / self.width - 0.5, 0.0, k - 1.0)
        lo = np.minimum(np.floor(u).astype(np.int64), k - 2)
        w_hi = u - lo
        out = np.zeros((z.shape[0], k), np.float32)
        rows = np.arange(z.shape[0])
        out[rows, lo] = 1.0 - w_hi
        out[rows, lo + 1] += w_hi
        return out

    def histogram(self, z: np.ndarray) -> np.ndarray:
        """Fraction of ``z`` values per bin (values outside go to the end bins), ``(K,)``."""
        z = np.clip(np.asarray(z, float), self.z_min, np.nextafter(self.z_max, -np.inf))
        h, _ = np.histogram(z, bins=self.edges)
        return h / max(h.sum(), 1)

    def to_meta(self) -> dict[str, Any]:
        """JSON-able description (file metadata / model card)."""
        return {
            "z_min": float(self.z_min), "z_max": float(self.z_max), "n_bins": int(self.n_bins),
            "edges": [round(float(v), 10) for v in self.edges],
            "centres": [round(float(v), 10) for v in self.centres],
            "pdf": "probability of each bin (sums to 1), uniform density inside a bin",
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "ZGrid":
        """Inverse of :meth:`to_meta` (also accepts just z_min, z_max, n_bins)."""
        try:
            return cls(float(meta["z_min"]), float(meta["z_max"]), int(meta["n_bins"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"redshift grid description {meta!r} is incomplete: {exc}") from exc


DEFAULT_GRID = ZGrid()
