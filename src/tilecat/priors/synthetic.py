"""Synthetic classifiers with exact posteriors, to validate calibration and prior correction.

Each object has a feature ``x`` drawn from known class-conditional densities, so the
posterior under the training priors ``P_T(c | x)`` is known exactly. A "network"
output is that posterior distorted by a temperature (``T < 1``: overconfident), which
temperature scaling can undo; a survey drawn with other priors then tests the prior
correction and EM.

Morphology: every question of the decision tree gets ``x ~ N(mu_a, I_2)`` with the
answers' means on a circle (radius = separation); answers follow the tree (a question
that does not apply still gets an ``x``, drawn from the training mixture).
Photo-z: ``z`` piecewise uniform on the bins of a :class:`~tilecat.photoz.grid.ZGrid`
with bin probabilities N(z), ``x ~ N(z, sigma (1 + z))``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "TRAIN_MIX",
    "SEPARATION",
    "shifted_mix",
    "draw_tree",
    "tree_outputs",
    "nz_shape",
    "draw_z",
    "photoz_outputs",
    "answer_fractions",
]

#: training priors P_T(answer | question applies) of the synthetic classifier
TRAIN_MIX: dict[str, dict[str, float]] = {
    "t": {"smooth": 0.35, "featured": 0.5, "artifact": 0.15},
    "edge_on": {"yes": 0.2, "no": 0.8},
    "spiral_arms": {"yes": 0.6, "no": 0.4},
    "spin": {"S": 0.5, "Z": 0.5},
    "bar": {"strong": 0.2, "weak": 0.2, "none": 0.6},
    "bulge_size": {"none": 0.15, "small": 0.35, "moderate": 0.35, "large": 0.15},
    "merger": {"yes": 0.2, "no": 0.8},
    "roundness": {"round": 0.4, "between": 0.4, "cigar": 0.2},
}

#: distance of the answers' means from the origin (class separation), per question
#: (about a CNN's accuracy on bright galaxies: 95-99% for the top-level question)
SEPARATION: dict[str, float] = {
    "t": 2.8, "edge_on": 2.2, "spiral_arms": 1.8, "spin": 2.0, "bar": 2.0,
    "bulge_size": 2.4, "merger": 2.0, "roundness": 2.0,
}


def shifted_mix(mix: Mapping[str, Mapping[str, float]] = TRAIN_MIX,
                factors: Mapping[str, Mapping[str, float]] | None = None
                ) -> dict[str, dict[str, float]]:
    """Priors with some answers made more or less common (renormalised per question).

    Default factors: mergers 10x rarer, edge-on 3x more common.
    """
    factors = factors or {"merger": {"yes": 0.1}, "edge_on": {"yes": 3.0}}
    out = {}
    for q, answers in mix.items():
        p = {a: float(v) * float((factors.get(q) or {}).get(a, 1.0)) for a, v in answers.items()}
        s = sum(p.values())
        out[q] = {a: v / s for a, v in p.items()}
    return out


def _means(k: int, radius: float) -> np.ndarray:
    ang = 2 * np.pi * np.arange(k) / k
    return radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)


def draw_tree(n: int, mix: Mapping[str, Mapping[str, float]], rng: np.random.Generator
              ) -> np.ndarray:
    """Answers of ``n`` objects following the decision tree with priors ``mix``.

    Returns
    -------
    ndarray of int64, shape (n, n_questions)
        Answer index per question, -1 where the question does not apply (as
        :func:`tilecat.morphology.labels.encode`).
    """
    from ..morphology.tree import QUESTIONS
    from .tree import MORPHOLOGY_PATHS, parents_first

    names = [q.name for q in QUESTIONS]
    out = np.full((n, len(QUESTIONS)), -1, dtype=np.int64)

    def reached(name: str, drawn: set[str]) -> np.ndarray:
        ok = np.ones(n, bool)
        for parent, lead in MORPHOLOGY_PATHS[name]:
            if parent in drawn:
                pq = QUESTIONS[names.index(parent)]
                ok &= np.isin(out[:, names.index(parent)], [pq.answers.index(a) for a in lead])
        return ok

    # draw in output order (the random stream of earlier versions), from the parents
    # drawn so far; then drop the answers whose later-drawn parents do not lead there
    for j, q in enumerate(QUESTIONS):
        ok = reached(q.name, set(names[:j]))
        p = np.array([mix[q.name][a] for a in q.answers])
        out[ok, j] = rng.choice(len(q.answers), size=int(ok.sum()), p=p / p.sum())
    for name in parents_first(names, MORPHOLOGY_PATHS):
        out[~reached(name, set(names)), names.index(name)] = -1
    return out


def tree_outputs(targets: np.ndarray, rng: np.random.Generator, *, temperature: float = 1.0,
                 train_mix: Mapping[str, Mapping[str, float]] = TRAIN_MIX,
                 separation: Mapping[str, float] = SEPARATION
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Classifier outputs for objects with answers ``targets``.

    Parameters
    ----------
    targets : ndarray (n, n_questions)
        From :func:`draw_tree` (-1: not applicable; ``x`` then comes from the training
        mixture).
    temperature : float
        Distortion of the raw outputs: ``raw ∝ exact^(1/temperature)``.

    Returns
    -------
    (raw, exact) : dict, dict
        Question -> ``(n, K)`` float64: distorted outputs and exact ``P_T(a | x)``.
    """
    from ..morphology.tree import QUESTIONS

    raw, exact = {}, {}
    n = targets.shape[0]
    for j, q in enumerate(QUESTIONS):
        k = len(q.answers)
        mu = _means(k, separation[q.name])
        pt = np.array([train_mix[q.name][a] for a in q.answers])
        pt = pt / pt.sum()
        y = targets[:, j].copy()
        free = y < 0
        y[free] = rng.choice(k, size=int(free.sum()), p=pt)
        x = mu[y] + rng.standard_normal((n, 2))
        loglik = -0.5 * ((x[:, None, :] - mu[None, :, :]) ** 2).sum(axis=2)
        logpost = loglik + np.log(pt)
        logpost -= logpost.max(axis=1, keepdims=True)
        p = np.exp(logpost)
        exact[q.name] = p / p.sum(axis=1, keepdims=True)
        r = np.exp(logpost / temperature)
        raw[q.name] = r / r.sum(axis=1, keepdims=True)
    return raw, exact


