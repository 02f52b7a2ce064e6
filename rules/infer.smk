rule infer:
    """Every configured galaxy model over the tile's cutouts, in one batched pass."""
    input:
        cutouts=rules.detect.output.cutouts,
    output:
        infer=f"{RESULTS}/tiles/{{tile}}/infer.parquet",
    params:
        config=CONFIGFILE,
    log:
        f"{RESULTS}/logs/infer/{{tile}}.log",
    conda:
        "../envs/tilecat.yaml"
    threads: 2
    shell:
        "tilecat infer {wildcards.tile} --config {params.config} 2>&1 | tee {log}"
