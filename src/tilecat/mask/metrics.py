"""Per-class pixel metrics of the masker: ROC AUC, average precision, TPR at fixed FPR,
and thresholds chosen on the ROC curve."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["tpr_at_fpr", "threshold_at_fpr", "class_metrics"]


def _roc(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    return roc_curve(y, p)


def tpr_at_fpr(y: np.ndarray, p: np.ndarray, fpr_max: float) -> float | None:
    """Largest true-positive rate with false-positive rate <= ``fpr_max``.

    Parameters
    ----------
    y : ndarray of bool, shape (n,)
        Truth per pixel.
    p : ndarray of float, shape (n,)
        Score per pixel.

    Returns
    -------
    float or None
        None when ``y`` has no positives or no negatives.
    """
    y = np.asarray(y, bool).ravel()
    if y.all() or not y.any():
        return None
    fpr, tpr, _ = _roc(y, np.asarray(p).ravel())
    ok = fpr <= fpr_max
    return float(tpr[ok].max()) if ok.any() else 0.0


def threshold_at_fpr(y: np.ndarray, p: np.ndarray, fpr_max: float, floor: float = 0.5) -> float:
    """Lowest score threshold whose false-positive rate is <= ``fpr_max`` (at least ``floor``).

    ``p >= threshold`` flags a pixel. Without positives or negatives, ``floor``.
    """
    y = np.asarray(y, bool).ravel()
    if y.all() or not y.any():
        return float(floor)
    fpr, _, thr = _roc(y, np.asarray(p).ravel())
    ok = np.nonzero(fpr <= fpr_max)[0]
    t = float(thr[ok[-1]]) if ok.size else 1.0
    return float(min(max(t, floor), 1.0))


def class_metrics(
    y: np.ndarray, p: np.ndarray, classes: Sequence[str],
    fprs: Sequence[float] = (1e-3, 1e-4),
    thresholds: dict[str, float] | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """ROC AUC, average precision, TPR at ``fprs`` (and at the thresholds) per class.

    Parameters
    ----------
    y : ndarray of bool, shape (n_class, n_pix)
    p : ndarray of float, shape (n_class, n_pix)
    classes : sequence of str
    thresholds : dict, optional
        Per-class thresholds: adds ``tpr_at_threshold`` and ``fpr_at_threshold``.

    Returns
    -------
    dict
        ``{class: {"n_pos", "auc", "ap", "tpr_at_fpr_1e-03", ..., }}``; None where a
        class has no positive pixel.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    out: dict[str, dict[str, float | int | None]] = {}
    for k, name in enumerate(classes):
        yk = np.asarray(y[k], bool).ravel()
        pk = np.asarray(p[k], np.float64).ravel()
        npos = int(yk.sum())
        m: dict[str, float | int | None] = {"n_pos": npos}
        if 0 < npos < yk.size:
            m["auc"] = float(roc_auc_score(yk, pk))
            m["ap"] = float(average_precision_score(yk, pk))
            for f in fprs:
                m[f"tpr_at_fpr_{f:.0e}"] = tpr_at_fpr(yk, pk, f)
        else:
            m["auc"] = m["ap"] = None
            for f in fprs:
                m[f"tpr_at_fpr_{f:.0e}"] = None
        if thresholds is not None and name in thresholds:
            hit = pk >= thresholds[name]
            m["tpr_at_threshold"] = float(hit[yk].mean()) if npos else None
            m["fpr_at_threshold"] = float(hit[~yk].mean()) if npos < yk.size else None
        out[name] = m
    return out
