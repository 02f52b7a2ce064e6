rule mask:
    """Per-pixel defect probabilities (CNN) and bits (CNN + rules) into tile.zarr."""
    input:
        group=rules.ingest.output.group,
        image=rules.ingest.output.image,
        invvar=rules.ingest.output.invvar,
        dq=rules.ingest.output.dq,
    output:
        classes=directory(f"{RESULTS}/tiles/{{tile}}/tile.zarr/class"),
        prob=directory(f"{RESULTS}/tiles/{{tile}}/tile.zarr/defect_prob"),
        mask=directory(f"{RESULTS}/tiles/{{tile}}/tile.zarr/defect_mask"),
    params:
        config=CONFIGFILE,
    log:
        f"{RESULTS}/logs/mask/{{tile}}.log",
    conda:
        "../envs/tilecat.yaml"
    threads: 2
    shell:
        "tilecat mask {wildcards.tile} --config {params.config} 2>&1 | tee {log}"
