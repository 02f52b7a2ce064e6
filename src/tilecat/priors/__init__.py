"""Survey priors (issue 7): the correction formula, EM over the survey, the aggregate stage.

Modules: :mod:`.formula` (Saerens et al. 2002 correction, K-class and two-class),
:mod:`.em` (EM as repeated map-reduces, numpy or Dask), :mod:`.tree` (paths through
the morphology decision tree), :mod:`.given` (``survey.priors`` from the config),
:mod:`.stage` (calibrate + estimate + correct inside the aggregate step).
"""

from __future__ import annotations

from .formula import correct, correct_binary, prior_weights

__all__ = ["correct", "correct_binary", "prior_weights"]
