"""Scores of a survey catalog's probabilities against truth (QA report, benchmarks).

All functions take a survey catalog table (pyarrow) whose rows are already matched to
truth: morphology targets from :func:`tilecat.morphology.labels.encode` and true
redshifts. Stages are the column suffixes ``raw``, ``cal``, ``post``; a stage whose
columns are absent is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..calibrate.groups import STAGES, ProbGroup, group_values
from ..calibrate.metrics import class_scores, ks_distance, pdf_scores, reliability

__all__ = ["catalog_groups", "morphology_scores", "photoz_scores", "nz_distances",
           "prior_errors", "true_fractions"]


def catalog_groups(schema: Any) -> list[ProbGroup]:
    """Probability groups present in a survey catalog (from its ``tilecat.priors`` metadata,
    else from the raw morphology columns).

    Training priors come from the metadata (uniform when unknown).
    """
    from ..morphology.tree import QUESTIONS

    meta = schema.metadata or {}
    info = json.loads(meta.get(b"tilecat.priors", b"{}") or b"{}").get("groups", {})
    out = []
    for q in QUESTIONS:
        g = ProbGroup(q.name, "morphology", q.answers, np.full(len(q.answers), 1 / len(q.answers)))
        if all(c in schema.names for c in g.columns("raw")):
            if q.name in info:
                g = ProbGroup(q.name, "morphology", q.answers, np.asarray(info[q.name]["train"]))
            out.append(g)
    if "z_pdf" in schema.names and b"tilecat.z_grid" in meta:
        from ..photoz.grid import ZGrid

        grid = ZGrid.from_meta(json.loads(meta[b"tilecat.z_grid"]))
        pt = np.asarray(info["z"]["train"]) if "z" in info else np.full(grid.n_bins,
                                                                        1 / grid.n_bins)
        out.append(ProbGroup("z", "photoz", tuple(f"{c:.6g}" for c in grid.centres), pt,
                             list_column=True))
    return out


def _stages(table: Any, g: ProbGroup) -> list[str]:
    return [s for s in STAGES if all(c in table.column_names for c in g.columns(s))]


def morphology_scores(table: Any, targets: np.ndarray, groups: Sequence[ProbGroup]
                      ) -> dict[str, Any]:
    """ECE, Brier, NLL, accuracy and reliability tables per question and stage.

    Parameters
    ----------
    table : pyarrow.Table
        Catalog rows matched to ``targets``.
    targets : ndarray of int, shape (N, n_questions)
        Answer index per question, -1 where it does not apply.
    groups : sequence of ProbGroup
        The morphology groups to score.

    Returns
    -------
    dict
        ``questions``: {q: {stage: scores + ``reliability``}}; ``ece``: {stage:
        count-weighted mean ECE over questions}; ``brier`` likewise.
    """
    from ..morphology.tree import QUESTIONS

    index = {q.name: j for j, q in enumerate(QUESTIONS)}
    out: dict[str, Any] = {"questions": {}, "ece": {}, "brier": {}}
    totals: dict[str, list[float]] = {}
    for g in groups:
        if g.list_column:
            continue
        y = targets[:, index[g.name]]
        ok = y >= 0
        if not ok.any():
            continue
        per = {}
        for stage in _stages(table, g):
            p = group_values(table, g, stage)[ok]
            sc = class_scores(p, y[ok])
            sc["reliability"] = reliability(p, y[ok])
            per[stage] = sc
            t = totals.setdefault(stage, [0.0, 0.0, 0.0])
            t[0] += sc["n"] * sc["ece"]
            t[1] += sc["n"] * sc["brier"]
            t[2] += sc["n"]
        out["questions"][g.name] = per
    for stage, (e, b, n) in totals.items():
        out["ece"][stage] = e / n if n else float("nan")
        out["brier"][stage] = b / n if n else float("nan")
    return out


def photoz_scores(table: Any, z_true: np.ndarray, group: ProbGroup, grid: Any,
                  mask: np.ndarray | None = None) -> dict[str, Any]:
    """PIT/CRPS of the photo-z PDFs per stage over rows ``mask`` with finite ``z_true``."""
    z = np.asarray(z_true, np.float64)
    ok = np.isfinite(z) if mask is None else (np.isfinite(z) & mask)
    return {stage: pdf_scores(group_values(table, group, stage)[ok], grid, z[ok])
            for stage in _stages(table, group)}


def nz_distances(table: Any, z_true: np.ndarray, group: ProbGroup, grid: Any,
                 mask: np.ndarray | None = None) -> dict[str, Any]:
    """KS distance between the summed PDFs of each stage and the true N(z) on the grid.

    Returns
    -------
    dict
        {stage: ks}, plus ``true`` (histogram of z_true on the grid) and ``sum_<stage>``
        (summed PDFs, normalised).
    """
    z = np.asarray(z_true, np.float64)
    ok = np.isfinite(z) if mask is None else (np.isfinite(z) & mask)
    true = grid.histogram(z[ok])
    out: dict[str, Any] = {"true": true}
    for stage in _stages(table, group):
        s = group_values(table, group, stage)[ok].sum(axis=0)
        out[f"sum_{stage}"] = s / max(s.sum(), 1e-300)
        out[stage] = ks_distance(s, true)
    return out


def true_fractions(targets: np.ndarray) -> dict[str, np.ndarray]:
    """Answer fractions per question among the objects it applies to (truth)."""
    from ..morphology.tree import QUESTIONS

    out = {}
    for j, q in enumerate(QUESTIONS):
        y = targets[:, j]
        y = y[y >= 0]
        out[q.name] = np.bincount(y, minlength=len(q.answers)) / max(len(y), 1)
    return out


def prior_errors(used: Mapping[str, Sequence[float]], true: Mapping[str, np.ndarray],
                 min_prevalence: float = 0.01) -> dict[str, Any]:
    """Relative errors of estimated answer fractions, for answers with true prevalence >= cut.

    Parameters
    ----------
    used : mapping
        Question -> prior used (estimated), as in the ``tilecat.priors`` metadata.
    true : mapping
        Question -> true fractions (:func:`true_fractions`).
    min_prevalence : float
        Answers rarer than this (conditional on the question) are not scored.

    Returns
    -------
    dict
        ``max_rel_err`` and ``answers``: {q: [[answer index, estimate, true, rel_err], ...]}.
    """
    rows: dict[str, list[list[float]]] = {}
    worst = 0.0
    for q, est in used.items():
        if q not in true:
            continue
        for k, (e, t) in enumerate(zip(est, true[q])):
            if t >= min_prevalence:
                rel = abs(float(e) - float(t)) / float(t)
                worst = max(worst, rel)
                rows.setdefault(q, []).append([k, float(e), float(t), rel])
    return {"max_rel_err": worst, "answers": rows}
