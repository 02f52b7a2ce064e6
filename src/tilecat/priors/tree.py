"""Paths through the morphology decision tree, as answer probabilities.

A conditional question applies to an object with probability equal to the product,
along its path from the root, of the probabilities of the answers that lead to it
(e.g. ``spin``: P(t = featured) P(edge_on = no) P(spiral_arms = yes)). The paths
below mirror the truth rules of :func:`tilecat.morphology.labels.applies` (a test
checks that they agree on one-hot answers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["MORPHOLOGY_PATHS", "GALAXY_PATH", "parents", "path_indices"]

_FACE_ON: tuple[tuple[str, tuple[str, ...]], ...] = (("t", ("featured",)), ("edge_on", ("no",)))

#: question -> ((parent question, answers leading on), ...) from the root
MORPHOLOGY_PATHS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "t": (),
    "edge_on": (("t", ("featured",)),),
    "spiral_arms": _FACE_ON,
    "spin": _FACE_ON + (("spiral_arms", ("yes",)),),
    "bar": _FACE_ON,
    "bulge_size": _FACE_ON,
    "merger": (("t", ("smooth", "featured")),),
    "roundness": (("t", ("smooth",)),),
}

#: the path of "is a galaxy" (photo-z N(z) is estimated over galaxies): t != artifact
GALAXY_PATH: tuple[tuple[str, tuple[str, ...]], ...] = (("t", ("smooth", "featured")),)


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
