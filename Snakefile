# Mixed-model workflow: simulate -> fit -> extract -> plot, and a run summary.
# Each rule runs one tested function of glmm_steps through a thin script in scripts/.
# Execution settings (cores, cluster) live in profiles/, never here.

import sys

from glmm_steps import paths
from glmm_steps.config import check_config
from glmm_steps.errors import GlmmError

# `--configfile other.yaml` replaces the default config instead of being merged into it
# (Snakemake's default), so a second analysis never drags the default models along.
if not workflow.config_settings.configfiles:
    configfile: "config/config.yaml"

try:
    PLAN = check_config(config, files=list(workflow.config_settings.configfiles) or ["config/config.yaml"])
except GlmmError as error:
    # One line, no traceback, before any job: existing results stay as they are.
    print(error, file=sys.stderr)
    sys.exit(1)


def out(kind, **keys):
    return paths.output_path(kind, PLAN.results, **keys)


def extract_outputs(fmt):
    """The extract step's outputs, predictions and random effects as `fmt` files."""
    return {t: out(t, model="{model}", replicate="{replicate}", fmt=fmt) for t in paths.TABLES}


def models_writing(fmt):
    """Wildcard pattern matching the models whose large tables are `fmt` files (none: never matches)."""
    return "|".join(PLAN.models_with_table_format(fmt)) or "(?!)"


wildcard_constraints:
    dataset=r"[A-Za-z][A-Za-z0-9_]*",
    model=r"[A-Za-z][A-Za-z0-9_]*",
    replicate=r"seed-\d+|file",
    seed=r"\d+",


rule all:
    default_target: True
    input:
        [out(t, model=f.model, replicate=f.replicate, fmt=PLAN.table_format(f.model))
         for f in PLAN.fits for t in paths.TABLES],
        [out("plot", model=f.model, replicate=f.replicate, plot=p) for f in PLAN.fits for p in paths.PLOTS],
        out("summary"),


rule simulate:
    output:
        data=out("data", dataset="{dataset}", replicate="seed-{seed}", fmt="csv"),
        truth=out("truth", dataset="{dataset}", replicate="seed-{seed}"),
    params:
        design=lambda w: PLAN.config["datasets"][w.dataset]["simulate"],
    log:
        out("log", rule="simulate", name="{dataset}_seed-{seed}"),
    script:
        "scripts/simulate.py"


# Large designs are simulated to Parquet (datasets.<name>.format): the same step under a
# second name, because one rule's outputs cannot change extension from dataset to dataset.
use rule simulate as simulate_parquet with:
    output:
        data=out("data", dataset="{dataset}", replicate="seed-{seed}", fmt="parquet"),
        truth=out("truth", dataset="{dataset}", replicate="seed-{seed}"),


rule fit:
    input:
        data=lambda w: PLAN.data_path(PLAN.dataset_of(w.model), w.replicate),
    output:
        fit=out("fit", model="{model}", replicate="{replicate}"),
    params:
        # The model's whole config entry: editing one model reruns that model alone.
        model=lambda w: PLAN.config["models"][w.model],
        factors=lambda w: PLAN.config["datasets"][PLAN.dataset_of(w.model)]["factors"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        out("log", rule="fit", name="{model}_{replicate}"),
    script:
        "scripts/fit.py"


rule extract:
    input:
        fit=rules.fit.output.fit,
    output:
        **extract_outputs("csv"),
    wildcard_constraints:
        model=models_writing("csv"),
    params:
        seed=lambda w: int(w.replicate.split("-")[1]) if w.replicate.startswith("seed-") else None,
        data_path=lambda w: PLAN.data_path(PLAN.dataset_of(w.model), w.replicate),
    log:
        out("log", rule="extract", name="{model}_{replicate}"),
    script:
        "scripts/extract.py"


# Large fits write predictions and random effects as Parquet (models.<name>.table_format);
# each model is matched by exactly one of the two rules.
use rule extract as extract_parquet with:
    output:
        **extract_outputs("parquet"),
    wildcard_constraints:
        model=models_writing("parquet"),


rule plot:
    input:
        predictions=lambda w: out("predictions", model=w.model, replicate=w.replicate, fmt=PLAN.table_format(w.model)),
        random_effects=lambda w: out("random_effects", model=w.model, replicate=w.replicate,
                                     fmt=PLAN.table_format(w.model)),
        fit_stats=rules.extract.output.fit_stats,
    output:
        **{p: out("plot", model="{model}", replicate="{replicate}", plot=p) for p in paths.PLOTS},
    log:
        out("log", rule="plot", name="{model}_{replicate}"),
    script:
        "scripts/plot.py"


rule summary:
    input:
        [out("fit_stats", model=f.model, replicate=f.replicate) for f in PLAN.fits],
    output:
        out("summary"),
    log:
        out("log", rule="summary", name="summary"),
    script:
        "scripts/summary.py"
