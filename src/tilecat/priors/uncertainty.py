"""Statistical uncertainty of EM prior estimates (observed Fisher information).

EM maximises the survey log-likelihood ``L(P) = sum_i w_i log sum_c p_ic P_c / P_T,c``
(:mod:`tilecat.priors.em`); near the maximum its curvature gives the estimator's
covariance. With ``r_ic = p_ic / P_T,c`` and ``s_i = sum_c r_ic P_c``, in the free
coordinates ``P_1 .. P_{K-1}`` (``P_K = 1 - sum``) the observed information is
``I = sum_i w_i d_i d_i^T / s_i^2`` with ``d_ic = r_ic - r_iK``. A classifier that
barely separates two classes makes ``I`` nearly singular: the standard errors of
their priors are then large however many objects the survey has, which is why EM
cannot be trusted on such a question (the EM self-test of
:mod:`tilecat.calibrate.selftest` measures the same thing empirically).
"""

from __future__ import annotations

import numpy as np

__all__ = ["prior_standard_errors"]


def prior_standard_errors(p: np.ndarray, prior_train: np.ndarray, prior: np.ndarray,
                          weights: np.ndarray | None = None) -> np.ndarray:
    """Standard errors of the EM class priors at ``prior``.

    Parameters
    ----------
    p : ndarray, shape (N, K)
        Calibrated probabilities under the training priors.
    prior_train : ndarray, shape (K,)
        ``P_T``.
    prior : ndarray, shape (K,)
        The estimate (the EM fixed point).
    weights : ndarray, shape (N,), optional
        Per-object weights (probability that the question applies); default 1.

    Returns
    -------
    ndarray, shape (K,)
        Standard error of each class prior (inf for a direction the data do not
        constrain at all).
    """
    p = np.asarray(p, np.float64)
    k = p.shape[1]
    if k < 2 or p.shape[0] == 0:
        return np.full(k, np.inf)
    pt = np.asarray(prior_train, np.float64)
    r = p / (pt / pt.sum())
    s = r @ (np.asarray(prior, np.float64) / np.sum(prior))
    w = np.ones(len(p)) if weights is None else np.asarray(weights, np.float64)
    ok = (s > 0) & (w > 0)
    d = (r[ok, :-1] - r[ok, -1:]) / s[ok, None]
    info = (d * w[ok, None]).T @ d
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return np.full(k, np.inf)
    var = np.concatenate([np.diag(cov), [cov.sum()]])  # P_K = 1 - sum of the others
    return np.sqrt(np.where(var >= 0, var, np.inf))
