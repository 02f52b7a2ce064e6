rule tile_batch:
    """Batched mode: a batch of tiles, each through its whole chain, in one job."""
    input:
        manifest_file,
    output:
        marker=f"{RESULTS}/batches/{{batch}}.json",
    params:
        config=CONFIGFILE,
        tiles=batch_tile_ids,
    log:
        f"{RESULTS}/logs/batch/{{batch}}.log",
    conda:
        "../envs/tilecat.yaml"
    threads: 2
    shell:
        "tilecat run-batch {wildcards.batch} --config {params.config} 2>&1 | tee {log}"
