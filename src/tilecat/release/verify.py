"""Verify a release: re-hash every output, input and model file of its manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TilecatError

__all__ = ["Mismatch", "VerifyReport", "verify_release", "read_manifest_json"]


@dataclass(frozen=True)
class Mismatch:
    """One file that does not match the manifest.

    Attributes
    ----------
    kind : str
        ``output``, ``input`` or ``model``.
    path : str
        The file (relative to the release for outputs).
    problem : str
        ``sha256 differs``, ``missing``, ``size differs`` or ``not in the manifest``.
    expected, actual : str
        Recorded and found checksums (``""`` when not applicable).
    """

    kind: str
    path: str
    problem: str
    expected: str = ""
    actual: str = ""

    def __str__(self) -> str:
        detail = f" (manifest {self.expected}, found {self.actual})" if self.expected else ""
        return f"{self.kind} {self.path}: {self.problem}{detail}"


@dataclass
class VerifyReport:
    """What :func:`verify_release` checked and found."""

    release: Path
    checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every file matches."""
        return not self.mismatches


def read_manifest_json(release: str | Path) -> dict[str, Any]:
    """The release's ``manifest.json``.

    Raises
    ------
    TilecatError
        Missing or not a tilecat release manifest.
    """
    from .build import FORMAT, MANIFEST_NAME

    path = Path(release) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise TilecatError(f"{path}: no release manifest (is {release} a release?)") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise TilecatError(f"{path}: unreadable release manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TilecatError(f"{path}: not a {FORMAT} manifest")
    return manifest


def _check(kind: str, path: Path, label: str, expected: str, size: int | None,
           digests: dict[str, str], report: VerifyReport) -> None:
    report.checked += 1
    if not path.is_file():
        report.mismatches.append(Mismatch(kind, label, "missing"))
        return
    actual = digests[str(path)]
    if actual != expected:
        report.mismatches.append(Mismatch(kind, label, "sha256 differs", expected, actual))
    elif size is not None and path.stat().st_size != size:
        report.mismatches.append(Mismatch(kind, label, "size differs", str(size),
                                          str(path.stat().st_size)))


def verify_release(release: str | Path, inputs: bool = True, workers: int = 2) -> VerifyReport:
    """Re-hash everything a release manifest lists and compare.

    Parameters
    ----------
    release : path
        The release directory (holding ``manifest.json``).
    inputs : bool
        Also re-hash the input files (FITS, manifest) at their recorded paths.
    workers : int
        Hashing threads.

    Returns
    -------
    VerifyReport
        Every mismatch (outputs, inputs, model cards and weights, files in the release
        that the manifest does not list) and notes (package versions that differ
        from the current environment).
    """
    from .build import MANIFEST_NAME
    from .environment import KEY_PACKAGES, environment
    from .hashing import hash_files, tree_files

    root = Path(release)
    manifest = read_manifest_json(root)
    report = VerifyReport(root)
    checks: list[tuple[str, Path, str, str, int | None]] = []
    for rec in manifest.get("outputs", []):
        checks.append(("output", root / rec["path"], rec["path"], rec["sha256"],
                       rec.get("bytes")))
    for rec in manifest.get("models", []):
        checks.append(("model", Path(rec["weights_path"]), rec["weights_path"],
                       rec["weights_sha256"], None))
        checks.append(("model", Path(rec["card_path"]), rec["card_path"],
                       rec["card_sha256"], None))
    if inputs:
        for rec in manifest.get("inputs", []):
            checks.append(("input", Path(rec["path"]), rec["path"], rec["sha256"],
                           rec.get("bytes")))
    digests = hash_files([str(c[1]) for c in checks if c[1].is_file()], workers=workers)
    for kind, path, label, expected, size in checks:
        _check(kind, path, label, expected, size, digests, report)
    # Snakemake stamps the directory outputs it made (the release, as a rule output)
    listed = {rec["path"] for rec in manifest.get("outputs", [])} | {
        MANIFEST_NAME, ".snakemake_timestamp"}
    for extra in tree_files(root):
        if extra not in listed:
            report.mismatches.append(Mismatch("output", extra, "not in the manifest"))
    recorded = (manifest.get("environment") or {}).get("packages") or {}
    current = environment()["packages"]
    for name in KEY_PACKAGES:
        if recorded.get(name) != current.get(name):
            report.notes.append(f"package {name}: release built with {recorded.get(name)}, "
                                f"this environment has {current.get(name)}")
    return report
