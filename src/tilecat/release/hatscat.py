"""The release catalog as a HATS catalog (HEALPix-partitioned Parquet) via lsdb/hats.

``lsdb.read_hats(release/<v>/hats)`` opens it (a HATS collection: the catalog and a
5-arcsec margin cache, so cross-matches near partition edges are complete), and can
cone-search and cross-match it. The HATS properties carry the release provenance
(``tilecat_release``, ``tilecat_config_hash``, ``tilecat_model_sha256``).

Deterministic: no wall-clock time is written (``hats_creation_date`` is the
configured release date, or absent), so a rebuild gives the same bytes.

Notes
-----
The catalog is partitioned in memory (``lsdb.from_dataframe``), which suits up to a
few million rows. For larger surveys hats-import's map-reduce is the tool; its
current release pins ``packaging>=26.1`` while Snakemake 9.27 pins
``packaging<26``, so it cannot share tilecat's environment today.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_hats", "HATS_DIR"]

#: Sub-directory of a release holding the HATS collection.
HATS_DIR = "hats"


def _stamp_leaves(catalog: Path, metadata: dict[bytes, bytes]) -> None:
    """Add ``metadata`` to every data file of a HATS catalog (row groups and
    encodings kept), then rewrite its ``_metadata``/``_common_metadata`` and
    per-partition statistics."""
    import pyarrow.parquet as pq
    from hats.io.file_io import get_parquet_write_table_kwargs
    from hats.io.parquet_metadata import write_parquet_metadata

    leaves = sorted((catalog / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))
    for leaf in leaves:
        src = pq.ParquetFile(leaf)
        schema = src.schema_arrow
        schema = schema.with_metadata({**(schema.metadata or {}), **metadata})
        kwargs = get_parquet_write_table_kwargs(schema)
        kwargs.pop("row_group_size", None)
        tmp = leaf.with_name(f".{leaf.name}.tmp")
        with pq.ParquetWriter(tmp, schema, **kwargs) as writer:
            for i in range(src.num_row_groups):
                writer.write_table(src.read_row_group(i).replace_schema_metadata(
                    schema.metadata))
        src.close()
        tmp.replace(leaf)
    if leaves:
        write_parquet_metadata(catalog, create_per_partition_stats=(
            catalog / "per_partition_statistics.parquet").exists())


def write_hats(parts: list[Path], out: Path, name: str, properties: dict[str, str],
               date: str | None = None, margin_arcsec: float = 5.0,
               metadata: dict[bytes, bytes] | None = None) -> Path:
    """Write the Parquet ``parts`` (one survey catalog) as a HATS collection in ``out``.

    Parameters
    ----------
    parts : list of Path
        Partition files of the survey catalog (rows with ``ra``, ``dec`` in deg).
    out : Path
        New directory of the collection (must not exist).
    name : str
        Catalog name (the survey name).
    properties : dict of str to str
        Extra HATS properties (release provenance).
    date : str, optional
        ``hats_creation_date``; None leaves it out.
    metadata : dict of bytes to bytes, optional
        Key-value metadata added to every data file (release provenance, units).
    margin_arcsec : float
        Width of the margin cache (arcsec).

    Returns
    -------
    Path
        ``out``.
    """
    import lsdb
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from hats.catalog.catalog_collection import CollectionProperties
    from lsdb.io.to_hats import to_hats

    table = pa.concat_tables([pq.read_table(p).replace_schema_metadata(None) for p in parts])
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)
    catalog = lsdb.from_dataframe(frame, ra_column="ra", dec_column="dec", catalog_name=name,
                                  margin_threshold=margin_arcsec)
    provenance: dict[str, Any] = {"hats_creation_date": date, **properties}
    out = Path(out)
    out.mkdir(parents=True)
    to_hats(catalog, base_catalog_path=out / name, catalog_name=name,
            addl_hats_properties=dict(provenance), progress_bar=False)
    collection: dict[str, Any] = {"obs_collection": name, "hats_primary_table_url": name}
    if catalog.margin is not None:
        margin_name = f"{name}_{int(margin_arcsec)}arcs"
        to_hats(catalog.margin, base_catalog_path=out / margin_name, catalog_name=margin_name,
                addl_hats_properties=dict(provenance), progress_bar=False,
                error_if_empty=False)
        collection.update(all_margins=margin_name, default_margin=margin_name)
    if metadata:
        for sub in sorted(p for p in out.iterdir() if p.is_dir()):
            _stamp_leaves(sub, metadata)
    from lsdb.io.common import new_provenance_properties

    collection.update(new_provenance_properties(out))
    collection.update(provenance)
    collection = {k: v for k, v in collection.items() if v is not None}
    CollectionProperties(**collection).to_properties_file(out)
    return out
