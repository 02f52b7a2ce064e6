"""The morphology decision tree (Galaxy Zoo style; Walmsley et al. 2022).

Questions are asked in order; each applies only to galaxies that reached it through
the answers of earlier questions. The network predicts, for every question, the
*conditional* probabilities of its answers (given that the question applies).

=============  ============================  ===========================================
question       answers                       asked when (truth)
=============  ============================  ===========================================
t              smooth, featured, artifact    always
edge_on        yes, no                       t = featured
spiral_arms    yes, no                       t = featured and not edge-on
spin           S, Z                          featured, not edge-on, spiral arms
bar            strong, weak, none            t = featured, not edge-on, not a merger
bulge_size     none, small, moderate, large  t = featured, not edge-on, not a merger
merger         yes, no                       t != artifact
roundness      round, between, cigar         t = smooth
=============  ============================  ===========================================

A mirror image swaps the answers S and Z of ``spin`` and leaves every other answer
unchanged (:func:`mirror_permutation`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Question",
    "QUESTIONS",
    "N_ANSWERS",
    "answer_slices",
    "column_names",
    "column_name",
    "mirror_permutation",
    "question",
]


@dataclass(frozen=True)
class Question:
    """One question of the tree.

    Attributes
    ----------
    name : str
        Question name (also the truth column it is learnt from, except ``t`` whose
        truth column is ``t_class``).
    answers : tuple of str
        Answers, in the order of the network outputs.
    truth : str
        The truth/label column (SIM_CONTRACT) holding the answer.
    description : str
        The question in words.
    """

    name: str
    answers: tuple[str, ...]
    truth: str
    description: str


QUESTIONS: tuple[Question, ...] = (
    Question("t", ("smooth", "featured", "artifact"), "t_class",
             "is the object smooth, featured (or a disk), or an artifact"),
    Question("edge_on", ("yes", "no"), "edge_on", "is the disk seen edge-on"),
    Question("spiral_arms", ("yes", "no"), "spiral_arms", "are there spiral arms"),
    Question("spin", ("S", "Z"), "spin", "do the arms wind as an S or a Z"),
    Question("bar", ("strong", "weak", "none"), "bar", "is there a bar"),
    Question("bulge_size", ("none", "small", "moderate", "large"), "bulge_size",
             "how large is the bulge"),
    Question("merger", ("yes", "no"), "merger", "is the galaxy merging or disturbed"),
    Question("roundness", ("round", "between", "cigar"), "roundness",
             "how round is the smooth galaxy"),
)

#: total number of answers (network outputs)
N_ANSWERS: int = sum(len(q.answers) for q in QUESTIONS)


def question(name: str) -> Question:
    """The question called ``name`` (KeyError if unknown)."""
    for q in QUESTIONS:
        if q.name == name:
            return q
    raise KeyError(name)


def answer_slices() -> dict[str, slice]:
    """Question name -> slice of its answers in the concatenated output vector."""
    out, k = {}, 0
    for q in QUESTIONS:
        out[q.name] = slice(k, k + len(q.answers))
        k += len(q.answers)
    return out


def column_name(q: str, a: str, suffix: str = "raw") -> str:
    """``morph_<question>_<answer>_<suffix>``, e.g. ``morph_spin_S_raw``."""
    return f"morph_{q}_{a}_{suffix}"


def column_names(suffix: str = "raw") -> list[str]:
    """All probability columns in output order."""
    return [column_name(q.name, a, suffix) for q in QUESTIONS for a in q.answers]


def mirror_permutation() -> np.ndarray:
    """Index array ``perm`` such that ``p_mirror = p[..., perm]``.

    For a mirrored image the probability of answer ``k`` equals the original's
    probability of answer ``perm[k]``: S and Z of ``spin`` trade places, every
    other answer maps to itself.
    """
    perm = np.arange(N_ANSWERS)
    s = answer_slices()["spin"]
    perm[s.start], perm[s.start + 1] = s.start + 1, s.start
    return perm
