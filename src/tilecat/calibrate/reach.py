"""Tree-consistent maps: the training prior as a fixed point of the aggregate's EM.

A conditional question of the morphology tree is calibrated on the objects it applies
to (by truth), but the aggregate step estimates its prior over *every* object, each
weighted by its calibrated probability of reaching the question (the product of its
parents' answers: :func:`tilecat.priors.em.path_weights`). An object of another branch
then adds, with its small reach weight, its outputs for a question that does not apply
to it: an edge-on disk that is 5% "smooth" adds 5% of an object to the "cigar" answer
of roundness. With the trained morphology model on 24000 held-out labelled stamps the
reach-weighted mean of the BCTS-calibrated roundness is round 0.377 / between 0.585 /
cigar 0.0375 while the labelled fractions are 0.402 / 0.568 / 0.030 (bulge size large
0.308 against 0.296), so EM, started at ``P_T``, walks away from it even on a survey
with the training mix (96000 objects: cigar +81%, round -8%, bulge size large +8%).

:func:`tree_consistent` adds to each conditional question's BCTS biases the offsets
that make the reach-weighted mean of its calibrated outputs over the whole labelled set
equal its class fractions there, parents first (a child's reach weights use its
parents' adjusted maps). ``P_T`` is then an exact fixed point of EM on the labelled set,
and EM on a survey moves only for what differs from it. The price is in the
conditional calibration on the objects the question applies to (their mean output no
longer equals the class fractions exactly), which the card's metrics show (``after``).
The root question (no parents) is unchanged: its weights are all 1 and BCTS already
matches its fractions.

Only BCTS maps are adjusted (an offset is a change of their biases, so the card keeps
its form); temperature scaling has no biases by design and isotonic maps are left as
they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .calibrators import BiasTemperature, Calibrator

__all__ = ["tree_consistent", "reach_offsets", "morphology_paths"]


def reach_offsets(cal: BiasTemperature, p: np.ndarray, weights: np.ndarray,
                  target: np.ndarray, *, tol: float = 1e-10, max_iter: int = 1000
                  ) -> np.ndarray:
    """Bias offsets ``d`` (``d_0 = 0``) with ``sum_i w_i q_i(b + d) / sum_i w_i = target``.

    Parameters
    ----------
    cal : BiasTemperature
        The fitted map (temperature ``T``, biases ``b``).
    p : ndarray, shape (N, K)
        Raw probabilities of every labelled object.
    weights : ndarray, shape (N,)
        Each object's probability of reaching the question (>= 0).
    target : ndarray, shape (K,)
        Class fractions to match (positive, summing to 1).

    Returns
    -------
    ndarray, shape (K,)
        The offsets, found by the multiplicative fixed point ``d += log(target / mean)``
        (iterative proportional fitting of the weighted mean; it converges because the
        weighted mean of class c increases with ``d_c``).
    """
    w = np.asarray(weights, np.float64)
    target = np.asarray(target, np.float64)
    d = np.zeros(len(target))
    if w.sum() <= 0:
        return d
    b = np.asarray(cal.bias, np.float64)
    for _ in range(max_iter):
        q = BiasTemperature(cal.temperature, tuple(b + d)).apply(p)
        mean = (w[:, None] * q).sum(axis=0) / w.sum()
        step = np.log(target / np.maximum(mean, 1e-300))
        d = d + step - step[0]
        if float(np.abs(step - step[0]).max()) < tol:
            break
    return d


def morphology_paths(names: Sequence[str]
                     ) -> dict[str, tuple[tuple[str, tuple[int, ...]], ...]]:
    """The morphology tree paths (answer indices) of the questions in ``names``."""
    from ..morphology.tree import QUESTIONS
    from ..priors.tree import MORPHOLOGY_PATHS, parents

    answers = {q.name: q.answers for q in QUESTIONS}
    return {n: parents(n, answers) for n in names if n in MORPHOLOGY_PATHS}


def tree_consistent(calibrators: Mapping[str, Calibrator], probs: Mapping[str, np.ndarray],
                    priors: Mapping[str, np.ndarray],
                    paths: Mapping[str, tuple[tuple[str, tuple[int, ...]], ...]]
                    ) -> dict[str, Calibrator]:
    """The maps with each conditional question's BCTS biases made tree-consistent.

    Parameters
    ----------
    calibrators : mapping
        Question -> its map fitted on the objects it applies to.
    probs : mapping
        Question -> raw probabilities ``(N, K)`` of *every* labelled object (the same N
        objects for all questions).
    priors : mapping
        Question -> its class fractions among the labelled objects it applies to
        (``P_T`` of the calibrated outputs), shape ``(K,)``.
    paths : mapping
        Question -> its path from the root as (parent, answer indices) pairs
        (:func:`morphology_paths`).

    Returns
    -------
    dict
        Question -> map; adjusted BCTS maps for questions with a path whose parents
        all have maps, the given map otherwise.
    """
    from ..priors.em import path_weights
    from ..priors.tree import parents_first

    out = dict(calibrators)
    calibrated: dict[str, np.ndarray] = {}
    for name in parents_first(list(calibrators), paths):
        cal = calibrators[name]
        p = np.asarray(probs[name], np.float64)
        path = paths.get(name, ())
        if path and isinstance(cal, BiasTemperature) and all(q in calibrated for q, _ in path):
            w = path_weights(calibrated, path, len(p))
            ok = np.isfinite(p).all(axis=1) & np.isfinite(w)
            target = np.asarray(priors[name], np.float64)
            d = reach_offsets(cal, p[ok], w[ok], target / target.sum())
            bias = np.asarray(cal.bias, np.float64) + d
            cal = BiasTemperature(cal.temperature,
                                  tuple(float(np.round(v, 6)) for v in bias - bias[0]))
            out[name] = cal
        calibrated[name] = cal.apply(p)
    return out
