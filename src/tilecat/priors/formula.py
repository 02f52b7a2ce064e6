"""The prior-correction formula (DESIGN.md §5; Saerens, Latinne & Decaestecker 2002).

A classifier trained with class priors ``P_T(c)`` outputs ``P_T(c | x)``. For a survey
whose classes occur with priors ``P(c)``, Bayes' rule with the same class-conditional
densities ``p(x | c)`` gives

    P(c | x) = P_T(c | x) w_c / sum_c' P_T(c' | x) w_c',    w_c = P(c) / P_T(c).

This module is the one place that formula is written: :func:`correct` for ``K``
classes along any axis (morphology answers, redshift bins with N(z) as the prior)
and :func:`correct_binary` for independent two-class problems (the defect masker's
per-class sigmoid outputs).
"""

from __future__ import annotations

import numpy as np

__all__ = ["prior_weights", "correct", "correct_binary", "implied_prior"]


def prior_weights(prior_train: np.ndarray, prior_new: np.ndarray) -> np.ndarray:
    """The ratios ``w_c = P(c) / P_T(c)`` (float64, shape ``(K,)``).

    A class with ``P_T(c) = 0`` and ``P(c) = 0`` gets ``w_c = 0`` (it stays impossible).

    Parameters
    ----------
    prior_train, prior_new : array_like, shape (K,)
        Training and survey priors (non-negative; need not be normalised, only their
        ratios matter up to a common factor).

    Raises
    ------
    ValueError
        Shapes differ, a prior is negative or not finite, or a class the model never
        saw in training (``P_T(c) = 0``) has ``P(c) > 0``: the formula cannot
        create probability the classifier never assigns.
    """
    pt = np.asarray(prior_train, dtype=np.float64)
    pn = np.asarray(prior_new, dtype=np.float64)
    if pt.shape != pn.shape or pt.ndim != 1:
        raise ValueError(f"priors must be 1-d of equal length, got {pt.shape} and {pn.shape}")
    if not (np.isfinite(pt).all() and np.isfinite(pn).all()) or (pt < 0).any() or (pn < 0).any():
        raise ValueError("priors must be finite and non-negative")
    bad = (pt <= 0) & (pn > 0)
    if bad.any():
        raise ValueError(f"classes {np.flatnonzero(bad).tolist()} have training prior 0 but "
                         "survey prior > 0")
    return np.divide(pn, pt, out=np.zeros_like(pn), where=pt > 0)


def correct(p: np.ndarray, prior_train: np.ndarray, prior_new: np.ndarray,
            axis: int = -1) -> np.ndarray:
    """Prior-correct probabilities over ``K`` classes.

    Parameters
    ----------
    p : ndarray, shape (..., K, ...)
        Probabilities ``P_T(c | x)`` under the training priors, classes along ``axis``
        (rows need not sum exactly to 1: the result is renormalised).
    prior_train, prior_new : array_like, shape (K,)
        ``P_T(c)`` and ``P(c)``.
    axis : int
        The class axis of ``p``.

    Returns
    -------
    ndarray of float64, same shape as ``p``
        ``P(c | x)``; where every class of a row has weight 0 (the row is impossible
        under the new priors) the row is ``prior_new`` normalised. Equal priors
        return ``p`` normalised.
    """
    p = np.asarray(p, dtype=np.float64)
    w = prior_weights(prior_train, prior_new)
    shape = [1] * p.ndim
    shape[axis] = w.size
    q = p * w.reshape(shape)
    s = q.sum(axis=axis, keepdims=True)
    fallback = np.asarray(prior_new, np.float64) / max(float(np.sum(prior_new)), 1e-300)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = q / s
    return np.where(s > 0, out, fallback.reshape(shape))


def correct_binary(p: np.ndarray, p_train: float, p_survey: float) -> np.ndarray:
    """Two-class form of :func:`correct` for a probability ``p`` of "class present".

    ``p' = p r1 / (p r1 + (1 - p) r0)`` with ``r1 = P / P_T``, ``r0 = (1 - P) / (1 - P_T)``.
    Computed in float32 (the masker's per-pixel maps are large).

    Parameters
    ----------
    p : ndarray (any shape)
        Probabilities of the positive class.
    p_train, p_survey : float
        Training and survey rate of the positive class, in (0, 1).

    Returns
    -------
    ndarray of float32, same shape as ``p`` (0 where both terms vanish).
    """
    r1 = p_survey / p_train
    r0 = (1.0 - p_survey) / (1.0 - p_train)
    p = np.asarray(p, dtype=np.float32)
    num = p * np.float32(r1)
    den = num + (1.0 - p) * np.float32(r0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / den, 0.0)
    return out.astype(np.float32, copy=False)


def implied_prior(q: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """The prior that calibrated posteriors carry: their mean over a labelled set.

    Parameters
    ----------
    q : ndarray, shape (N, K)
        Calibrated probabilities (or PDFs on a redshift grid, per bin) of N objects.
    floor : float
        Smallest value kept (so that EM can move every bin or class).

    Returns
    -------
    ndarray, shape (K,)
        ``mean_i q_i``, floored at ``floor`` and normalised to sum 1.
    """
    m = np.maximum(np.asarray(q, np.float64).mean(axis=0), floor)
    return m / m.sum()
