# Mixed-model workflow: simulate -> fit -> extract -> plot, and a run summary;
# verify (a second engine) and compare (anova-style tables) for the models that ask.
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


wildcard_constraints:
    dataset=r"[A-Za-z][A-Za-z0-9_]*",
    model=r"[A-Za-z][A-Za-z0-9_]*",
    replicate=r"seed-\d+|file",
    seed=r"\d+",


rule all:
    default_target: True
    input:
        [out(t, model=f.model, replicate=f.replicate) for f in PLAN.fits for t in paths.TABLES],
        [out("plot", model=f.model, replicate=f.replicate, plot=p) for f in PLAN.fits for p in paths.PLOTS],
        [out(t, model=f.model, replicate=f.replicate) for f in PLAN.compared() for t in paths.COMPARISON_TABLES],
        out("summary"),


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


rule verify:
    input:
        fit=rules.fit.output.fit,
    output:
        verification=out("verification", model="{model}", replicate="{replicate}"),
        fit_stats=out("verification_fit_stats", model="{model}", replicate="{replicate}"),
    params:
        rtol=lambda w: PLAN.config["models"][w.model]["verify_rtol"],
        loglik_tol=lambda w: PLAN.config["models"][w.model]["verify_loglik_tol"],
        seed=lambda w: int(w.replicate.split("-")[1]) if w.replicate.startswith("seed-") else None,
        data_path=lambda w: PLAN.data_path(PLAN.dataset_of(w.model), w.replicate),
    log:
        out("log", rule="verify", name="{model}_{replicate}"),
    script:
        "scripts/verify.py"


rule compare:
    input:
        # The model itself first, then the models it names, all on this replicate.
        fits=lambda w: [out("fit", model=m, replicate=w.replicate)
                        for m in [w.model, *PLAN.config["models"][w.model]["compare_with"]]],
    output:
        **{t: out(t, model="{model}", replicate="{replicate}") for t in paths.COMPARISON_TABLES},
    log:
        out("log", rule="compare", name="{model}_{replicate}"),
    script:
        "scripts/compare.py"


rule summary:
    input:
        fit_stats=[out("fit_stats", model=f.model, replicate=f.replicate) for f in PLAN.fits],
        verification=[out("verification", model=f.model, replicate=f.replicate) for f in PLAN.verified()],
    output:
        out("summary"),
    log:
        out("log", rule="summary", name="summary"),
    script:
        "scripts/summary.py"
