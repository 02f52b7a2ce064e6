rule ingest:
    """FITS per band -> tile.zarr (image, invvar, dq) with Dask per-block readers."""
    input:
        tile_input_files,
    output:
        group=f"{RESULTS}/tiles/{{tile}}/tile.zarr/zarr.json",
        band=directory(f"{RESULTS}/tiles/{{tile}}/tile.zarr/band"),
        image=directory(f"{RESULTS}/tiles/{{tile}}/tile.zarr/image"),
        invvar=directory(f"{RESULTS}/tiles/{{tile}}/tile.zarr/invvar"),
        dq=directory(f"{RESULTS}/tiles/{{tile}}/tile.zarr/dq"),
    params:
        config=CONFIGFILE,
        index=tile_index,
    log:
        f"{RESULTS}/logs/ingest/{{tile}}.log",
    conda:
        "../envs/tilecat.yaml"
    threads: 2
    shell:
        "tilecat ingest {wildcards.tile} --index {params.index} --config {params.config}"
        " 2>&1 | tee {log}"
