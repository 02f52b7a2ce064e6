"""EM self-test on the labelled set: can EM be trusted with this model's outputs?

EM prior estimation is the maximum-likelihood estimate under the model "the calibrated
outputs are the exact posteriors under the training priors". With a weak classifier
the likelihood is nearly flat, and small residual miscalibration drives the estimate
to the edge of the simplex (e.g. 100% of one answer); and a conditional question of
the decision tree is estimated over objects weighted by their probability of reaching
it, so a weak parent question lets objects of other branches leak in (BCTS maps are made
tree-consistent against this, :mod:`tilecat.calibrate.reach`, here on the fitting half as
in the card). The test fits
the calibration maps on a random half of the labelled set (fixed seed), runs EM
exactly as the aggregate step does (all questions jointly, tree weights, every object)
on the other half, and compares each estimate with that half's true class fractions
(same mix, so EM should find them):

* classes: ``max_c |EM_c - true_c| <= 0.02 + 3 sqrt(max_c t_c (1 - t_c) / n)``;
* PDFs: KS distance between the EM N(z) and the true histogram ``<= 0.02 + 1.36 / sqrt(n)``.

The self-test draws both halves from one labelled set, so it cannot see a calibration
map that does not carry over to other observing conditions (EM then drifts on a survey
observed in them while the self-test passes: measured on the shipped morphology model,
whose training-condition calibration gave 3x the true ``bulge_size = moderate``
fraction on a survey in the held-out conditions). The *transfer test*
(:func:`tree_transfer_test`, :func:`pdf_transfer_test`) covers this when a second
labelled set in other conditions is at hand (``tilecat calibrate --check``): the maps
fitted on the whole calibration set, EM run over the whole check set, same tolerance.

Only groups that pass (and whose EM converges), and pass the transfer test where the
card has one, are corrected by EM in the aggregate step (``aggregate.em_require_self_test``,
default true). The test runs plain (ML) EM,
without the aggregate's weak Dirichlet prior: that prior is centred on ``P_T``, which
here is the right answer, and would flatter the test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..priors.formula import implied_prior

__all__ = ["em_self_test", "tree_self_test", "tree_transfer_test", "pdf_transfer_test"]


def em_self_test(method: str, p: np.ndarray, prior: np.ndarray, *, y: np.ndarray | None = None,
                 grid: Any = None, z_true: np.ndarray | None = None,
                 implicit: bool = False) -> dict[str, Any]:
    """Run the self-test for one probability group.

    Parameters
    ----------
    method : str
        Calibration method (:data:`tilecat.calibrate.fit.METHODS`).
    p : ndarray, shape (N, K)
        Raw probabilities of the labelled objects.
    prior : ndarray (K,)
        ``P_T`` the EM starts from (the training prior).
    y : ndarray of int (N,), optional
        True classes (classes), or
    grid, z_true :
        the redshift grid and true redshifts (PDFs).
    implicit : bool
        The calibration map sets its own prior (BCTS, isotonic; any PDF map): EM then
        starts from the fitting half's class fractions (PDFs: the mean calibrated PDF
        of the fitting half, :func:`tilecat.priors.formula.implied_prior`) instead of
        ``prior``.

    Returns
    -------
    dict
        ``ok``, ``n``, ``error`` (max abs error or KS), ``tolerance``, ``converged``,
        ``n_iter``, ``true`` and ``em`` (rounded).
    """
    from .fit import fit_calibrator

    pdf = y is None
    n = p.shape[0]
    perm = np.random.default_rng(0).permutation(n)  # labelled sets may be ordered by class
    a, b = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
    k = p.shape[1]
    if pdf:
        cal = fit_calibrator(method, p[a], grid=grid, z_true=z_true[a])
        true = grid.histogram(z_true[b])
    else:
        cal = fit_calibrator(method, p[a], y[a])
        true = np.bincount(y[b], minlength=k) / max(len(b), 1)
    start = np.asarray(prior, np.float64)
    if implicit and pdf:
        start = implied_prior(cal.apply(p[a]))
    elif implicit:
        start = np.maximum(np.bincount(y[a], minlength=k) / max(len(a), 1), 1e-6)
    return _em_check(cal.apply(p[b]), start, true, pdf)


def _em_check(q: np.ndarray, start: np.ndarray, true: np.ndarray, pdf: bool
              ) -> dict[str, Any]:
    """Plain EM over calibrated outputs ``q`` from ``start``; compare with ``true``."""
    from ..priors.em import em_priors
    from .metrics import ks_distance

    n = q.shape[0]
    start = np.asarray(start, np.float64)
    res = em_priors(q, start / start.sum(), tol=1e-6, max_iter=1000, smooth=1 if pdf else 0)
    est = res.priors["p"]
    if pdf:
        err = ks_distance(est, true)
        tol = 0.02 + 1.36 / np.sqrt(max(n, 1))
    else:
        err = float(np.abs(est - true).max())
        tol = 0.02 + 3.0 * float(np.sqrt(np.max(true * (1 - true)) / max(n, 1)))
    out: dict[str, Any] = {"ok": bool(res.converged and err <= tol), "n": int(n),
                           "error": round(float(err), 5), "tolerance": round(float(tol), 5),
                           "converged": bool(res.converged), "n_iter": int(res.n_iter)}
    if not pdf:
        out["true"] = [round(float(v), 5) for v in true]
        out["em"] = [round(float(v), 5) for v in est]
    return out


def pdf_transfer_test(cal: Any, p: np.ndarray, prior: np.ndarray, grid: Any,
                      z_true: np.ndarray) -> dict[str, Any]:
    """The transfer test of a PDF group: ``cal`` (fitted on the calibration set) applied
    to a check set's PDFs ``p`` (N, K); EM N(z) against the histogram of ``z_true``.

    Returns
    -------
    dict
        As :func:`em_self_test`.
    """
    z = np.asarray(z_true, np.float64)
    p = np.asarray(p, np.float64)
    ok = np.isfinite(z) & np.isfinite(p).all(axis=1)
    return _em_check(cal.apply(p[ok]), prior, grid.histogram(z[ok]), True)


def tree_self_test(method: str, probs: Mapping[str, np.ndarray], targets: Mapping[str, np.ndarray],
                   priors: Mapping[str, np.ndarray], *, implicit: bool = False,
                   min_objects: int = 20) -> dict[str, dict[str, Any]]:
    """The self-test of the morphology questions, run jointly as in the aggregate step.

    Parameters
    ----------
    method : str
        Calibration method of the class groups.
    probs : mapping
        Question -> raw probabilities ``(N, K)`` of every labelled object.
    targets : mapping
        Question -> answer index ``(N,)``, -1 where the question does not apply.
    priors : mapping
        Question -> training prior ``P_T``.
    implicit : bool
        The map sets its own class balance (EM starts from the fitting half's fractions).
    min_objects : int
        Questions with fewer applicable objects in either half are left out.

    Returns
    -------
    dict
        Question -> result (as :func:`em_self_test`).
    """
    from ..morphology.tree import QUESTIONS
    from .calibrators import Identity
    from .fit import fit_calibrator

    names = [q.name for q in QUESTIONS if q.name in probs and q.name in targets]
    if not names:
        return {}
    n = probs[names[0]].shape[0]
    perm = np.random.default_rng(0).permutation(n)
    a, b = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
    cals, starts = {}, {}
    for q in QUESTIONS:
        if q.name not in names:
            continue
        p, y = np.asarray(probs[q.name], np.float64), np.asarray(targets[q.name], np.int64)
        fa = a[y[a] >= 0]
        cals[q.name] = (fit_calibrator(method, p[fa], y[fa]) if len(fa) >= min_objects
                        else Identity())
        starts[q.name] = np.asarray(priors[q.name], np.float64)
        if implicit and len(fa) >= min_objects:
            starts[q.name] = np.maximum(np.bincount(y[fa], minlength=len(q.answers)) / len(fa),
                                        1e-6)
    if method == "bcts":  # as fit_card_calibration: tree-consistent maps (on half a)
        from .reach import morphology_paths, tree_consistent

        cals = tree_consistent(cals, {n: np.asarray(probs[n], np.float64)[a] for n in names},
                               starts, morphology_paths(names))
    entries = [(q, cals[q.name].apply(np.asarray(probs[q.name], np.float64)[b]), starts[q.name],
                np.asarray(targets[q.name], np.int64)[b]) for q in QUESTIONS if q.name in names]
    return _tree_em(entries, min_objects)


def tree_transfer_test(calibrators: Mapping[str, Any], probs: Mapping[str, np.ndarray],
                       targets: Mapping[str, np.ndarray], priors: Mapping[str, np.ndarray], *,
                       min_objects: int = 20) -> dict[str, dict[str, Any]]:
    """The transfer test of the morphology questions on a check set.

    The calibration maps fitted on the whole calibration set are applied to every object
    of a labelled check set observed in other conditions, EM runs as in the aggregate
    step (all questions jointly, tree weights, plain EM) and each estimate is compared
    with the check set's true class fractions (tolerance as :func:`em_self_test`).

    Parameters
    ----------
    calibrators : mapping
        Question -> calibration map (:class:`tilecat.calibrate.calibrators.Calibrator`).
    probs : mapping
        Question -> raw probabilities ``(N, K)`` of the check objects.
    targets : mapping
        Question -> answer index ``(N,)``, -1 where it does not apply.
    priors : mapping
        Question -> ``P_T`` of the calibrated outputs
        (:func:`tilecat.calibrate.card.card_priors`): where EM starts.
    min_objects : int
        Questions applying to fewer check objects are left out.

    Returns
    -------
    dict
        Question -> result (as :func:`em_self_test`).
    """
    from ..morphology.tree import QUESTIONS

    entries = []
    for q in QUESTIONS:
        if q.name in probs and q.name in targets and q.name in calibrators:
            p, y = np.asarray(probs[q.name], np.float64), np.asarray(targets[q.name], np.int64)
            entries.append((q, calibrators[q.name].apply(p), priors[q.name], y))
    return _tree_em(entries, min_objects)


def _tree_em(entries: list[tuple[Any, np.ndarray, np.ndarray, np.ndarray]],
             min_objects: int) -> dict[str, dict[str, Any]]:
    """Run the joint EM check of the morphology questions in ``entries``.

    Parameters
    ----------
    entries : list of (question, q, start, y)
        In :data:`tilecat.morphology.tree.QUESTIONS` order: the question, its calibrated
        outputs ``q`` (M, K) of the objects EM runs over, the prior ``start`` (K,) EM
        starts from (normalised here) and the true answers ``y`` (M,) of those objects
        (-1 where the question does not apply). A question's tree path is used only
        when all its parent questions are in ``entries``.
    min_objects : int
        Questions with fewer applicable objects are left out of the comparison.

    Returns
    -------
    dict
        Question -> result (as :func:`em_self_test`); empty for no entries.
    """
    from ..morphology.tree import QUESTIONS
    from ..priors.em import PriorGroup
    from ..priors.tree import MORPHOLOGY_PATHS, path_indices

    if not entries:
        return {}
    names = [q.name for q, *_ in entries]
    answers = {q.name: q.answers for q in QUESTIONS}
    block, groups, truth = {}, [], {}
    for q, calibrated, start, y in entries:
        block[q.name] = calibrated
        path = MORPHOLOGY_PATHS[q.name]
        if not all(parent in names for parent, _ in path):
            path = ()
        start = np.asarray(start, np.float64)
        groups.append(PriorGroup(q.name, q.answers, start / start.sum(),
                                 parents=path_indices(path, answers)))
        yy = y[y >= 0]
        truth[q.name] = (np.bincount(yy, minlength=len(q.answers)) / max(len(yy), 1), len(yy))
    return _tree_check(block, groups, truth, names, min_objects)


def _tree_check(block: Mapping[str, np.ndarray], groups: list[Any],
                truth: Mapping[str, tuple[np.ndarray, int]], names: list[str],
                min_objects: int) -> dict[str, dict[str, Any]]:
    """Joint plain EM over ``block``; compare each group with its true fractions.

    Failing groups without a failing ancestor are fixed at their starting prior and EM
    is run again (a child may only have failed because its parent drifted).
    """
    from ..priors.em import PriorGroup, numpy_map_reduce, prepare_block, run_em

    mr = numpy_map_reduce([prepare_block(dict(block), np.float64)])
    parent_of = {g.name: [p for p, _ in g.parents] for g in groups}
    fixed: set[str] = set()
    out: dict[str, dict[str, Any]] = {}
    while True:
        run = [PriorGroup(g.name, g.labels, g.prior_train, estimate=g.name not in fixed,
                          parents=g.parents, strength=g.strength) for g in groups]
        res = run_em(run, mr, tol=1e-6, max_iter=1000)
        failed = []
        for q in names:
            true, m = truth[q]
            if m < min_objects or q in fixed:
                continue
            est = res.priors[q]
            err = float(np.abs(est - true).max())
            tol = 0.02 + 3.0 * float(np.sqrt(np.max(true * (1 - true)) / m))
            converged = res.changes.get(q, 0.0) < 1e-6  # this group, not the whole tree
            out[q] = {"ok": bool(converged and err <= tol), "n": int(m),
                      "error": round(err, 5), "tolerance": round(tol, 5),
                      "converged": bool(converged), "n_iter": int(res.n_iter),
                      "true": [round(float(v), 5) for v in true],
                      "em": [round(float(v), 5) for v in est], "joint": True}
            if not out[q]["ok"]:
                failed.append(q)
        # fix the topmost failures (no failing ancestor) at P_T and test the rest again:
        # a child may only have failed because its parent drifted
        top = [q for q in failed if not _has(parent_of, q, set(failed))]
        if not top:
            return out
        fixed.update(top)


def _has(parent_of: Mapping[str, list[str]], q: str, among: set[str]) -> bool:
    """Whether an ancestor of ``q`` is in ``among``."""
    todo = list(parent_of.get(q, []))
    while todo:
        p = todo.pop()
        if p in among:
            return True
        todo.extend(parent_of.get(p, []))
    return False
