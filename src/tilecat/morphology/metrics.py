"""Evaluation figures of the morphology and structure networks on labelled stamps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .labels import IGNORE
from .tree import QUESTIONS, answer_slices

__all__ = ["arms_resolved", "ARMS_RESOLVED_R50_PER_FWHM", "SNR_BINS", "morphology_metrics",
           "structure_metrics", "confusion", "answer_auc"]

#: r-band S/N bin edges for per-bin figures
SNR_BINS: tuple[float, ...] = (0.0, 10.0, 20.0, 50.0, 100.0, np.inf)


def confusion(true: np.ndarray, pred: np.ndarray, n: int) -> list[list[int]]:
    """Confusion matrix ``[true][pred]`` counts as nested lists."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (true, pred), 1)
    return m.tolist()


def _bin_label(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">{lo:g}"


#: arms count as visible when the disk's r50 is at least this many PSF FWHMs
ARMS_RESOLVED_R50_PER_FWHM = 1.5


def arms_resolved(r50: np.ndarray, psf_fwhm: np.ndarray,
                  factor: float = ARMS_RESOLVED_R50_PER_FWHM) -> np.ndarray:
    """Which galaxies are resolved well enough for their arms to be visible.

    Parameters
    ----------
    r50 : ndarray, shape (N,)
        True intrinsic half-light radius [arcsec].
    psf_fwhm : ndarray, shape (N,)
        PSF FWHM in the reference band [arcsec].
    factor : float
        Required r50 / FWHM (1.5: the arms, at 1-3 r50, span several seeing discs).

    Returns
    -------
    ndarray of bool, shape (N,)
    """
    r50 = np.asarray(r50, float)
    return np.isfinite(r50) & (r50 >= factor * np.asarray(psf_fwhm, float))


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC of ``score`` for the boolean labels ``y``; None unless both classes occur."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if 0 < y.sum() < y.size else None


def answer_auc(probs: np.ndarray, targets: np.ndarray) -> dict[str, dict[str, float | None]]:
    """One-vs-rest ROC AUC of every answer, over the objects its question applies to.

    Accuracy hides an answer the network never tells apart when the others dominate
    (e.g. a bar question answered at the base rate); the AUC of ``P(answer)`` against
    "is this answer" does not (0.5 = no information).

    Parameters
    ----------
    probs : ndarray, shape (N, N_ANSWERS)
        Conditional answer probabilities.
    targets : ndarray of int, shape (N, n_questions)
        From :func:`tilecat.morphology.labels.encode` (-1 = not applicable).

    Returns
    -------
    dict
        {question: {answer: AUC, or None when the answer or its complement is absent}}.
    """
    sl = answer_slices()
    out: dict[str, dict[str, float | None]] = {}
    for j, q in enumerate(QUESTIONS):
        t = targets[:, j]
        ok = t != IGNORE
        p = probs[ok, sl[q.name]]
        per: dict[str, float | None] = {}
        for k, a in enumerate(q.answers):
            y = t[ok] == k
            per[a] = _auc(y, p[:, k])
        out[q.name] = per
    return out


def morphology_metrics(probs: np.ndarray, targets: np.ndarray,
                       snr: np.ndarray | None = None,
                       snr_bins: Sequence[float] = SNR_BINS,
                       resolved: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy per question (where it applies), per S/N bin, and confusion matrices.

    Parameters
    ----------
    probs : ndarray, shape (N, N_ANSWERS)
        Conditional answer probabilities.
    targets : ndarray of int, shape (N, n_questions)
        From :func:`tilecat.morphology.labels.encode` (-1 = not applicable).
    snr : ndarray, shape (N,), optional
        r-band S/N of each object.
    resolved : ndarray of bool, shape (N,), optional
        :func:`arms_resolved`: spin accuracy is then reported for spirals with
        visible arms (``spin_accuracy``) and for all spirals (``spin_accuracy_all``).

    Returns
    -------
    dict
        ``accuracy`` {question: acc}, ``n`` {question: count}, ``confusion``
        {question: matrix}, ``accuracy_by_snr`` {question: {bin: acc}},
        ``top_level_accuracy``, ``top_level_accuracy_snr20`` (S/N > 20),
        ``spin_accuracy`` (spirals with visible arms when ``resolved`` is given, else all
        spirals), ``spin_accuracy_all``, ``spin_accuracy_snr20``, ``n_spin_visible``,
        ``answer_auc`` (:func:`answer_auc`), ``bar_auc``: AUC of ``P(strong) + P(weak)``
        for barred against unbarred spirals (true spiral arms), and ``bar_auc_all`` over
        every disk the bar question applies to (the simulator bars mostly spirals, and
        lenticulars only with ``population.bar_model: visible``, so that AUC also
        rewards telling spirals from other disks).
    """
    out: dict[str, Any] = {"accuracy": {}, "n": {}, "confusion": {}, "accuracy_by_snr": {}}
    sl = answer_slices()
    for j, q in enumerate(QUESTIONS):
        t = targets[:, j]
        ok = t != IGNORE
        pred = probs[:, sl[q.name]].argmax(1)
        out["n"][q.name] = int(ok.sum())
        out["accuracy"][q.name] = float((pred[ok] == t[ok]).mean()) if ok.any() else None
        out["confusion"][q.name] = confusion(t[ok], pred[ok], len(q.answers))
        if snr is not None:
            per = {}
            for lo, hi in zip(snr_bins[:-1], snr_bins[1:]):
                m = ok & (snr >= lo) & (snr < hi)
                per[_bin_label(lo, hi)] = (float((pred[m] == t[m]).mean()) if m.any() else None)
            out["accuracy_by_snr"][q.name] = per
            hi_snr = ok & (snr > 20)
            out.setdefault("accuracy_snr20", {})[q.name] = (
                float((pred[hi_snr] == t[hi_snr]).mean()) if hi_snr.any() else None)
    out["answer_auc"] = answer_auc(probs, targets)
    names = [q.name for q in QUESTIONS]
    tb = targets[:, names.index("bar")]
    arms = targets[:, names.index("spiral_arms")]
    none = QUESTIONS[names.index("bar")].answers.index("none")
    pb = 1.0 - probs[:, sl["bar"]][:, none]
    spiral = arms == QUESTIONS[names.index("spiral_arms")].answers.index("yes")
    for key, rows in (("bar_auc", (tb != IGNORE) & spiral), ("bar_auc_all", tb != IGNORE)):
        out[key] = _auc(tb[rows] != none, pb[rows])
    out["top_level_accuracy"] = out["accuracy"]["t"]
    out["spin_accuracy_all"] = out["accuracy"]["spin"]
    out["spin_accuracy"] = out["accuracy"]["spin"]
    if snr is not None:
        out["top_level_accuracy_snr20"] = out["accuracy_snr20"]["t"]
        out["spin_accuracy_snr20"] = out["accuracy_snr20"]["spin"]
    if resolved is not None:
        j = [q.name for q in QUESTIONS].index("spin")
        t = targets[:, j]
        m = (t != IGNORE) & np.asarray(resolved, bool)
        if snr is not None:
            m &= snr > 20
        pred = probs[:, sl["spin"]].argmax(1)
        out["n_spin_visible"] = int(m.sum())
        out["spin_accuracy"] = float((pred[m] == t[m]).mean()) if m.any() else None
    return out


def structure_metrics(pred: dict[str, np.ndarray], truth: dict[str, np.ndarray],
                      snr: np.ndarray | None = None) -> dict[str, Any]:
    """Structure figures: r50 / n relative errors, e1/e2 scatter, 1-sigma coverage.

    Parameters
    ----------
    pred : dict
        ``r50``, ``r50_err`` [arcsec], ``sersic_n``, ``sersic_n_err``, ``e1``,
        ``e1_err``, ``e2``, ``e2_err`` arrays (N,).
    truth : dict
        ``r50`` [arcsec], ``sersic_n``, ``e1``, ``e2`` arrays (N,).
    snr : ndarray (N,), optional

    Returns
    -------
    dict
        ``r50_median_rel_err`` (median |r50 - true| / true), ``..._snr20``,
        ``r50_within_1sigma`` (fraction with |r50 - true| < r50_err; 0.683 when the
        uncertainties are calibrated), ``sersic_n_median_rel_err``,
        ``e_rms`` (rms of e1, e2 residuals), ``e_within_1sigma``.
    """
    ok = np.isfinite(truth["r50"]) & (truth["r50"] > 0)
    rel = np.abs(pred["r50"] - truth["r50"]) / truth["r50"]
    within = np.abs(pred["r50"] - truth["r50"]) < pred["r50_err"]
    out: dict[str, Any] = {
        "n": int(ok.sum()),
        "r50_median_rel_err": float(np.median(rel[ok])) if ok.any() else None,
        "r50_median_bias": float(np.median(((pred["r50"] - truth["r50"]) / truth["r50"])[ok]))
        if ok.any() else None,
        "r50_within_1sigma": float(within[ok].mean()) if ok.any() else None,
    }
    okn = np.isfinite(truth["sersic_n"]) & (truth["sersic_n"] > 0)
    if okn.any():
        reln = np.abs(pred["sersic_n"] - truth["sersic_n"]) / truth["sersic_n"]
        out["sersic_n_median_rel_err"] = float(np.median(reln[okn]))
        out["sersic_n_within_1sigma"] = float(
            (np.abs(pred["sersic_n"] - truth["sersic_n"]) < pred["sersic_n_err"])[okn].mean())
    oke = np.isfinite(truth["e1"]) & np.isfinite(truth["e2"])
    if oke.any():
        d1, d2 = (pred["e1"] - truth["e1"])[oke], (pred["e2"] - truth["e2"])[oke]
        out["e_rms"] = float(np.sqrt(np.mean(np.concatenate([d1, d2]) ** 2)))
        out["e_within_1sigma"] = float(np.mean(np.concatenate([
            np.abs(d1) < pred["e1_err"][oke], np.abs(d2) < pred["e2_err"][oke]])))
    if snr is not None:
        m = ok & (snr > 20)
        out["r50_median_rel_err_snr20"] = float(np.median(rel[m])) if m.any() else None
        out["r50_within_1sigma_snr20"] = float(within[m].mean()) if m.any() else None
    return out
