"""The survey QA report (issue 7): ``tilecat report`` -> ``<results>/report.html``.

Modules: :mod:`.report` (``run_report`` and the sections), :mod:`.figures`
(matplotlib), :mod:`.html` (self-contained page), :mod:`.data` (truth matching, tile
stores, cutouts), :mod:`.scores` (catalog vs truth scores, shared with the benchmarks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["run_report"]


def run_report(config: dict[str, Any]) -> Path:
    """See :func:`tilecat.qa.report.run_report`."""
    from .report import run_report as _run

    return _run(config)
