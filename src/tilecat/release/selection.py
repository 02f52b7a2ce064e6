"""Which tiles a survey catalog and its release hold: the manifest less the excluded.

``release.exclude_tiles`` in the config (or ``tilecat release --exclude``) lists
tiles to leave out, each a tile id or ``{tile, reason}``. Nothing is left out
silently: a tile whose catalog is missing stops the release until it is excluded
by name, and the manifest records every excluded tile with the reason given and a
diagnosis (which product is missing, the last error line of its logs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..tiles import Tile, read_manifest, validate_tile_id

__all__ = ["exclusions", "included_tiles", "diagnose_tile", "STAGE_PRODUCTS"]

#: Per-tile products in workflow order: (stage, ``tile_paths`` key, sub-path).
STAGE_PRODUCTS: tuple[tuple[str, str, str], ...] = (
    ("ingest", "store", "image"),
    ("mask", "store", "defect_mask"),
    ("detect", "sources", ""),
    ("infer", "infer", ""),
    ("catalog", "catalog", ""),
)


def exclusions(config: dict[str, Any]) -> dict[str, str]:
    """Excluded tile id -> reason (``""`` when none was given), in config order.

    Raises
    ------
    ConfigError
        An entry is not a valid tile id.
    """
    out: dict[str, str] = {}
    for entry in (config.get("release") or {}).get("exclude_tiles") or []:
        if isinstance(entry, dict):
            tile, reason = entry.get("tile", ""), str(entry.get("reason") or "")
        else:
            tile, reason = str(entry), ""
        try:
            validate_tile_id(tile)
        except Exception as exc:
            raise ConfigError(f"key 'release.exclude_tiles': {exc}") from exc
        out[tile] = reason or out.get(tile, "")
    return out


def included_tiles(config: dict[str, Any], tiles: list[Tile] | None = None) -> list[Tile]:
    """The manifest's tiles (in manifest order) less ``release.exclude_tiles``.

    Raises
    ------
    ConfigError
        An excluded tile is not in the manifest (a typo would otherwise exclude
        nothing), or every tile is excluded.
    """
    tiles = read_manifest(config["tiles"]) if tiles is None else tiles
    excl = exclusions(config)
    if not excl:
        return list(tiles)
    known = {t.id for t in tiles}
    unknown = [t for t in excl if t not in known]
    if unknown:
        raise ConfigError(f"key 'release.exclude_tiles': tile(s) {unknown} are not in the "
                          f"tile manifest {config['tiles']}")
    kept = [t for t in tiles if t.id not in excl]
    if not kept:
        raise ConfigError("key 'release.exclude_tiles': every tile is excluded")
    return kept


def _last_error(log: Path) -> str:
    """The last line of ``log`` that mentions an error (or ``""``)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if "error" in line.lower():
            return line.strip()[:500]
    return ""


def diagnose_tile(config: dict[str, Any], tile: str) -> str:
    """Why ``tile`` has no catalog: the first missing product and the last error
    line of that stage's log (``<results>/logs/<stage>/<tile>.log``), if any."""
    from ..survey import tile_paths

    paths = tile_paths(config, tile)
    logs = Path(config["results"]) / "logs"
    for stage, key, sub in STAGE_PRODUCTS:
        product = paths[key] / sub if sub else paths[key]
        if not product.exists():
            what = f"{stage} output {product} is missing"
            for name in (stage, "batch"):
                err = _last_error(logs / name / f"{tile}.log")
                if err:
                    return f"{what}; {name} log: {err}"
            return what
    return "all products present"
