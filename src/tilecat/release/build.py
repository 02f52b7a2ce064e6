"""Build ``release/<version>/``: catalog (Parquet + HATS), QA report, manifest.json.

The release is assembled in a temporary directory beside its final place and moved
there in one rename, so a release directory is always complete. Nothing in it holds
a wall-clock time: a release rebuilt from the same inputs is byte-identical.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import config_hash
from ..errors import ConfigError, TilecatError
from ..tiles import TILE_ID_RE, Tile, read_manifest

__all__ = ["ReleaseError", "build_release", "release_dir", "MANIFEST_NAME", "FORMAT"]

MANIFEST_NAME = "manifest.json"
FORMAT = "tilecat-release/1"
CATALOG_DIR = "catalog"
REPORT_NAME = "report.html"


class ReleaseError(TilecatError):
    """A release cannot be built (missing tiles, stale or changed inputs, bad models)."""


def release_dir(config: dict[str, Any], version: str) -> Path:
    """``<release.dir or results/release>/<version>``."""
    root = (config.get("release") or {}).get("dir") or Path(config["results"]) / "release"
    return Path(root) / version


def _with_exclusions(config: dict[str, Any], exclude: dict[str, str] | None) -> dict[str, Any]:
    cfg = copy.deepcopy(config)
    rel = cfg.setdefault("release", {})
    entries = list(rel.get("exclude_tiles") or [])
    for tile, reason in (exclude or {}).items():
        entries.append({"tile": tile, "reason": reason} if reason else tile)
    rel["exclude_tiles"] = entries
    return cfg


def _check_complete(config: dict[str, Any], tiles: list[Tile]) -> None:
    """Refuse while an included tile has no catalog, naming each and why."""
    from ..survey import tile_paths
    from .selection import diagnose_tile

    missing = [t.id for t in tiles if not tile_paths(config, t.id)["catalog"].exists()]
    if missing:
        lines = [f"  {t}: {diagnose_tile(config, t)}" for t in missing]
        raise ReleaseError(
            f"{len(missing)} tile(s) have no catalog; rerun them, or leave them out "
            "explicitly (tilecat release --exclude TILE[=REASON], or config "
            "release.exclude_tiles):\n" + "\n".join(lines))


def _check_config_hash(config: dict[str, Any], tiles: list[Tile], chash: str) -> None:
    """Refuse when a tile catalog was made with another config (science sections)."""
    import pyarrow.parquet as pq

    from ..survey import tile_paths

    stale = []
    for t in tiles:
        meta = pq.read_schema(tile_paths(config, t.id)["catalog"]).metadata or {}
        found = meta.get(b"tilecat.config_hash", b"").decode()
        if found != chash:
            stale.append(f"  {t.id}: config hash {found or '(none)'}")
    if stale:
        raise ReleaseError(
            f"{len(stale)} tile catalog(s) were made with another configuration than this "
            f"one (config hash {chash}); rerun them (snakemake --forcerun, or tilecat rerun "
            "TILE):\n" + "\n".join(stale[:50]) + ("\n  ..." if len(stale) > 50 else ""))


def _survey_parts(config: dict[str, Any], tiles: list[Tile]) -> list[Path]:
    """The partitioned survey catalog, re-aggregated if it is absent, covers other
    tiles than ``tiles`` or is older than a tile catalog."""
    import pyarrow.parquet as pq

    from ..survey import tile_paths

    dataset = Path(config["results"]) / "catalog"
    parts = sorted(dataset.glob("part-*.parquet"))
    reason = ""
    if not parts:
        reason = "absent"
    else:
        meta = pq.read_schema(parts[0]).metadata or {}
        covered = json.loads(meta.get(b"tilecat.tiles", b"[]"))
        oldest = min(p.stat().st_mtime_ns for p in parts)
        newest = max(tile_paths(config, t.id)["catalog"].stat().st_mtime_ns for t in tiles)
        if covered != [t.id for t in tiles]:
            reason = "built from another tile list"
        elif meta.get(b"tilecat.config_hash", b"").decode() != config_hash(config):
            reason = "built with another configuration"
        elif newest > oldest:
            reason = "older than a tile catalog"
    if reason:
        from ..aggregate import run_aggregate

        print(f"release: survey catalog {dataset} is {reason}: aggregating", flush=True)
        run_aggregate(config)
        parts = sorted(dataset.glob("part-*.parquet"))
    return parts


def _input_files(config: dict[str, Any], tiles: list[Tile]) -> list[tuple[str, str]]:
    """(tile or "", absolute path) of every input file: the manifest, then each
    tile's FITS files."""
    from ..survey import band_files

    out: list[tuple[str, str]] = []
    spec = str(config["tiles"])
    if "{tile}" not in spec:
        out.append(("", str(Path(spec).resolve())))
    for t in tiles:
        for bf in band_files(config, t.id):
            for ref in (bf.image, bf.weight, bf.dq):
                if ref is not None:
                    out.append((t.id, str(Path(ref.path).resolve())))
    return list(dict.fromkeys(out))


