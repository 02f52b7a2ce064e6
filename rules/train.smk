# Training workflow: `snakemake train_all` (never part of the default target `all`).
# The recipe (config/train.yaml, beside the Snakefile) names the simulated sets and each
# model's training stages; one `tilecat simulate-stamps` job per set, one `tilecat train`
# job per model. Sets go to data/train/, models to results/models/<model>/ (relative to
# the working directory); the shipped models in src/tilecat/data/models are never written.
import re

from tilecat.train import load_recipe
from tilecat.train.rules import (
    model_resource,
    model_set_paths,
    set_config_inputs,
    simulate_command_args,
)


TRAIN_RECIPE = f"{workflow.basedir}/config/train.yaml"
TRAIN_WORK = "data/train"
TRAIN_OUT = "results/models"
TRAIN_LOGS = "results/logs/train"
TRAIN = load_recipe(TRAIN_RECIPE)
TRAIN_MODELS = list(TRAIN.models)
TRAIN_SETS = list(TRAIN.sets)


wildcard_constraints:
    trainset="|".join(re.escape(s) for s in TRAIN_SETS),
    model="|".join(re.escape(m) for m in TRAIN_MODELS),


rule train_all:
    """Every model of the training recipe (results/models/<model>/)."""
    input:
        expand(f"{TRAIN_OUT}/{{model}}", model=TRAIN_MODELS),


rule simulate_training_set:
    """One simulated training / held-out set of the recipe (Zarr store, written atomically)."""
    input:
        config=lambda wc: set_config_inputs(TRAIN, wc.trainset),
    output:
        store=directory(f"{TRAIN_WORK}/{{trainset}}.zarr"),
    params:
        args=lambda wc: simulate_command_args(TRAIN, wc.trainset),
    log:
        f"{TRAIN_LOGS}/sets/{{trainset}}.log",
    conda:
        "../envs/tilecat.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "tilecat simulate-stamps {params.args} --workers {threads} --out {output.store}"
        " 2>&1 | tee {log}"


rule train_model:
    """One model trained as the recipe says: weights.safetensors + card.json."""
    input:
        sets=lambda wc: model_set_paths(TRAIN, wc.model, TRAIN_WORK, f"{TRAIN_OUT}/{wc.model}"),
    output:
        model=directory(f"{TRAIN_OUT}/{{model}}"),
    params:
        recipe=TRAIN_RECIPE,
        work=TRAIN_WORK,
        recipe_hash=lambda wc: TRAIN.model_hash(wc.model),
    log:
        f"{TRAIN_LOGS}/{{model}}.log",
    conda:
        "../envs/tilecat.yaml"
    # the torch threads the shipped model was trained (and reproduces) with: the
    # recipe's resources.threads (default 1)
    threads: lambda wc: model_resource(TRAIN, wc.model, "threads")
    resources:
        mem_mb=lambda wc: model_resource(TRAIN, wc.model, "mem_mb"),
        runtime=lambda wc: model_resource(TRAIN, wc.model, "runtime"),
    shell:
        "tilecat train {wildcards.model} --recipe {params.recipe} --work {params.work}"
        " --out {output.model} --threads {threads} 2>&1 | tee {log}"
