"""Reproducible survey releases: package, checksum and verify a survey catalog.

``release/<version>/`` holds the survey catalog (partitioned Parquet with release
provenance in every file's metadata, and a HATS catalog that ``lsdb.read_hats``
opens), the QA report when there is one, and ``manifest.json``: the config and its
hash, the tile list (and the tiles left out, and why), the sha256 of every input
file, every model's card and weights checksum, the package versions of the
environment and the sha256 of every output file. :func:`verify_release` re-hashes
all of it.

Submodules are imported lazily: ``tilecat.aggregate`` only needs
:mod:`tilecat.release.selection`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_release", "verify_release", "included_tiles", "exclusions"]


def __getattr__(name: str) -> Any:
    if name == "build_release":
        from .build import build_release

        return build_release
    if name == "verify_release":
        from .verify import verify_release

        return verify_release
    if name in ("included_tiles", "exclusions"):
        from . import selection

        return getattr(selection, name)
    raise AttributeError(name)