def _check_against_ingest(config: dict[str, Any], tiles: list[Tile],
                          digests: dict[str, str]) -> None:
    """Refuse when an input file changed since its tile was ingested."""
    from ..store import read_attrs
    from ..survey import tile_paths

    changed = []
    for t in tiles:
        store = tile_paths(config, t.id)["store"]
        try:
            prov = read_attrs(store).get("provenance") or {}
        except Exception:  # no or unreadable store: nothing recorded to compare
            continue
        for rec in prov.get("inputs") or []:
            path = str(Path(rec.get("path", "")).resolve())
            if rec.get("sha256") and path in digests and digests[path] != rec["sha256"]:
                changed.append(f"  {t.id}: {path}")
    if changed:
        raise ReleaseError("input file(s) changed since their tile was ingested; rerun "
                           "the tile(s) (tilecat rerun TILE):\n" + "\n".join(changed))


def _write_catalog(parts: list[Path], out: Path, provenance: dict[bytes, bytes]) -> int:
    """Copy the survey catalog parts into ``out`` with release provenance added."""
    import pyarrow.parquet as pq

    from ..parquetmeta import write_table

    out.mkdir(parents=True)
    rows = 0
    for part in parts:
        table = pq.read_table(part)
        meta = {**(table.schema.metadata or {}), **provenance}
        write_table(table.replace_schema_metadata(dict(sorted(meta.items()))),
                    out / part.name, atomic=False)
        rows += table.num_rows
    return rows


