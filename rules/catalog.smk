rule catalog:
    """The tile's Parquet catalog: photometry joined with model outputs on object_id."""
    input:
        sources=rules.detect.output.sources,
        infer=rules.infer.output.infer,
    output:
        catalog=f"{RESULTS}/tiles/{{tile}}/catalog.parquet",
    params:
        config=CONFIGFILE,
    log:
        f"{RESULTS}/logs/catalog/{{tile}}.log",
    conda:
        "../envs/tilecat.yaml"
    threads: 1
    shell:
        "tilecat catalog {wildcards.tile} --config {params.config} 2>&1 | tee {log}"
