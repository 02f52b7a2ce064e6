"""Map the simulator's truth labels to per-question training targets and back.

Truth columns (SIM_CONTRACT): ``t_class`` (smooth|featured|artifact), ``edge_on``
(bool), ``spiral_arms`` (bool), ``spin`` (S|Z|none), ``bar`` (strong|weak|none),
``bulge_size`` (none|small|moderate|large), ``merger`` (bool), ``roundness``
(round|between|cigar|none).

Targets are an int64 array ``(N, n_questions)``: the answer index of each question,
or ``-1`` where the question does not apply to that galaxy (per the tree in
:mod:`tilecat.morphology.tree`) or its truth has no answer; the loss ignores -1.

The network's training targets (``encode(..., training=True)``) hold answers the tree
does not ask for: the bar and bulge size of face-on mergers (their primary's bar, which
the simulator never draws for a merger, and bulge-to-total ratio). The tree does not ask
a merging pair for one bar or bulge, but the shipped weights learnt them, and a retrain
from the recipe must see the same targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .tree import QUESTIONS

__all__ = ["encode", "decode", "applies", "priors", "NOT_APPLICABLE", "IGNORE"]

#: target value of a question that does not apply
IGNORE: int = -1

#: truth value written by :func:`decode` for a question that does not apply
NOT_APPLICABLE: dict[str, Any] = {
    "t_class": "artifact",
    "edge_on": False,
    "spiral_arms": False,
    "spin": "none",
    "bar": "none",
    "bulge_size": "none",
    "merger": False,
    "roundness": "none",
}


def _as_str(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == bool:
        return np.where(arr, "yes", "no")
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in arr.ravel()],
                    dtype=object).reshape(arr.shape)


def applies(t_class: np.ndarray, edge_on: np.ndarray, spiral_arms: np.ndarray,
            merger: np.ndarray) -> dict[str, np.ndarray]:
    """Which questions apply to each galaxy, from its truth (tree of :mod:`.tree`).

    Parameters
    ----------
    t_class : array of str, shape (N,)
    edge_on, spiral_arms, merger : array of bool, shape (N,)

    Returns
    -------
    dict
        Question name -> bool array (N,).
    """
    t = _as_str(t_class)
    featured = t == "featured"
    face = featured & ~np.asarray(edge_on, bool)
    single = face & ~np.asarray(merger, bool)
    return {
        "t": np.ones(t.shape, bool),
        "edge_on": featured,
        "spiral_arms": face,
        "spin": face & np.asarray(spiral_arms, bool),
        "bar": single,
        "bulge_size": single,
        "merger": t != "artifact",
        "roundness": t == "smooth",
    }


def encode(truth: Mapping[str, Any], training: bool = False) -> np.ndarray:
    """Truth label columns -> targets.

    Parameters
    ----------
    truth : mapping
        Column name -> array (N,) for every ``Question.truth`` column.
    training : bool
        The network's training targets: also the bar and bulge size of face-on
        mergers (see the module docstring). False: the tree's questions only
        (calibration, metrics, survey priors).

    Returns
    -------
    ndarray of int64, shape (N, n_questions)
        Answer index per question, ``IGNORE`` (-1) where it does not apply or the
        truth value is not one of the answers (e.g. spin ``none``).
    """
    mask = applies(truth["t_class"], truth["edge_on"], truth["spiral_arms"], truth["merger"])
    if training:  # every face-on featured galaxy (spiral_arms' set), mergers included
        mask["bar"] = mask["bulge_size"] = mask["spiral_arms"]
    n = len(np.asarray(truth["t_class"]))
    out = np.full((n, len(QUESTIONS)), IGNORE, dtype=np.int64)
    for j, q in enumerate(QUESTIONS):
        values = _as_str(truth[q.truth])
        for k, a in enumerate(q.answers):
            out[(values == a) & mask[q.name], j] = k
    return out


def decode(targets: np.ndarray) -> dict[str, np.ndarray]:
    """Targets -> truth label columns (inverse of :func:`encode` on tree-consistent truth).

    Booleans come back as bool arrays; questions with ``IGNORE`` get the
    :data:`NOT_APPLICABLE` value.
    """
    targets = np.asarray(targets)
    out: dict[str, np.ndarray] = {}
    for j, q in enumerate(QUESTIONS):
        col = targets[:, j]
        answers = np.array(q.answers, dtype=object)
        if q.answers == ("yes", "no"):
            out[q.truth] = np.where(col == IGNORE, NOT_APPLICABLE[q.truth], col == 0).astype(bool)
        else:
            out[q.truth] = np.where(col == IGNORE, NOT_APPLICABLE[q.truth],
                                    answers[np.clip(col, 0, None)]).astype(object)
    return out


def priors(targets: np.ndarray) -> dict[str, dict[str, float]]:
    """Training-set answer frequencies per question, P_T(answer | question applies).

    Returns
    -------
    dict
        Question -> answer -> frequency (0 when the question never applies).
    """
    out: dict[str, dict[str, float]] = {}
    for j, q in enumerate(QUESTIONS):
        col = targets[:, j]
        n = int((col != IGNORE).sum())
        out[q.name] = {a: (float((col == k).sum()) / n if n else 0.0)
                       for k, a in enumerate(q.answers)}
    return out
