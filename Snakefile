# Mixed-model workflow: simulate -> fit -> extract -> plot, then provenance
# (manifest per result version, catalog of all versions) and a run summary;
# verify (a second engine) and compare (anova-style tables) for the models that ask;
# and for simulation studies (datasets with `replicates:`), batches of replicates -> recovery.
# Each rule runs one tested function of glmm_steps through a thin script in scripts/.
# Execution settings (cores, cluster) live in profiles/, never here.

import os
import sys

from snakemake.utils import update_config

from glmm_steps import bootstrap, cluster, integrity, paths, process_exit, study
from glmm_steps.config import check_config, read_yaml
from glmm_steps.errors import GlmmError
from glmm_steps.summary import closing_summary, study_power_lines

try:
    # The default config is read by the project's reader, never Snakemake's, which runs
    # YTE templates (Python) in YAML files. `--configfile other` replaces it (not merged:
    # a second analysis never drags the default models along); `glmm-steps run` hands
    # Snakemake the checked config as JSON, which it reads without templating.
    if not workflow.config_settings.configfiles:
        _default = read_yaml("config/config.yaml")
        update_config(_default, workflow.config_settings.overwrite_config)  # `--config key=value` still wins
        config.update(_default)
    # YAML files are read again strictly (duplicate keys); JSON, e.g. the launcher's, is not YAML's to judge.
    _yaml = [f for f in workflow.config_settings.configfiles if not str(f).endswith(".json")]
    PLAN = check_config(config, files=_yaml if workflow.config_settings.configfiles else ["config/config.yaml"])
except GlmmError as error:
    # One line, no traceback, before any job: existing results stay as they are.
    print(error, file=sys.stderr)
    sys.exit(1)
# Snakemake's and the project's libraries are loaded: out of the collector's walks from
# here on, during the run and at exit (a run with nothing to do calls no onsuccess).
process_exit.freeze_loaded()


report: "report/workflow.rst"


# Bookkeeping rules that take well under a second: on a cluster they run in the main
# process, since queueing them would cost more than running them.
localrules:
    all,
    manifest,
    catalog,
    summary,
    compare_versions,
    bootstrap,
    report_tables,


include: "rules/common.smk"


rule all:
    default_target: True
    input:
        [
            out(t, model=f.model, version=f.version, replicate=f.replicate, fmt=PLAN.table_format(f.model))
            for f in PLAN.fits
            for t in paths.TABLES
        ],
        [
            out("plot", model=f.model, version=f.version, replicate=f.replicate, plot=p)
            for f in PLAN.fits
            for p in paths.PLOTS
        ],
        [
            out(t, model=f.model, version=f.version, replicate=f.replicate)
            for f in PLAN.compared()
            for t in paths.COMPARISON_TABLES
        ],
        [t for f in PLAN.fits for t in answer_targets(f)],
        [out("manifest", model=m, version=v) for m, v in PLAN.versions.items()],
        # The per-seed fits' catalog and summary (a config of studies alone has neither).
        [out("catalog"), out("summary")] if PLAN.fits else [],
        [out("recovery", model=m) for m in PLAN.study_models],
        [out("recovery_plot", model=m, plot=p) for m in PLAN.study_models for p in paths.RECOVERY_PLOTS],
        # the tables of the report (`snakemake --report results/report.html`) as HTML pages
        [report_table_path(key) for key in report_tables()],


include: "rules/simulate.smk"
include: "rules/fit.smk"
include: "rules/inference.smk"
include: "rules/extract.smk"
include: "rules/plot.smk"
include: "rules/provenance.smk"
include: "rules/study.smk"
include: "rules/report.smk"


# The run's closing lines (the progress display shows the rest; details are in the logs).
onsuccess:
    # A failed fit never stops the run; say how many there were so none goes unnoticed.
    print(
        closing_summary(out("summary"), PLAN.results, {m: out("recovery", model=m) for m in PLAN.study_models}),
        file=sys.stderr,
    )
    # A sample-size study's answer: the smallest swept size reaching target_power.
    for line in study_power_lines(PLAN):
        print(line, file=sys.stderr)
    process_exit.end_run()


onerror:
    print(
        f"run stopped: a job failed (its log is shown above and kept under {PLAN.results}/logs/); "
        "finished outputs are kept: fix the cause and rerun the same command to go on",
        file=sys.stderr,
    )
    process_exit.end_run()
