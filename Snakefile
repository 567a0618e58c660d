# Mixed-model workflow: simulate -> fit -> extract -> plot, then provenance
# (manifest per result version, catalog of all versions) and a run summary.
# Each rule runs one tested function of glmm_steps through a thin script in scripts/.
# Execution settings (cores, cluster) live in profiles/, never here.

import os
import sys

from glmm_steps import cluster, paths
from glmm_steps.config import check_config
from glmm_steps.errors import GlmmError
from glmm_steps.provenance import verify_outputs

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

report: "report/workflow.rst"

# Bookkeeping rules that take well under a second: on a cluster they run in the main
# process, since queueing them would cost more than running them.
localrules: all, manifest, catalog, summary, compare_versions


def out(kind, **keys):
    return paths.output_path(kind, PLAN.results, **keys)


def resources_of(rule, **defaults):
    """The scheduler resources of ``rule``: ``defaults``, overridden by the config's
    ``resources.<rule>``, with memory and time growing on each retry."""
    return {name: (lambda wildcards, attempt, name=name: cluster.rule_resources(PLAN.config, rule, defaults, attempt)[name])
            for name in cluster.rule_resources(PLAN.config, rule, defaults)}


# A SLURM run without SLURM would fail every job with a shell error: say it once, before
# any job. The executor is only known once the run starts, hence onstart.
onstart:
    if workflow.is_main_process:
        _problem = cluster.missing_scheduler(workflow.executor_plugin.name)
        if _problem:
            print(_problem, file=sys.stderr)
            sys.exit(1)


# A current output whose bytes no longer match its manifest was corrupted after it was
# written: remove it so Snakemake rebuilds it (and what depends on it). Only the main
# process does this, and never in a dry run; cluster jobs re-read this file too.
if workflow.is_main_process and not workflow.dryrun:
    for _model, _version in PLAN.versions.items():
        _manifest = out("manifest", model=_model, version=_version)
        if os.path.exists(_manifest):
            for _bad in verify_outputs(_manifest):
                print(f"checksum mismatch: {_bad} differs from {_manifest}; rebuilding it", file=sys.stderr)
                os.remove(_bad)


wildcard_constraints:
    dataset=r"[A-Za-z][A-Za-z0-9_]*",
    model=r"[A-Za-z][A-Za-z0-9_]*",
    version=r"[0-9a-f]{10}",
    version_a=r"[0-9a-f]{10}",
    version_b=r"[0-9a-f]{10}",
    replicate=r"seed-\d+|file",
    seed=r"\d+",


def current_version(w):
    """Fail early if a path names a version other than the config's (its numbers
    would not be what its key says)."""
    if PLAN.versions.get(w.model) != w.version:
        raise GlmmError(f"{w.model}/{w.version} is not the current config's version "
                        f"({PLAN.versions.get(w.model)}); old versions are kept, never rebuilt")
    return PLAN.data_path(PLAN.dataset_of(w.model), w.replicate)


def version_files(w):
    """Every input and output of one model version, for its manifest."""
    fits = PLAN.fits_of(w.model)
    keys = dict(model=w.model, version=w.version)
    data = sorted({PLAN.data_path(f.dataset, f.replicate) for f in fits})
    truth = [out("truth", dataset=f.dataset, replicate=f.replicate) for f in fits if f.replicate != "file"]
    outputs = [out(t, replicate=f.replicate, **keys) for f in fits for t in ("fit",) + paths.TABLES]
    outputs += [out("plot", replicate=f.replicate, plot=p, **keys) for f in fits for p in paths.PLOTS]
    return {"inputs": data + truth, "outputs": outputs}


rule all:
    default_target: True
    input:
        [out(t, model=f.model, version=f.version, replicate=f.replicate) for f in PLAN.fits for t in paths.TABLES],
        [out("plot", model=f.model, version=f.version, replicate=f.replicate, plot=p)
         for f in PLAN.fits for p in paths.PLOTS],
        [out("manifest", model=m, version=v) for m, v in PLAN.versions.items()],
        out("catalog"),
        out("summary"),


rule simulate:
    output:
        data=out("data", dataset="{dataset}", replicate="seed-{seed}"),
        truth=out("truth", dataset="{dataset}", replicate="seed-{seed}"),
    params:
        design=lambda w: PLAN.config["datasets"][w.dataset]["simulate"],
    threads: 1
    resources:
        **resources_of("simulate", mem_mb=1000, runtime=10),
    log:
        out("log", rule="simulate", name="{dataset}_seed-{seed}"),
    script:
        "scripts/simulate.py"


