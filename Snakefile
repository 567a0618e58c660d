# Mixed-model workflow: simulate -> fit -> extract -> plot, then provenance
# (manifest per result version, catalog of all versions) and a run summary;
# verify (a second engine) and compare (anova-style tables) for the models that ask;
# and for simulation studies (datasets with `replicates:`), batches of replicates -> recovery.
# Each rule runs one tested function of glmm_steps through a thin script in scripts/.
# Execution settings (cores, cluster) live in profiles/, never here.

import os
import sys

from glmm_steps import cluster, paths, study
from glmm_steps.config import check_config, read_yaml
from glmm_steps.errors import GlmmError
from glmm_steps.provenance import verify_outputs
from glmm_steps.summary import status_line

try:
    # `--configfile other.yaml` replaces the default config instead of being merged into it
    # (Snakemake's default), so a second analysis never drags the default models along.
    if not workflow.config_settings.configfiles:
        read_yaml("config/config.yaml")  # a YAML slip reported with its line, before Snakemake's loader
        configfile: "config/config.yaml"
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
def _dry_run():
    """True for `snakemake -n`: while this file is read, `workflow.dryrun` is always
    False (the executor is chosen later), so look at the command line itself."""
    short = [a[1:] for a in sys.argv[1:] if a.startswith("-") and not a.startswith("--") and a[1:].isalpha()]
    return any(a in ("--dry-run", "--dryrun") for a in sys.argv) or any("n" in a for a in short)


if workflow.is_main_process and not _dry_run():
    for _model, _version in PLAN.versions.items():
        _manifest = out("manifest", model=_model, version=_version)
        if os.path.exists(_manifest):
            for _bad in verify_outputs(_manifest):
                print(f"checksum mismatch: {_bad} differs from {_manifest}; rebuilding it", file=sys.stderr)
                os.remove(_bad)


def extract_outputs(fmt):
    """The extract step's outputs, predictions and random effects as `fmt` files."""
    return {t: _table(t, fmt, caption=t in ("fixed_effects", "variance_components")) for t in paths.TABLES}


def datasets_writing(fmt):
    """Wildcard pattern matching the simulated datasets stored as `fmt` files (none: never matches)."""
    return "|".join(d for d, _ in dict.fromkeys(PLAN.simulated()) if PLAN.data_format(d) == fmt) or "(?!)"


def models_writing(fmt):
    """Wildcard pattern matching the models whose large tables are `fmt` files (none: never matches)."""
    return "|".join(PLAN.models_with_table_format(fmt)) or "(?!)"


wildcard_constraints:
    dataset=r"[A-Za-z][A-Za-z0-9_]*",
    model=r"[A-Za-z][A-Za-z0-9_]*",
    version=r"[0-9a-f]{10}",
    version_a=r"[0-9a-f]{10}",
    version_b=r"[0-9a-f]{10}",
    replicate=r"seed-\d+|file",
    seed=r"\d+",
    design=r"[A-Za-z0-9_.=,+-]+",
    batch=r"\d+-\d+",
    index=r"\d+",


def replicate_data(w):
    """The data file of the model's dataset on this replicate."""
    return PLAN.data_path(PLAN.dataset_of(w.model), w.replicate)


def replicate_seed(w):
    """The replicate's seed (None for a data file)."""
    return paths.replicate_seed(w.replicate)


def dataset_setting(key):
    """A params function: the model's dataset's config value ``key``."""
    return lambda w: PLAN.config["datasets"][PLAN.dataset_of(w.model)][key]


def current_version(w):
    """Fail early if a path names a version other than the config's (its numbers
    would not be what its key says)."""
    if PLAN.versions.get(w.model) != w.version:
        raise GlmmError(f"{w.model}/{w.version} is not the current config's version "
                        f"({PLAN.versions.get(w.model)}); old versions are kept, never rebuilt")
    return replicate_data(w)


def version_files(w):
    """Every input and output of one model version, for its manifest."""
    fits = PLAN.fits_of(w.model)
    keys = dict(model=w.model, version=w.version)
    data = sorted({PLAN.data_path(f.dataset, f.replicate) for f in fits})
    truth = [out("truth", dataset=f.dataset, replicate=f.replicate) for f in fits if f.replicate != "file"]
    fmt = PLAN.table_format(w.model)
    outputs = [out(t, replicate=f.replicate, fmt=fmt, **keys) for f in fits for t in ("fit",) + paths.TABLES]
    outputs += [out("plot", replicate=f.replicate, plot=p, **keys) for f in fits for p in paths.PLOTS]
    return {"inputs": data + truth, "outputs": outputs}


rule all:
    default_target: True
    input:
        [out(t, model=f.model, version=f.version, replicate=f.replicate, fmt=PLAN.table_format(f.model))
         for f in PLAN.fits for t in paths.TABLES],
        [out("plot", model=f.model, version=f.version, replicate=f.replicate, plot=p)
         for f in PLAN.fits for p in paths.PLOTS],
        [out(t, model=f.model, version=f.version, replicate=f.replicate)
         for f in PLAN.compared() for t in paths.COMPARISON_TABLES],
        [out("manifest", model=m, version=v) for m, v in PLAN.versions.items()],
        # The per-seed fits' catalog and summary (a config of studies alone has neither).
        [out("catalog"), out("summary")] if PLAN.fits else [],
        [out("recovery", model=m) for m in PLAN.study_models],
        [out("recovery_plot", model=m, plot=p) for m in PLAN.study_models for p in paths.RECOVERY_PLOTS],


