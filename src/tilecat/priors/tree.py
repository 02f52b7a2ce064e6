"""Paths through the morphology decision tree, as answer probabilities.

A conditional question applies to an object with probability equal to the product,
along its path from the root, of the probabilities of the answers that lead to it
(e.g. ``spin``: P(t = featured) P(edge_on = no) P(spiral_arms = yes)). The paths
below mirror the truth rules of :func:`tilecat.morphology.labels.applies` (a test
checks that they agree on one-hot answers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MORPHOLOGY_PATHS", "GALAXY_PATH", "parents", "path_indices", "parents_first"]

_FACE_ON: tuple[tuple[str, tuple[str, ...]], ...] = (("t", ("featured",)), ("edge_on", ("no",)))

#: question -> ((parent question, answers leading on), ...) from the root
MORPHOLOGY_PATHS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "t": (),
    "edge_on": (("t", ("featured",)),),
    "spiral_arms": _FACE_ON,
    "spin": _FACE_ON + (("spiral_arms", ("yes",)),),
    # a merging pair has no one bar or bulge: these are questions of single disk galaxies
    "bar": _FACE_ON + (("merger", ("no",)),),
    "bulge_size": _FACE_ON + (("merger", ("no",)),),
    "merger": (("t", ("smooth", "featured")),),
    "roundness": (("t", ("smooth",)),),
}

#: the path of "is a galaxy" (photo-z N(z) is estimated over galaxies): t != artifact
GALAXY_PATH: tuple[tuple[str, tuple[str, ...]], ...] = (("t", ("smooth", "featured")),)


def parents_first(names: Sequence[str], paths: Mapping[str, Sequence[tuple[str, Any]]]
                  ) -> list[str]:
    """``names`` reordered so that every question comes after the questions on its path.

    Stable: questions keep their order where the paths allow (``bar`` and
    ``bulge_size`` follow ``merger``, which the network outputs after them). Questions
    missing from ``paths`` or from ``names`` add no constraint.

    Raises
    ------
    ValueError
        If the paths form a cycle.
    """
    left, out = list(names), []
    while left:
        for name in left:
            if all(p in out or p not in names for p, _ in paths.get(name, ())):
                out.append(name)
                left.remove(name)
                break
        else:
            raise ValueError(f"decision-tree paths form a cycle among {left}")
    return out


def path_indices(path: Sequence[tuple[str, Sequence[str]]], answers: Mapping[str, Sequence[str]]
                 ) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """A path with answer names replaced by their indices in ``answers[question]``."""
    return tuple((p, tuple(list(answers[p]).index(a) for a in lead)) for p, lead in path)


def parents(question: str, answers: Mapping[str, Sequence[str]]
            ) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The path of ``question`` with answers as indices (:class:`tilecat.priors.em.PriorGroup`).

    Parameters
    ----------
    question : str
        A question of :data:`MORPHOLOGY_PATHS`.
    answers : mapping
        Question -> its answers in output order.
    """
    return path_indices(MORPHOLOGY_PATHS[question], answers)
