"""Atomic writes: write aside, then rename.

A killed job never leaves a half-written Parquet file, Zarr array or JSON file
under its final name. What a killed writer leaves beside it (``.<name>.*.tmp``, a
directory set aside as ``.<name>.old-*``) is removed by the next write of the same
name, so a rerun leaves no debris (inside a Zarr store, debris would show up as an
extra array).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_dir", "replace_dir", "clear_stale"]


def clear_stale(final: str | Path, keep: Path | None = None) -> None:
    """Remove the temporary files/directories a killed writer of ``final`` left beside
    it (``.<name>.*.tmp`` and ``.<name>.old-*``), except ``keep``.

    Safe because one output has one writer at a time (one Snakemake job).
    """
    final = Path(final)
    if not final.parent.is_dir():
        return
    name = glob.escape(final.name)
    for pattern in (f".{name}.*.tmp", f".{name}.old-*"):
        for stale in final.parent.glob(pattern):
            if keep is not None and (stale == Path(keep) or stale in Path(keep).parents):
                continue
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``final``; rename onto it on success.

    On any exception the temporary file is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_dir(tmp: Path, final: Path) -> None:
    """Move directory ``tmp`` to ``final``, replacing any existing ``final``.

    The old directory is first renamed aside so that at every instant ``final``
    is either the complete old or the complete new content.
    """
    final = Path(final)
    clear_stale(final, keep=Path(tmp))
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; move it onto ``final`` on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
