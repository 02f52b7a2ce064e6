rule aggregate:
    """Survey catalog from every tile: partitioned Parquet dataset + one file."""
    input:
        all_tile_catalogs,
    output:
        single=f"{RESULTS}/catalog.parquet",
        dataset=directory(f"{RESULTS}/catalog"),
    params:
        config=CONFIGFILE,
    log:
        f"{RESULTS}/logs/aggregate.log",
    conda:
        "../envs/tilecat.yaml"
    threads: 2
    shell:
        "tilecat aggregate --config {params.config} 2>&1 | tee {log}"