def nz_shape(grid: Any, z0: float, alpha: float = 2.0) -> np.ndarray:
    """Bin probabilities of ``N(z) ∝ z^alpha exp(-(z / z0)^1.5)`` on ``grid`` (sums to 1)."""
    c = grid.centres
    n = c ** alpha * np.exp(-(c / z0) ** 1.5)
    return n / n.sum()


def draw_z(n: int, nz: np.ndarray, grid: Any, rng: np.random.Generator) -> np.ndarray:
    """Redshifts with bin probabilities ``nz``, uniform inside each bin, (n,)."""
    k = rng.choice(grid.n_bins, size=n, p=nz / nz.sum())
    return grid.z_min + (k + rng.random(n)) * grid.width


def photoz_outputs(z: np.ndarray, prior_train: np.ndarray, grid: Any, rng: np.random.Generator,
                   *, sigma: float = 0.05, temperature: float = 1.0, sub: int = 16
                   ) -> tuple[np.ndarray, np.ndarray]:
    """PDF outputs for objects at redshifts ``z``: ``x ~ N(z, sigma (1 + z))``.

    Returns
    -------
    (raw, exact) : ndarray (n, K), ndarray (n, K)
        ``exact`` = P_T(bin | x) with the training N(z) ``prior_train`` (piecewise
        uniform within bins, integrated on ``sub`` points per bin); ``raw`` is it
        distorted by ``temperature``.
    """
    z = np.asarray(z, np.float64)
    s = sigma * (1.0 + z)
    x = z + s * rng.standard_normal(z.shape)
    fine = grid.z_min + (np.arange(grid.n_bins * sub) + 0.5) * grid.width / sub
    sf = sigma * (1.0 + fine)
    like = np.exp(-0.5 * ((x[:, None] - fine[None, :]) / sf[None, :]) ** 2) / sf[None, :]
    like = like.reshape(len(z), grid.n_bins, sub).mean(axis=2)
    with np.errstate(divide="ignore"):
        logpost = np.log(like) + np.log(np.asarray(prior_train, np.float64))
    logpost -= logpost.max(axis=1, keepdims=True)
    p = np.exp(logpost)
    exact = p / p.sum(axis=1, keepdims=True)
    r = np.exp(logpost / temperature)
    return r / r.sum(axis=1, keepdims=True), exact


def answer_fractions(targets: np.ndarray) -> dict[str, np.ndarray]:
    """True fractions of each answer among objects a question applies to (per question)."""
    from ..morphology.tree import QUESTIONS

    out = {}
    for j, q in enumerate(QUESTIONS):
        y = targets[:, j]
        y = y[y >= 0]
        out[q.name] = (np.bincount(y, minlength=len(q.answers)) / max(len(y), 1)).astype(float)
    return out
