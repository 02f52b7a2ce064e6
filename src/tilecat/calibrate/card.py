"""Calibration parameters in a model card: fit them, read them back.

The card's ``calibration`` section (written by :func:`fit_card_calibration`)::

    {"method": "temperature",
     "groups": {"<group>": {"kind": "temperature", "temperature": 1.31}, ...},
     "metrics": {"<group>": {"before": {...}, "after": {...},
                             "reliability_before": [...], "reliability_after": [...]}},
     "fitted_on": {...}}

Groups are the model's probability vectors (:func:`tilecat.calibrate.groups.card_groups`):
one per morphology question, fitted on the objects the question applies to, or the
photo-z PDF (``"z"``), whose metrics are PIT/CRPS and PIT histograms instead of
ECE/Brier and reliability tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .calibrators import Calibrator, Identity, from_dict
from .fit import fit_calibrator
from .groups import card_groups
from .metrics import class_scores, pdf_scores, reliability

__all__ = ["card_calibrators", "fit_card_calibration", "MIN_OBJECTS"]

#: fewer labelled objects than this for a group: keep it uncalibrated (identity)
MIN_OBJECTS = 20


def card_calibrators(card: Mapping[str, Any]) -> dict[str, Calibrator]:
    """Group name -> calibrator from the card (identity where none is stored).

    Raises
    ------
    ModelError
        A card without probability groups.
    ValueError
        A malformed calibration entry.
    """
    groups = ((card.get("calibration") or {}).get("groups")) or {}
    return {g.name: from_dict(groups.get(g.name)) for g in card_groups(card)}


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}


def fit_card_calibration(card: Mapping[str, Any], probs: Mapping[str, np.ndarray], *,
                         targets: Mapping[str, np.ndarray] | None = None,
                         z_true: np.ndarray | None = None, method: str = "temperature",
                         source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fit one calibrator per probability group of a model on a labelled set.

    Parameters
    ----------
    card : dict
        The model card (``name`` morphology or photoz).
    probs : mapping
        Group name -> uncalibrated probabilities ``(N, K)`` of the labelled objects.
    targets : mapping, optional
        Morphology: group (question) name -> answer index ``(N,)``, -1 where the
        question does not apply (:func:`tilecat.morphology.labels.encode`).
    z_true : ndarray (N,), optional
        Photo-z: true redshifts.
    method : {"temperature", "isotonic", "pit", "identity"}
        ``pit`` applies to the photo-z PDF only (morphology questions then use
        temperature scaling).
    source : mapping, optional
        Provenance of the labelled set, stored as ``fitted_on``.

    Returns
    -------
    dict
        The card's new ``calibration`` section.
    """
    from ..photoz.grid import ZGrid

    section: dict[str, Any] = {"method": method, "groups": {}, "metrics": {},
                               "fitted_on": dict(source or {})}
    for g in card_groups(card):
        if g.name not in probs:
            continue
        p = np.asarray(probs[g.name], np.float64)
        if g.list_column:
            if z_true is None:
                raise ValueError("photo-z calibration needs z_true")
            grid = ZGrid.from_meta(card["z_grid"])
            z = np.asarray(z_true, np.float64)
            ok = np.isfinite(z) & np.isfinite(p).all(axis=1)
            p, z = p[ok], z[ok]
            cal: Calibrator = Identity()
            if len(z) >= MIN_OBJECTS:
                cal = fit_calibrator(method, p, grid=grid, z_true=z)
            before, after = pdf_scores(p, grid, z), pdf_scores(cal.apply(p), grid, z)
            entry = {"before": _round({k: v for k, v in before.items() if k != "pit_hist"}),
                     "after": _round({k: v for k, v in after.items() if k != "pit_hist"}),
                     "pit_hist_before": before.get("pit_hist", []),
                     "pit_hist_after": after.get("pit_hist", [])}
        else:
            if targets is None or g.name not in targets:
                continue
            y = np.asarray(targets[g.name], np.int64)
            ok = (y >= 0) & np.isfinite(p).all(axis=1)
            p, y = p[ok], y[ok]
            cal = Identity()
            if len(y) >= MIN_OBJECTS:
                cal = fit_calibrator("temperature" if method == "pit" else method, p, y)
            q = cal.apply(p)
            entry = {"before": _round(class_scores(p, y)), "after": _round(class_scores(q, y)),
                     "reliability_before": reliability(p, y),
                     "reliability_after": reliability(q, y)}
        section["groups"][g.name] = cal.to_dict()
        section["metrics"][g.name] = entry
    return section
