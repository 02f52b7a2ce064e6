"""The k-nearest-neighbour photo-z baseline on catalog colours (Pasquet et al. 2019's peer).

Features (a magnitude and adjacent colours) are standardised with the training set's
mean and standard deviation, and ``z_phot`` is the distance-weighted mean redshift
of the ``k`` nearest training objects (:class:`sklearn.neighbors.KNeighborsRegressor`).
``k`` is chosen on a validation set by :func:`select_k` (smallest sigma_NMAD).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .metrics import point_metrics

__all__ = ["KNNPhotoZ", "select_k"]


@dataclass
class KNNPhotoZ:
    """kNN regression of redshift on standardised features.

    Attributes
    ----------
    n_neighbors : int
        ``k``.
    weights : str
        ``"distance"`` (inverse-distance weighted mean) or ``"uniform"``.
    """

    n_neighbors: int = 20
    weights: str = "distance"
    _model: Any = field(default=None, init=False, repr=False)
    _mean: np.ndarray | None = field(default=None, init=False, repr=False)
    _std: np.ndarray | None = field(default=None, init=False, repr=False)

    def fit(self, features: np.ndarray, z: np.ndarray) -> "KNNPhotoZ":
        """Fit on ``features`` (N, F) and redshifts ``z`` (N,); rows with NaN are dropped."""
        from sklearn.neighbors import KNeighborsRegressor

        x = np.asarray(features, np.float64)
        z = np.asarray(z, np.float64)
        ok = np.isfinite(x).all(axis=1) & np.isfinite(z)
        x, z = x[ok], z[ok]
        self._mean = x.mean(axis=0)
        self._std = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        self._model = KNeighborsRegressor(n_neighbors=min(self.n_neighbors, len(z)),
                                          weights=self.weights, algorithm="kd_tree")
        self._model.fit((x - self._mean) / self._std, z)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Redshift estimates (N,); NaN for rows with non-finite features."""
        if self._model is None:
            raise RuntimeError("KNNPhotoZ.predict called before fit")
        x = np.asarray(features, np.float64)
        ok = np.isfinite(x).all(axis=1)
        out = np.full(x.shape[0], np.nan)
        if ok.any():
            out[ok] = self._model.predict((x[ok] - self._mean) / self._std)
        return out


def select_k(train_x: np.ndarray, train_z: np.ndarray, val_x: np.ndarray, val_z: np.ndarray,
             ks: Sequence[int] = (5, 10, 20, 40, 80)) -> tuple[int, dict[int, float]]:
    """The ``k`` giving the smallest sigma_NMAD on the validation set.

    Returns
    -------
    best_k : int
    scores : dict
        k -> validation sigma_NMAD.
    """
    scores = {}
    for k in ks:
        zp = KNNPhotoZ(n_neighbors=int(k)).fit(train_x, train_z).predict(val_x)
        scores[int(k)] = point_metrics(zp, val_z)["sigma_nmad"]
    best = min(scores, key=lambda k: (scores[k], k))
    return best, scores