rule fit:
    input:
        data=current_version,
    output:
        fit=out("fit", model="{model}", version="{version}", replicate="{replicate}"),
    params:
        # The model's whole config entry: editing one model reruns that model alone.
        model=lambda w: PLAN.config["models"][w.model],
        factors=lambda w: PLAN.config["datasets"][PLAN.dataset_of(w.model)]["factors"],
    threads: 1
    resources:
        **resources_of("fit", mem_mb=2000, runtime=30),
    log:
        out("log", rule="fit", name="{model}_{version}_{replicate}"),
    script:
        "scripts/fit.py"


def _table(name, caption=None):
    path = out(name, model="{model}", version="{version}", replicate="{replicate}")
    if caption is None:
        return path
    return report(path, caption=f"report/{name}.rst", category="{model}", subcategory="{replicate}",
                  labels={"model": "{model}", "replicate": "{replicate}", "table": name})


rule extract:
    input:
        fit=rules.fit.output.fit,
    output:
        fixed_effects=_table("fixed_effects", caption=True),
        variance_components=_table("variance_components", caption=True),
        random_effects=_table("random_effects"),
        predictions=_table("predictions"),
        fit_stats=_table("fit_stats"),
    params:
        seed=lambda w: int(w.replicate.split("-")[1]) if w.replicate.startswith("seed-") else None,
        data_path=lambda w: PLAN.data_path(PLAN.dataset_of(w.model), w.replicate),
    threads: 1
    resources:
        **resources_of("extract", mem_mb=1000, runtime=10),
    log:
        out("log", rule="extract", name="{model}_{version}_{replicate}"),
    script:
        "scripts/extract.py"


rule plot:
    input:
        predictions=rules.extract.output.predictions,
        random_effects=rules.extract.output.random_effects,
        fit_stats=rules.extract.output.fit_stats,
    output:
        **{
            p: report(out("plot", model="{model}", version="{version}", replicate="{replicate}", plot=p),
                      caption=f"report/{p}.rst", category="{model}", subcategory="{replicate}",
                      labels={"model": "{model}", "replicate": "{replicate}", "plot": p})
            for p in paths.PLOTS
        },
    threads: 1
    resources:
        **resources_of("plot", mem_mb=1000, runtime=10),
    log:
        out("log", rule="plot", name="{model}_{version}_{replicate}"),
    script:
        "scripts/plot.py"


rule manifest:
    input:
        unpack(version_files),
    output:
        report(out("manifest", model="{model}", version="{version}"), caption="report/manifest.rst",
               category="provenance", labels={"model": "{model}", "version": "{version}"}),
    params:
        config_excerpt=lambda w: {
            "model": PLAN.config["models"][w.model],
            "dataset": PLAN.config["datasets"][PLAN.dataset_of(w.model)],
        },
        seeds=lambda w: [f.replicate for f in PLAN.fits_of(w.model)],
    log:
        out("log", rule="manifest", name="{model}_{version}"),
    script:
        "scripts/manifest.py"


rule catalog:
    input:
        [out("manifest", model=m, version=v) for m, v in PLAN.versions.items()],
    output:
        report(out("catalog"), caption="report/catalog.rst", category="provenance"),
    params:
        models_dir=f"{PLAN.results}/models",
        current=PLAN.versions,
    log:
        out("log", rule="catalog", name="catalog"),
    script:
        "scripts/catalog.py"


rule summary:
    input:
        [out("fit_stats", model=f.model, version=f.version, replicate=f.replicate) for f in PLAN.fits],
    output:
        report(out("summary"), caption="report/summary.rst", category="summary"),
    log:
        out("log", rule="summary", name="summary"),
    script:
        "scripts/summary.py"


# Compare two versions of a model (see README): the folders must exist on disk.
rule compare_versions:
    input:
        a=out("fit_stats", model="{model}", version="{version_a}", replicate="{replicate}"),
        b=out("fit_stats", model="{model}", version="{version_b}", replicate="{replicate}"),
    output:
        out("comparison", model="{model}", version_a="{version_a}", version_b="{version_b}", replicate="{replicate}"),
    log:
        out("log", rule="compare", name="{model}_{version_a}_vs_{version_b}_{replicate}"),
    script:
        "scripts/compare_versions.py"