def _hats_metadata(part: Path, provenance: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """Metadata for the HATS data files: the survey catalog's provenance, units and
    descriptions plus the release keys (not astropy's YAML header, whose column
    list would not match the HATS columns)."""
    import pyarrow.parquet as pq

    meta = dict(pq.read_schema(part).metadata or {})
    keep = {k: v for k, v in meta.items() if k.startswith(b"tilecat.")}
    return dict(sorted({**keep, **provenance}.items()))


def build_release(config: dict[str, Any], version: str, *,
                  exclude: dict[str, str] | None = None, force: bool = False,
                  configfile: str | Path | None = None) -> Path:
    """Build ``release/<version>/`` from the processed survey.

    Parameters
    ----------
    config : dict
        Validated configuration.
    version : str
        Release name (``[A-Za-z0-9][A-Za-z0-9_.+-]*``).
    exclude : dict of str to str, optional
        More tiles to leave out (tile -> reason), on top of ``release.exclude_tiles``.
    force : bool
        Replace an existing release of that version.
    configfile : path, optional
        The config file (recorded in the manifest).

    Returns
    -------
    Path
        The release directory.

    Raises
    ------
    ReleaseError
        A tile has no catalog and is not excluded, an input changed since ingest, the
        release exists (without ``force``).
    ModelError
        A model's weights differ from its card.
    """
    from ..atomic import replace_dir
    from .environment import environment
    from .hashing import hash_files, sha256_file, tree_files
    from .modelinfo import model_checksums, model_record, used_models
    from .selection import diagnose_tile, exclusions, included_tiles

    if not TILE_ID_RE.match(version or ""):
        raise ConfigError(f"release version {version!r} must match {TILE_ID_RE.pattern}")
    cfg = _with_exclusions(config, exclude)
    final = release_dir(cfg, version)
    if final.exists() and not force:
        raise ReleaseError(f"release {final} exists (use --force to rebuild it)")
    all_tiles = read_manifest(cfg["tiles"])
    tiles = included_tiles(cfg, all_tiles)
    excluded = exclusions(cfg)
    _check_complete(cfg, tiles)
    chash = config_hash(cfg)
    _check_config_hash(cfg, tiles, chash)
    parts = _survey_parts(cfg, tiles)
    workers = int((cfg.get("dask") or {}).get("workers", 2))

    models = [model_record(*m) for m in used_models(cfg)]
    inputs = _input_files(cfg, tiles)
    digests = hash_files([p for _, p in inputs], workers=workers)
    _check_against_ingest(cfg, tiles, digests)

    provenance = {
        b"tilecat.release": version.encode(),
        b"tilecat.config_hash": chash.encode(),
        b"tilecat.model_sha256": model_checksums(models).encode(),
        b"tilecat.excluded_tiles": json.dumps(sorted(excluded)).encode(),
    }
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=final.parent))
    try:
        rows = _write_catalog(parts, tmp / CATALOG_DIR, provenance)
        rel = cfg.get("release") or {}
        if rel.get("hats", True):
            from ..daskutil import dask_context

            try:
                import hats  # noqa: F401
                import lsdb  # noqa: F401
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ConfigError(
                    "key 'release.hats': the HATS catalog needs the hats and lsdb packages "
                    "(pip install 'tilecat[release]'), or set release.hats: false") from exc
            from .hatscat import HATS_DIR, write_hats

            with dask_context(cfg):
                write_hats(sorted((tmp / CATALOG_DIR).glob("part-*.parquet")), tmp / HATS_DIR,
                           cfg["survey"]["name"],
                           {"tilecat_release": version, "tilecat_config_hash": chash,
                            "tilecat_model_sha256": model_checksums(models)},
                           date=rel.get("date"), metadata=_hats_metadata(parts[0], provenance))
        report = Path(cfg["results"]) / REPORT_NAME
        if report.exists():
            if report.stat().st_mtime_ns < min(p.stat().st_mtime_ns for p in parts):
                print(f"release: warning: the QA report {report} is older than the survey "
                      "catalog (rebuild it: tilecat report)", flush=True)
            shutil.copyfile(report, tmp / REPORT_NAME)
        import yaml

        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=True))
        outputs = tree_files(tmp)
        manifest = {
            "format": FORMAT,
            "release": version,
            "survey": cfg["survey"]["name"],
            "tilecat_version": __version__,
            "config_hash": chash,
            "configfile": str(Path(configfile).resolve()) if configfile else None,
            "config": cfg,
            "tiles": [{"tile": t.id, "index": t.index} for t in tiles],
            "excluded_tiles": [
                {"tile": t, "reason": excluded[t] or "excluded explicitly",
                 "detail": diagnose_tile(cfg, t)} for t in excluded],
            "catalog": {"rows": rows, "parts": len(parts), "format": "parquet",
                        "hats": bool(rel.get("hats", True))},
            "inputs": [{"tile": tile, "path": p, "bytes": Path(p).stat().st_size,
                        "sha256": digests[p]} for tile, p in inputs],
            "models": models,
            "environment": environment(),
            "outputs": [{"path": o, "bytes": (tmp / o).stat().st_size,
                         "sha256": sha256_file(tmp / o)} for o in outputs],
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True,
                                                    default=str) + "\n")
        tmp.chmod(0o755)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"release {version}: {rows} objects from {len(tiles)} tiles"
          + (f" ({len(excluded)} excluded)" if excluded else "")
          + f", {len(outputs)} files -> {final}", flush=True)
    return final
