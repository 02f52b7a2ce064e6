"""Which probability vectors a model writes, read from its model card.

A *group* is one probability vector per object over mutually exclusive classes: a
morphology question (its answers, columns ``morph_<q>_<a>_raw``) or the photo-z PDF
(the redshift bins, list column ``z_pdf``). Calibration maps and survey priors are
per group. Column names for the three stages follow DESIGN.md §4:

=========  ===========================  ======================
stage      morphology                   photo-z
=========  ===========================  ======================
raw        ``morph_<q>_<a>_raw``        ``z_pdf``
cal        ``morph_<q>_<a>_cal``        ``z_pdf_cal``
post       ``morph_<q>_<a>_post``       ``z_pdf_post``
=========  ===========================  ======================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ModelError

__all__ = ["ProbGroup", "card_groups", "group_values", "list_array", "PHOTOZ_GROUP", "STAGES",
           "Z_SUMMARY"]

#: the name of the photo-z group (also its key in ``survey.priors``)
PHOTOZ_GROUP = "z"
#: probability stages, in order
STAGES: tuple[str, ...] = ("raw", "cal", "post")
#: photo-z summary statistics (recomputed from ``z_pdf_post`` as ``<name>_post``)
Z_SUMMARY: tuple[str, ...] = ("z_mean", "z_median", "z_mode", "z_std", "z_odds")


@dataclass(frozen=True)
class ProbGroup:
    """One probability vector of a model.

    Attributes
    ----------
    name : str
        Question name, or ``"z"`` for the photo-z PDF.
    model : str
        Model (head) name: ``morphology`` or ``photoz``.
    labels : tuple of str
        Class labels (answers; bin centres for photo-z).
    prior_train : ndarray (K,)
        Training-set class frequencies ``P_T`` from the card.
    list_column : bool
        True: one list column (``z_pdf``); False: one column per class.
    """

    name: str
    model: str
    labels: tuple[str, ...]
    prior_train: np.ndarray
    list_column: bool = False

    def columns(self, stage: str) -> list[str]:
        """Column name(s) of ``stage`` (``raw``, ``cal`` or ``post``)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        if self.list_column:
            return ["z_pdf" if stage == "raw" else f"z_pdf_{stage}"]
        from ..morphology.tree import column_name

        return [column_name(self.name, a, stage) for a in self.labels]


def _morphology_groups(card: Mapping[str, Any]) -> list[ProbGroup]:
    from ..morphology.tree import QUESTIONS

    answers = [[q.name, list(q.answers)] for q in QUESTIONS]
    if card.get("questions") not in (None, answers):
        raise ModelError("morphology card: its questions/answers differ from this tilecat "
                         "version's decision tree")
    priors = card.get("priors_train") or {}
    out = []
    for q in QUESTIONS:
        pq = priors.get(q.name) or {}
        pt = np.array([float(pq.get(a, 0.0)) for a in q.answers])
        if pt.sum() <= 0:  # the question never applied in training: no correction possible
            pt = np.full(len(q.answers), 1.0 / len(q.answers))
        out.append(ProbGroup(q.name, "morphology", tuple(q.answers), pt / pt.sum()))
    return out


def _photoz_group(card: Mapping[str, Any], floor: float = 1e-6) -> ProbGroup:
    from ..photoz.grid import ZGrid

    grid = ZGrid.from_meta(card["z_grid"])
    prior = card.get("prior") or {}
    p = np.asarray(prior.get("p", np.full(grid.n_bins, 1.0 / grid.n_bins)), np.float64)
    if p.shape != (grid.n_bins,):
        raise ModelError(f"photoz card: prior has {p.size} bins, the grid {grid.n_bins}")
    # bins the training set never populated still get a tiny P_T, so that a survey
    # N(z) reaching them can be used (the formula needs P_T > 0 where P > 0)
    p = np.maximum(p / p.sum(), floor)
    labels = tuple(f"{c:.6g}" for c in grid.centres)
    return ProbGroup("z", "photoz", labels, p / p.sum(), list_column=True)


def card_groups(card: Mapping[str, Any]) -> list[ProbGroup]:
    """The probability groups of a model card (tree order for morphology).

    Raises
    ------
    ModelError
        A model with no calibratable probabilities, or an inconsistent card.
    """
    name = str(card.get("name", ""))
    if name == "morphology":
        return _morphology_groups(card)
    if name == "photoz":
        if "z_grid" not in card:
            raise ModelError("photoz card: no z_grid")
        return [_photoz_group(card)]
    raise ModelError(f"model {name!r}: no probability outputs to calibrate (only the "
                     "morphology and photoz models have them)")


def group_values(table: Any, g: ProbGroup, stage: str = "raw") -> np.ndarray:
    """Probabilities of group ``g`` at ``stage`` in a pyarrow table, float64 ``(n, K)``.

    Raises
    ------
    KeyError
        A column is missing.
    ValueError
        A list column whose lists are not all of length ``K``.
    """
    names = g.columns(stage)
    k = len(g.labels)
    if g.list_column:
        col = table[names[0]].combine_chunks()
        flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float64)
        if flat.size != len(col) * k:
            raise ValueError(f"column {names[0]}: lists are not all of length {k}")
        return flat.reshape(len(col), k)
    if table.num_rows == 0:
        return np.zeros((0, k))
    return np.stack([np.asarray(table[c].to_numpy(zero_copy_only=False), np.float64)
                     for c in names], axis=1)


def list_array(values: np.ndarray) -> Any:
    """``(n, K)`` probabilities -> a pyarrow ``list<float16>`` array (as ``z_pdf``)."""
    import pyarrow as pa

    values = np.asarray(values)
    n, k = values.shape
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.astype(np.float16).reshape(-1)))
