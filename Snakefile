# tilecat: multi-band survey tiles -> AI-enriched galaxy catalog.
#   snakemake --cores 2 --configfile config/config.yaml
# Every rule is thin: it calls `tilecat <stage> TILE`, which also runs alone.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/ingest.smk"
include: "rules/mask.smk"
include: "rules/detect.smk"
include: "rules/infer.smk"
include: "rules/catalog.smk"
include: "rules/aggregate.smk"
include: "rules/report.smk"
include: "rules/batch.smk"
include: "rules/release.smk"
include: "rules/train.smk"


rule all:
    input:
        survey_catalog=f"{RESULTS}/catalog.parquet",
        qa_report=f"{RESULTS}/report.html",
    default_target: True
