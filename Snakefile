# Mixed-model workflow: simulate -> fit -> extract -> plot, and a run summary; and for
# simulation studies (datasets with `replicates:`), batches of replicates -> recovery.
# Each rule runs one tested function of glmm_steps through a thin script in scripts/.
# Execution settings (cores, cluster) live in profiles/, never here.

import sys

from glmm_steps import paths, study
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


wildcard_constraints:
    dataset=r"[A-Za-z][A-Za-z0-9_]*",
    model=r"[A-Za-z][A-Za-z0-9_]*",
    replicate=r"seed-\d+|file",
    seed=r"\d+",
    design=r"[A-Za-z0-9_.=,+-]+",
    batch=r"\d+-\d+",
    index=r"\d+",


rule all:
    default_target: True
    input:
        [out(t, model=f.model, replicate=f.replicate) for f in PLAN.fits for t in paths.TABLES],
        [out("plot", model=f.model, replicate=f.replicate, plot=p) for f in PLAN.fits for p in paths.PLOTS],
        # The per-seed fits' summary (a config of studies alone has none).
        [out("summary")] if PLAN.fits else [],
        [out("recovery", model=m) for m in PLAN.study_models],
        [out("recovery_plot", model=m, plot=p) for m in PLAN.study_models for p in paths.RECOVERY_PLOTS],


rule simulate:
    output:
        data=out("data", dataset="{dataset}", replicate="seed-{seed}"),
        truth=out("truth", dataset="{dataset}", replicate="seed-{seed}"),
    params:
        design=lambda w: PLAN.config["datasets"][w.dataset]["simulate"],
    log:
        out("log", rule="simulate", name="{dataset}_seed-{seed}"),
    script:
        "scripts/simulate.py"


rule fit:
    input:
        data=lambda w: PLAN.data_path(PLAN.dataset_of(w.model), w.replicate),
    output:
        fit=out("fit", model="{model}", replicate="{replicate}"),
    params:
        # The model's config entry: editing one model reruns that model alone.
        model=lambda w: PLAN.fit_entry(w.model),
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
        **{t: out(t, model="{model}", replicate="{replicate}") for t in paths.TABLES},
    params:
        seed=lambda w: int(w.replicate.split("-")[1]) if w.replicate.startswith("seed-") else None,
        data_path=lambda w: PLAN.data_path(PLAN.dataset_of(w.model), w.replicate),
    log:
        out("log", rule="extract", name="{model}_{replicate}"),
    script:
        "scripts/extract.py"


rule plot:
    input:
        predictions=rules.extract.output.predictions,
        random_effects=rules.extract.output.random_effects,
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


# A study: each job simulates, fits and tidies a batch of replicates in-process, since
# starting a job costs far more than one fit; only tables are written per batch.
rule study_batch:
    output:
        estimates=out("batch_estimates", model="{model}", design="{design}", batch="{batch}"),
        fits=out("batch_fits", model="{model}", design="{design}", batch="{batch}"),
    params:
        design=lambda w: PLAN.design_point(w.model, w.design).spec,
        model=lambda w: PLAN.fit_entry(w.model),
        factors=lambda w: PLAN.config["datasets"][PLAN.dataset_of(w.model)]["factors"],
        # (index, seed) of each replicate: changing base_seed or batch_size reruns the batch.
        replicates=lambda w: PLAN.replicate_seeds(w.model, *study.parse_batch_name(w.batch)),
    threads: 1
    resources:
        mem_mb=2000,
    log:
        out("log", rule="study_batch", name="{model}_{design}_{batch}"),
    script:
        "scripts/study_batch.py"


rule recovery:
    input:
        estimates=lambda w: [out("batch_estimates", model=w.model, design=b.design, batch=b.name)
                             for b in PLAN.batches_of(w.model)],
        fits=lambda w: [out("batch_fits", model=w.model, design=b.design, batch=b.name)
                        for b in PLAN.batches_of(w.model)],
    output:
        table=out("recovery", model="{model}"),
        **{p: out("recovery_plot", model="{model}", plot=p) for p in paths.RECOVERY_PLOTS},
    params:
        alpha=lambda w: PLAN.config["models"][w.model]["alpha"],
        power_terms=lambda w: PLAN.config["models"][w.model].get("power_terms"),
        designs=lambda w: {d: PLAN.design_point(w.model, d).values for d in PLAN.design_names(w.model)},
    log:
        out("log", rule="recovery", name="{model}"),
    script:
        "scripts/recovery.py"


# On demand only (not part of `all`): one replicate of a study rerun alone from its seed,
# with the data, tables and plots a per-seed analysis has, e.g.
#   snakemake results/studies/<model>/<design>/replicates/rep-7/fixed_effects.csv
rule study_replicate:
    output:
        **paths.replicate_outputs(PLAN.results, model="{model}", design="{design}", index="{index}"),
    params:
        design=lambda w: PLAN.design_point(w.model, w.design).spec,
        model=lambda w: PLAN.fit_entry(w.model),
        factors=lambda w: PLAN.config["datasets"][PLAN.dataset_of(w.model)]["factors"],
        seed=lambda w: PLAN.replicate_seeds(w.model, int(w.index), int(w.index))[0][1],
    log:
        out("log", rule="study_replicate", name="{model}_{design}_rep-{index}"),
    script:
        "scripts/study_replicate.py"
