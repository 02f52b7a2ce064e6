rule build_release:
    """release/<version>/: survey catalog (Parquet + HATS), QA report, manifest.json."""
    input:
        dataset=rules.aggregate.output.dataset,
        report=release_report,
    output:
        release=directory(f"{RELEASES}/{{version}}"),
    params:
        config=CONFIGFILE,
    log:
        f"{RESULTS}/logs/release/{{version}}.log",
    conda:
        "../envs/tilecat.yaml"
    threads: 2
    shell:
        "tilecat release --version {wildcards.version} --config {params.config} --force"
        " 2>&1 | tee {log}"


rule release:
    """The release named by config `release.version` (`snakemake release`)."""
    input:
        release_target,
