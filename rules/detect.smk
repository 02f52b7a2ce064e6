rule detect:
    """Background, multi-band detection, deblending, photometry, segmap and cutouts."""
    input:
        group=rules.ingest.output.group,
        image=rules.ingest.output.image,
        mask=rules.mask.output.mask,
    output:
        segmap=directory(f"{RESULTS}/tiles/{{tile}}/tile.zarr/segmap"),
        sources=f"{RESULTS}/tiles/{{tile}}/sources.parquet",
        cutouts=directory(f"{RESULTS}/tiles/{{tile}}/cutouts.zarr"),
    params:
        config=CONFIGFILE,
        index=tile_index,
    log:
        f"{RESULTS}/logs/detect/{{tile}}.log",
    conda:
        "../envs/tilecat.yaml"
    threads: 1
    shell:
        "tilecat detect {wildcards.tile} --index {params.index} --config {params.config}"
        " 2>&1 | tee {log}"
