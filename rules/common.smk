# Helpers shared by the rules files (output paths, scheduler resources, wildcard
# constraints, and the params looked up from the checked config: PLAN).

from snakemake.logging import logger


def out(kind, **keys):
    return paths.output_path(kind, PLAN.results, **keys)


def resources_of(rule, **defaults):
    """The scheduler resources of ``rule``: ``defaults``, overridden by the config's
    ``resources.<rule>``, with memory and time growing on each retry."""
    return {
        name: (lambda wildcards, attempt, name=name: cluster.rule_resources(PLAN.config, rule, defaults, attempt)[name])
        for name in cluster.rule_resources(PLAN.config, rule, defaults)
    }


# A SLURM run without SLURM would fail every job with a shell error: say it once, before
# any job. The executor is only known once the run starts, hence onstart.
onstart:
    if workflow.is_main_process:
        _problem = cluster.missing_scheduler(workflow.executor_plugin.name)
        if _problem:
            # Through Snakemake's logger: the progress display owns the terminal by now,
            # and a plain print would be dropped or land before its table.
            logger.error(_problem)
            sys.exit(1)


def study_batch_files():
    """The inputs of a study model's recovery and plots steps: its batch tables."""
    return {
        kind: lambda w, kind=kind: [
            out(f"batch_{kind}", model=w.model, design=b.design, batch=b.name) for b in PLAN.batches_of(w.model)
        ]
        for kind in ("estimates", "fits")
    }


def study_summary_params():
    """The params of a study model's recovery and plots steps (glmm_steps.recovery.study_tables)."""
    return {
        "alpha": lambda w: PLAN.config["models"][w.model]["alpha"],
        "power_terms": lambda w: PLAN.config["models"][w.model].get("power_terms"),
        "target_power": lambda w: PLAN.config["models"][w.model].get("target_power"),
        "designs": lambda w: {d: PLAN.design_point(w.model, d).values for d in PLAN.design_names(w.model)},
    }


def study_provenance(w, output):
    """What a study model's manifest records beside its files (glmm_steps.recovery.recovery_to_files):
    the model's and its dataset's config entries, the replicates' base seed and number,
    and the results folder (the manifest's paths are relative to it)."""
    dataset = PLAN.config["datasets"][PLAN.dataset_of(w.model)]
    pilot = PLAN.pilot_of(w.model)
    if pilot:  # as written: the config check holds a stand-in design in its place
        dataset = {**dataset, "simulate": pilot}
    return {
        "model": w.model,
        "config_excerpt": {"model": PLAN.config["models"][w.model], "dataset": dataset},
        "seeds": {"base_seed": dataset["base_seed"], "replicates": dataset["replicates"]},
        # {results}/studies/{model}/manifest.json
        "results": os.path.dirname(os.path.dirname(os.path.dirname(output.manifest))),
    }


def extract_outputs(fmt):
    """The extract step's outputs, predictions and random effects as `fmt` files."""
    return {t: out(t, model="{model}", version="{version}", replicate="{replicate}", fmt=fmt) for t in paths.TABLES}


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


def dataset_factors(w):
    """The columns the model's dataset fits as factors (its own list, and a simulated
    dataset's grouping columns, which the simulator declares)."""
    return PLAN.factors(PLAN.dataset_of(w.model))


def pilot_design(w):
    """The pilot's design file a study made from a pilot fit simulates from (none for a
    design written out)."""
    pilot = PLAN.pilot_of(w.model)
    return [out("pilot_design", model=pilot["from_model"])] if pilot else []


def study_design(w):
    """A study design point's ``simulate:`` mapping; for a study made from a pilot fit,
    its ``from_model`` mapping and swept values, which the job applies to the pilot's
    design file (glmm_steps.pilot.point_design)."""
    pilot = PLAN.pilot_of(w.model)
    point = PLAN.design_point(w.model, w.design)
    return {"pilot": pilot, "values": point.values} if pilot else point.spec


def current_version(w):
    """Fail early if a path names a version other than the config's (its numbers
    would not be what its key says)."""
    if PLAN.versions.get(w.model) != w.version:
        raise GlmmError(
            f"{w.model}/{w.version} is not the current config's version "
            f"({PLAN.versions.get(w.model)}); old versions are kept, never rebuilt"
        )
    return replicate_data(w)


def fit_stages(f):
    """The files the workflow writes for fit ``f`` (a config.Fit), stage by stage, each
    made from the stages before: simulated data and truth, the fit file, a bootstrap's
    batches and intervals (intervals: bootstrap; made from the data, placed after the
    fit so a bad fit file rebuilds them too), the tables, the plots and the answers
    (effects, predictions, marginal means). The tables and plots are paths.TABLES and
    paths.PLOTS, so residuals.csv (scaled_residuals) and plots/residuals.png are in the
    manifest and repaired like the others."""
    keys = dict(model=f.model, version=f.version, replicate=f.replicate)
    fmt = PLAN.table_format(f.model)
    entry = PLAN.config["models"][f.model]
    simulated = (
        []
        if f.replicate == paths.replicate_id(None)
        else [PLAN.data_path(f.dataset, f.replicate), out("truth", dataset=f.dataset, replicate=f.replicate)]
    )
    resampled = (
        [out("bootstrap_batch", batch=b, **keys) for b in bootstrap.batch_names(entry)] + [out("bootstrap", **keys)]
        if entry.get("intervals") == "bootstrap"
        else []
    )
    return [
        simulated,
        [out("fit", **keys)],
        resampled,
        [out(t, fmt=fmt, **keys) for t in paths.TABLES],
        [out("plot", plot=p, **keys) for p in paths.PLOTS] + answer_targets(f),
    ]


