"""What the QA report reads: the survey catalog, truth tables, tile stores and cutouts.

Truth (simulated surveys): ``report.truth`` is a path, with ``{tile}`` for one table per
tile; by default ``truth.parquet`` beside each tile's image files (the simulator's
layout, :doc:`SIM_CONTRACT`). Rows are matched to the catalog by ``object_id`` when the
truth has that column, else by nearest pixel position ``(x, y)`` within
``report.match_radius`` pixels in each tile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["truth_paths", "match_truth", "read_overlay", "read_stamps", "TRUTH_COLUMNS"]

#: truth columns the report uses (when present)
TRUTH_COLUMNS: tuple[str, ...] = ("t_class", "edge_on", "spiral_arms", "spin", "bar",
                                  "bulge_size", "merger", "roundness", "redshift", "z_true",
                                  "is_star", "kind")


def truth_paths(config: Mapping[str, Any], tiles: Sequence[str]) -> dict[str, Path]:
    """Tile -> existing truth table (a single survey-wide table is keyed ``"*"``)."""
    spec = (config.get("report") or {}).get("truth")
    out: dict[str, Path] = {}
    if spec:
        if "{tile}" not in str(spec):
            p = Path(str(spec))
            return {"*": p} if p.is_file() else {}
        for t in tiles:
            p = Path(str(spec).format(tile=t))
            if p.is_file():
                out[t] = p
        return out
    survey = config.get("survey") or {}
    pattern = ((survey.get("files") or {}).get("image") or {}).get("pattern")
    bands = survey.get("bands") or [""]
    if not pattern:
        return out
    for t in tiles:
        p = Path(str(pattern).format(tile=t, band=bands[0])).parent / "truth.parquet"
        if p.is_file():
            out[t] = p
    return out


def _columns(table: Any) -> dict[str, np.ndarray]:
    cols = {}
    for c in TRUTH_COLUMNS:
        if c in table.column_names:
            cols[c] = np.asarray(table[c].to_pylist(), dtype=object if c in (
                "t_class", "spin", "bar", "bulge_size", "roundness", "kind") else None)
    if "z_true" not in cols and "redshift" in cols:
        z = np.asarray(cols["redshift"], np.float64)
        if "is_star" in cols:
            z = np.where(np.asarray(cols["is_star"], bool), np.nan, z)
        cols["z_true"] = z
    return cols


def match_truth(config: Mapping[str, Any], catalog: Any
                ) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """Catalog rows matched to truth.

    Returns
    -------
    (rows, truth) or None
        ``rows``: int64 indices of matched catalog rows; ``truth``: column -> values
        aligned with ``rows`` (``z_true`` NaN for stars). None without truth.
    """
    import pyarrow.parquet as pq
    from scipy.spatial import cKDTree

    tiles = sorted(set(catalog["tile"].to_pylist())) if "tile" in catalog.column_names else []
    paths = truth_paths(config, tiles)
    if not paths:
        return None
    radius = float((config.get("report") or {}).get("match_radius", 2.0))
    rows: list[np.ndarray] = []
    parts: list[dict[str, np.ndarray]] = []
    ids = catalog["object_id"].to_numpy()
    if "*" in paths:
        truth = pq.read_table(paths["*"])
        if "object_id" not in truth.column_names:
            return None
        tid = truth["object_id"].to_numpy()
        order = np.argsort(tid)
        pos = np.searchsorted(tid[order], ids)
        pos = np.clip(pos, 0, len(tid) - 1)
        hit = tid[order][pos] == ids
        cols = _columns(truth.take(order[pos[hit]]))
        return np.flatnonzero(hit), cols
    tile_col = np.asarray(catalog["tile"].to_pylist(), dtype=object)
    for t, p in sorted(paths.items()):
        truth = pq.read_table(p)
        sel = np.flatnonzero(tile_col == t)
        if sel.size == 0 or truth.num_rows == 0:
            continue
        if "object_id" in truth.column_names:
            tid = truth["object_id"].to_numpy()
            lookup = {int(v): i for i, v in enumerate(tid)}
            pairs = [(r, lookup[int(ids[r])]) for r in sel if int(ids[r]) in lookup]
        elif {"x", "y"} <= set(truth.column_names) and {"x", "y"} <= set(catalog.column_names):
            tree = cKDTree(np.stack([truth["x"].to_numpy(), truth["y"].to_numpy()], axis=1))
            xy = np.stack([catalog["x"].to_numpy()[sel], catalog["y"].to_numpy()[sel]], axis=1)
            d, j = tree.query(xy, distance_upper_bound=radius)
            pairs = [(int(r), int(k)) for r, dd, k in zip(sel, d, j) if np.isfinite(dd)]
        else:
            continue
        if not pairs:
            continue
        r, k = np.array(pairs, dtype=np.int64).T
        rows.append(r)
        parts.append(_columns(truth.take(k)))
    if not rows:
        return None
    keys = set.intersection(*(set(c) for c in parts))
    return np.concatenate(rows), {k: np.concatenate([c[k] for c in parts]) for k in keys}


def read_overlay(store: Path, max_pixels: int = 1000) -> tuple[np.ndarray, np.ndarray, str]:
    """A band's image and its defect mask from ``tile.zarr``, decimated to <= max_pixels.

    The middle band is shown; the mask is OR-ed over the decimation blocks so that
    single-pixel defects stay visible.

    Raises
    ------
    FileNotFoundError, KeyError
        No store, or no ``image`` / ``defect_mask`` array.
    """
    from ..store import open_tile

    if not (Path(store) / "zarr.json").is_file():
        raise FileNotFoundError(str(store))
    ds = open_tile(store)
    if "image" not in ds or "defect_mask" not in ds:
        raise KeyError("image/defect_mask")
    bands = [str(b) for b in ds["band"].values]
    b = "r" if "r" in bands else bands[len(bands) // 2]
    image = np.asarray(ds["image"].sel(band=b).values, np.float32)
    mask = np.asarray(ds["defect_mask"].sel(band=b).values, np.uint16)
    step = max(1, -(-max(image.shape) // max_pixels))
    if step > 1:
        ny, nx = (image.shape[0] // step) * step, (image.shape[1] // step) * step
        image = image[:ny:step, :nx:step]
        m = mask[:ny, :nx].reshape(ny // step, step, nx // step, step)
        mask = np.bitwise_or.reduce(np.bitwise_or.reduce(m, axis=3), axis=1)
    return image, mask, f"{b} band" + (f", 1/{step} sampling" if step > 1 else "")


def read_stamps(path: Path, object_ids: Sequence[int]) -> tuple[dict[int, np.ndarray], list[str]]:
    """Stamps ``(band, S, S)`` of some objects from ``cutouts.zarr`` and the band names.

    Objects not in the store are left out.
    """
    import xarray as xr

    ds = xr.open_dataset(path, engine="zarr", consolidated=False, chunks=None)
    ids = np.asarray(ds["object_id"].values, np.int64)
    where = {int(v): i for i, v in enumerate(ids)}
    bands = ([str(b) for b in ds["band"].values] if "band" in ds.coords
             else [str(b) for b in ds.attrs.get("bands", [])])
    out = {}
    for oid in object_ids:
        i = where.get(int(oid))
        if i is not None:
            out[int(oid)] = np.asarray(ds["stamp"][i].values, np.float32)
    return out, bands
