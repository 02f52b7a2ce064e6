"""sha256 of many files, in parallel threads (hashlib releases the GIL)."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..models.io import sha256_file

__all__ = ["sha256_file", "hash_files", "tree_files"]


def hash_files(paths: Iterable[str | Path], workers: int = 2) -> dict[str, str]:
    """sha256 of every file, keyed by the path as given (order kept).

    Parameters
    ----------
    paths : iterable of path
        Files to hash (duplicates are hashed once).
    workers : int
        Threads.
    """
    unique = list(dict.fromkeys(str(p) for p in paths))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        digests = list(pool.map(sha256_file, unique))
    return dict(zip(unique, digests))


def tree_files(root: Path) -> list[str]:
    """Every file below ``root`` as a sorted list of POSIX paths relative to it."""
    root = Path(root)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