rule simulate:
    output:
        data=out("data", dataset="{dataset}", replicate="seed-{seed}", fmt="csv"),
        truth=out("truth", dataset="{dataset}", replicate="seed-{seed}"),
    wildcard_constraints:
        dataset=datasets_writing("csv"),
    params:
        design=lambda w: PLAN.config["datasets"][w.dataset]["simulate"],
    threads: 1
    resources:
        **resources_of("simulate", mem_mb=1000, runtime=10),
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
    wildcard_constraints:
        dataset=datasets_writing("parquet"),


rule fit:
    input:
        data=current_version,
    output:
        fit=out("fit", model="{model}", version="{version}", replicate="{replicate}"),
    params:
        # The model's config entry: editing one model reruns that model alone.
        model=lambda w: PLAN.fit_entry(w.model),
        factors=dataset_setting("factors"),
        drop_missing=dataset_setting("drop_missing"),
    threads: 1
    resources:
        **resources_of("fit", mem_mb=2000, runtime=30),
    log:
        out("log", rule="fit", name="{model}_{version}_{replicate}"),
    script:
        "scripts/fit.py"


def _table(name, fmt, caption=False):
    path = out(name, model="{model}", version="{version}", replicate="{replicate}", fmt=fmt)
    if not caption:
        return path
    return report(path, caption=f"report/{name}.rst", category="{model}", subcategory="{replicate}",
                  labels={"model": "{model}", "replicate": "{replicate}", "table": name})


rule extract:
    input:
        fit=rules.fit.output.fit,
    output:
        **extract_outputs("csv"),
    wildcard_constraints:
        model=models_writing("csv"),
    params:
        seed=replicate_seed,
        data_path=replicate_data,
    threads: 1
    resources:
        **resources_of("extract", mem_mb=1000, runtime=10),
    log:
        out("log", rule="extract", name="{model}_{version}_{replicate}"),
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
        predictions=lambda w: out("predictions", model=w.model, version=w.version, replicate=w.replicate,
                                  fmt=PLAN.table_format(w.model)),
        random_effects=lambda w: out("random_effects", model=w.model, version=w.version, replicate=w.replicate,
                                     fmt=PLAN.table_format(w.model)),
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
            "model": PLAN.fit_entry(w.model),
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


rule verify:
    input:
        fit=rules.fit.output.fit,
    output:
        verification=out("verification", model="{model}", version="{version}", replicate="{replicate}"),
        fit_stats=out("verification_fit_stats", model="{model}", version="{version}", replicate="{replicate}"),
    params:
        rtol=lambda w: PLAN.config["models"][w.model]["verify_rtol"],
        loglik_tol=lambda w: PLAN.config["models"][w.model]["verify_loglik_tol"],
        seed=replicate_seed,
        data_path=replicate_data,
    log:
        out("log", rule="verify", name="{model}_{version}_{replicate}"),
    script:
        "scripts/verify.py"


rule compare:
    input:
        # The model itself first, then the models it names, all on this replicate.
        fits=lambda w: [out("fit", model=m, version=PLAN.versions[m], replicate=w.replicate)
                        for m in [w.model, *PLAN.config["models"][w.model]["compare_with"]]],
    output:
        **{t: out(t, model="{model}", version="{version}", replicate="{replicate}") for t in paths.COMPARISON_TABLES},
    log:
        out("log", rule="compare", name="{model}_{version}_{replicate}"),
    script:
        "scripts/compare.py"


rule summary:
    input:
        fit_stats=[out("fit_stats", model=f.model, version=f.version, replicate=f.replicate) for f in PLAN.fits],
        verification=[out("verification", model=f.model, version=f.version, replicate=f.replicate)
                      for f in PLAN.verified()],
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


# A study: each job simulates, fits and tidies a batch of replicates in-process, since
# starting a job costs far more than one fit; only tables are written per batch.
rule study_batch:
    output:
        estimates=out("batch_estimates", model="{model}", design="{design}", batch="{batch}"),
        fits=out("batch_fits", model="{model}", design="{design}", batch="{batch}"),
    params:
        design=lambda w: PLAN.design_point(w.model, w.design).spec,
        model=lambda w: PLAN.fit_entry(w.model),
        factors=dataset_setting("factors"),
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
        factors=dataset_setting("factors"),
        seed=lambda w: PLAN.replicate_seeds(w.model, int(w.index), int(w.index))[0][1],
    log:
        out("log", rule="study_replicate", name="{model}_{design}_rep-{index}"),
    script:
        "scripts/study_replicate.py"


onsuccess:
    # A failed fit never stops the run; say how many there were so none goes unnoticed.
    if os.path.exists(out("summary")):
        print(status_line(out("summary")), file=sys.stderr)
