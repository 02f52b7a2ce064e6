"""Prior correction of per-pixel defect probabilities (Saerens et al. 2002).

The masker is multi-label: each class c is its own two-class problem (c present or
not), so the DESIGN.md §5 formula in its two-class form reads

    p' = p r1 / (p r1 + (1 - p) r0),   r1 = P(c) / P_T(c),   r0 = (1 - P(c)) / (1 - P_T(c))

with P_T(c) the training pixel frequency (model card) and P(c) the survey's rate
(config ``mask.priors``). The formula itself is :func:`tilecat.priors.formula.correct_binary`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from ..priors.formula import correct_binary  # the one implementation of the formula

__all__ = ["correct_binary", "prior_ratios", "correct_probs"]


def prior_ratios(
    classes: Sequence[str], p_train: Mapping[str, float], p_survey: Mapping[str, float]
) -> dict[str, tuple[float, float]]:
    """(P_T, P) per class for the classes the survey gives a rate for.

    Raises
    ------
    ConfigError
        For a class the model does not know, or no training prior for it.
    """
    out = {}
    for name, rate in p_survey.items():
        if name not in classes:
            raise ConfigError(
                f"mask.priors: unknown defect class {name!r}; known: {list(classes)}"
            )
        pt = p_train.get(name)
        if pt is None or not 0.0 < float(pt) < 1.0:
            raise ConfigError(f"mask.priors: the model card has no usable training prior for {name!r}")
        if not 0.0 < float(rate) < 1.0:
            raise ConfigError(f"mask.priors: rate of {name!r} must be in (0, 1), got {rate}")
        out[name] = (float(pt), float(rate))
    return out


def correct_probs(
    probs: np.ndarray,
    classes: Sequence[str],
    p_train: Mapping[str, float],
    p_survey: Mapping[str, float],
) -> np.ndarray:
    """Prior-correct a stack of probabilities along the class axis.

    Parameters
    ----------
    probs : ndarray, shape (n_class, ...)
        Raw network probabilities, class axis first in the order ``classes``.
    classes : sequence of str
        Class names of axis 0.
    p_train, p_survey : mapping
        Training priors (card) and survey rates (config); classes without a survey
        rate are left unchanged.
    """
    out = np.array(probs, dtype=np.float32, copy=True)
    for name, (pt, ps) in prior_ratios(classes, p_train, p_survey).items():
        k = list(classes).index(name)
        out[k] = correct_binary(out[k], pt, ps)
    return out
