"""Calibration of model probabilities (issue 7): temperature, BCTS, isotonic, PIT maps.

Modules: :mod:`.metrics` (ECE, Brier, reliability, PIT/CRPS), :mod:`.calibrators`
(the maps and their JSON form), :mod:`.fit` (fitting them), :mod:`.groups` (a model
card's probability vectors and their ``_raw``/``_cal``/``_post`` columns),
:mod:`.selftest` (can EM prior estimation be trusted with this model?), :mod:`.reach`
(tree-consistent maps of conditional questions), :mod:`.card`
(the card's ``calibration`` section), :mod:`.labelled` (labelled sets), :mod:`.run`
(``tilecat calibrate``). Imports are lazy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_calibrate"]


def run_calibrate(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See :func:`tilecat.calibrate.run.run_calibrate`."""
    from .run import run_calibrate as _run

    return _run(*args, **kwargs)
