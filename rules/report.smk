rule qa_report:
    """The survey's QA report: one self-contained HTML file, also in `snakemake --report`."""
    input:
        catalog=rules.aggregate.output.single,
    output:
        report=report(
            f"{RESULTS}/report.html",
            caption="../workflow/report/qa.rst",
            category="Quality assurance",
        ),
    params:
        config=CONFIGFILE,
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "../envs/tilecat.yaml"
    threads: 1
    shell:
        "tilecat report --config {params.config} 2>&1 | tee {log}"
