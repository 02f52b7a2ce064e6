"""Survey definition: where each tile's per-band files are, and how to read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tiles import validate_tile_id

__all__ = ["FileRef", "BandFiles", "band_files", "tile_dir", "tile_paths"]


@dataclass(frozen=True)
class FileRef:
    """One image plane on disk.

    Attributes
    ----------
    path : Path
        FITS file (``.fits``, ``.fits.fz``, ``.fits.gz``, ``.fits.bz2``).
    hdu : int, str or None
        HDU index or EXTNAME; None means the first HDU that holds an image.
    kind : str
        For weights ``invvar`` or ``variance``; for DQ ``bits``, ``codes`` or ``bitmask``.
    map : dict
        For DQ: input code (or bit number) -> tilecat bit name.
    """

    path: Path
    hdu: int | str | None = None
    kind: str = ""
    map: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BandFiles:
    """The files of one band of one tile."""

    band: str
    image: FileRef
    weight: FileRef | None
    dq: FileRef | None


def _ref(spec: dict[str, Any] | None, tile: str, band: str, default_kind: str) -> FileRef | None:
    if spec is None:
        return None
    path = Path(spec["pattern"].format(tile=tile, band=band))
    return FileRef(
        path=path,
        hdu=spec.get("hdu"),
        kind=spec.get("kind", default_kind),
        map={str(k): str(v) for k, v in (spec.get("map") or {}).items()},
    )


def band_files(config: dict[str, Any], tile: str) -> list[BandFiles]:
    """The per-band files of ``tile`` in band order.

    Parameters
    ----------
    config : dict
        Validated configuration.
    tile : str
        Tile id (validated here before any path is built).
    """
    validate_tile_id(tile)
    files = config["survey"]["files"]
    out = []
    for band in config["survey"]["bands"]:
        image = _ref(files["image"], tile, band, "")
        assert image is not None
        out.append(
            BandFiles(
                band=band,
                image=image,
                weight=_ref(files.get("weight"), tile, band, "invvar"),
                dq=_ref(files.get("dq"), tile, band, "bits"),
            )
        )
    return out


def tile_dir(config: dict[str, Any], tile: str) -> Path:
    """``<results>/tiles/<tile>``."""
    return Path(config["results"]) / "tiles" / validate_tile_id(tile)


def tile_paths(config: dict[str, Any], tile: str) -> dict[str, Path]:
    """Every per-tile product path of the workflow, by name."""
    d = tile_dir(config, tile)
    return {
        "dir": d,
        "store": d / "tile.zarr",
        "cutouts": d / "cutouts.zarr",
        "sources": d / "sources.parquet",
        "infer": d / "infer.parquet",
        "catalog": d / "catalog.parquet",
    }
