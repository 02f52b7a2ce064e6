"""``similar``: the nearest neighbours of an object in VAE latent space.

Reads the ``latent`` column (fixed_size_list<float32, D>) of a tile's
``infer.parquet``, a tile catalog or the survey catalog (one file or a directory of
Parquet files), and returns the ``k`` objects closest to ``object_id`` in Euclidean
latent distance (latents are ~N(0, I) by construction), the object itself first.
The lead's CLI wires ``tilecat similar OBJECT_ID -k 10`` to :func:`similar`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["similar", "LATENT_COLUMN"]

LATENT_COLUMN = "latent"
_KEEP = ("ra", "dec", "z_median", "latent_outlier_score", "recon_chi2")


def similar(catalog_path: str | Path, object_id: int, k: int = 10,
            columns: Sequence[str] | None = None) -> "object":
    """The ``k`` nearest neighbours of ``object_id`` in latent space.

    Parameters
    ----------
    catalog_path : path
        Parquet file or directory of Parquet files with ``object_id`` and ``latent``.
    object_id : int
        The query object.
    k : int
        Number of rows returned, the query object included (>= 1).
    columns : sequence of str, optional
        Extra columns to carry over (default: those of ``ra``, ``dec``, ``z_median``,
        ``latent_outlier_score``, ``recon_chi2`` present in the file).

    Returns
    -------
    pyarrow.Table
        Columns ``rank`` (int32, 0 = the query), ``object_id`` (int64), ``distance``
        (float32, latent units), then the extra columns; sorted by distance, ties by
        object_id, the query object first.

    Raises
    ------
    InputError
        Missing file, no ``latent``/``object_id`` column, unknown ``object_id``, or
        ``k`` < 1.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds
    from sklearn.neighbors import NearestNeighbors

    path = Path(catalog_path)
    if not path.exists():
        raise InputError("-", str(path), "catalog does not exist")
    if int(k) < 1:
        raise InputError("-", str(path), f"k must be >= 1, got {k}")
    try:
        dset = ds.dataset(str(path), format="parquet")
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise InputError("-", str(path), f"cannot read catalog: {exc}") from exc
    names = set(dset.schema.names)
    for col in ("object_id", LATENT_COLUMN):
        if col not in names:
            raise InputError("-", str(path), f"catalog has no {col!r} column "
                                             "(run infer with the 'latent' model)")
    extra = [c for c in (columns if columns is not None else _KEEP) if c in names]
    table = dset.to_table(columns=["object_id", LATENT_COLUMN, *extra])
    ids = table.column("object_id").to_numpy()
    lat_col = table.column(LATENT_COLUMN).combine_chunks()
    dim = lat_col.type.list_size if pa.types.is_fixed_size_list(lat_col.type) else None
    flat = lat_col.flatten().to_numpy(zero_copy_only=False)
    if dim is None:
        dim = flat.size // max(len(ids), 1)
    lat = np.asarray(flat, np.float32).reshape(len(ids), dim)
    hit = np.flatnonzero(ids == int(object_id))
    if hit.size == 0:
        raise InputError("-", str(path), f"object_id {object_id} is not in the catalog")
    q = int(hit[0])
    kk = min(int(k), len(ids))
    nn = NearestNeighbors(n_neighbors=kk, algorithm="auto").fit(lat)
    dist, idx = nn.kneighbors(lat[q:q + 1], n_neighbors=kk)
    dist, idx = dist[0], idx[0]
    # the query first, then by distance and object_id (deterministic ties)
    order = sorted(range(kk), key=lambda j: (idx[j] != q, float(dist[j]), int(ids[idx[j]])))
    if q not in idx:  # many exact duplicates: force the query in
        idx = np.concatenate([[q], idx[:-1]])
        dist = np.concatenate([[0.0], dist[:-1]])
        order = list(range(kk))
    sel = idx[order]
    out = {
        "rank": pa.array(np.arange(kk, dtype=np.int32)),
        "object_id": pa.array(ids[sel].astype(np.int64)),
        "distance": pa.array(np.asarray(dist)[order].astype(np.float32)),
    }
    for c in extra:
        out[c] = table.column(c).take(pa.array(sel))
    return pa.table(out)