def version_files(w):
    """Every input and output of one model version, for its manifest."""
    fits = PLAN.fits_of(w.model)
    data = sorted({PLAN.data_path(f.dataset, f.replicate) for f in fits})
    truth = [out("truth", dataset=f.dataset, replicate=f.replicate) for f in fits if f.replicate != "file"]
    outputs = [p for f in fits for stage in fit_stages(f)[1:] for p in stage]
    return {"inputs": data + truth + predict_newdata(w), "outputs": outputs}


def models_asking(key, fmt=None):
    """Wildcard pattern matching the models whose config has `key` (predict, emmeans);
    with `fmt`, only those whose predictions_new file is `fmt` (none: never matches)."""
    return (
        "|".join(
            m for m, e in PLAN.config["models"].items() if e.get(key) and (fmt is None or predict_format(m) == fmt)
        )
        or "(?!)"
    )


def predict_format(model):
    """predictions_new is Parquet when the model's newdata file is, else CSV."""
    newdata = (PLAN.config["models"][model].get("predict") or {}).get("newdata", "")
    return "parquet" if str(newdata).endswith(".parquet") else "csv"


def predict_newdata(w):
    """The model's predict: newdata file (an input of its fit), or nothing."""
    newdata = (PLAN.config["models"][w.model].get("predict") or {}).get("newdata")
    return [newdata] if newdata else []


def answer_targets(f):
    """The answer files of one fit (glmm_steps.answers): the effect plot and its table
    for every model, predictions_new and its plot for predict:, emmeans and contrasts."""
    keys = dict(model=f.model, version=f.version, replicate=f.replicate)
    entry = PLAN.config["models"][f.model]
    targets = [out("effects", **keys), out("plot", plot="effects", **keys)]
    if entry.get("predict"):
        targets += [
            out("predictions_new", fmt=predict_format(f.model), **keys),
            out("plot", plot="predictions_new", **keys),
        ]
    if entry.get("emmeans"):
        targets += [out("emmeans", **keys), out("contrasts", **keys)]
    return targets


# What the main process checks before any job, once (cluster jobs re-read this file
# too): that study files asked for exist in the config; then, for a real run (not a
# dry run or a report), it takes the results folder's lock and removes, so they are
# rebuilt, this config's outputs whose bytes no longer match their manifest (or that
# are missing) and what was made from them (glmm_steps.integrity).
if workflow.is_main_process:
    try:
        study.check_targets(PLAN, sys.argv[1:])
        if integrity.is_run(sys.argv[1:]):
            integrity.lock(PLAN.results)
            _manifests = {
                out("manifest", model=m, version=v): [fit_stages(f) for f in PLAN.fits_of(m)]
                for m, v in PLAN.versions.items()
            }
            for _line in integrity.repair(PLAN.results, _manifests):
                print(_line, file=sys.stderr)
    except GlmmError as error:
        print(error, file=sys.stderr)
        sys.exit(1)


def report_tables():
    """The result tables the report shows as HTML tables: key -> (CSV, title, report
    category, subcategory, labels, caption). Per fit its fixed effects and variance
    components (and model comparison tables), the run summary, the catalog, and each
    study's recovery and power tables."""
    tables = {}
    for f in PLAN.fits:
        names = ("fixed_effects", "variance_components")
        if PLAN.config["models"][f.model]["compare_with"]:
            names += paths.COMPARISON_TABLES
        for t in names:
            tables[f"models__{f.model}__{f.replicate}__{t}"] = (
                out(t, model=f.model, version=f.version, replicate=f.replicate),
                f"{f.model} ({f.replicate}, version {f.version}): {t.replace('_', ' ')}",
                f.model,
                f.replicate,
                {"model": f.model, "replicate": f.replicate, "table": t},
                t,
            )
    if PLAN.fits:
        tables["summary"] = (
            out("summary"),
            "Every fit on disk, with its status",
            "summary",
            None,
            {"table": "summary"},
            "summary",
        )
        tables["catalog"] = (
            out("catalog"),
            "Every result version on disk",
            "provenance",
            None,
            {"table": "catalog"},
            "catalog",
        )
    for m in PLAN.study_models:
        tables[f"studies__{m}__recovery"] = (
            out("recovery", model=m),
            f"{m}: parameter recovery",
            "studies",
            m,
            {"model": m, "table": "recovery"},
            "recovery",
        )
        tables[f"studies__{m}__power"] = (
            out("power", model=m),
            f"{m}: power by design",
            "studies",
            m,
            {"model": m, "table": "power"},
            "power",
        )
    return tables


def report_table_path(key):
    """Where the HTML page of report table ``key`` goes (under results/report/)."""
    return out("report_table", name=key.replace("__", "/"))


def bootstrap_intervals(w):
    """The extract step's bootstrap limits, for a model with `intervals: bootstrap`."""
    if PLAN.config["models"][w.model].get("intervals") != "bootstrap":
        return []
    return [out("bootstrap", model=w.model, version=w.version, replicate=w.replicate)]
