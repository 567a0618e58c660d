# Helpers every rule file shares: output paths, scheduler resources, wildcard
# constraints and the params looked up from the checked config (PLAN).

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


def fit_stages(f):
    """The files the workflow writes for fit ``f`` (a config.Fit), stage by stage, each
    made from the stages before: simulated data and truth, the fit file, the tables,
    the plots."""
    keys = dict(model=f.model, version=f.version, replicate=f.replicate)
    fmt = PLAN.table_format(f.model)
    simulated = [] if f.replicate == paths.replicate_id(None) else [
        PLAN.data_path(f.dataset, f.replicate), out("truth", dataset=f.dataset, replicate=f.replicate)]
    return [simulated, [out("fit", **keys)], [out(t, fmt=fmt, **keys) for t in paths.TABLES],
            [out("plot", plot=p, **keys) for p in paths.PLOTS]]


def version_files(w):
    """Every input and output of one model version, for its manifest."""
    fits = PLAN.fits_of(w.model)
    data = sorted({PLAN.data_path(f.dataset, f.replicate) for f in fits})
    truth = [out("truth", dataset=f.dataset, replicate=f.replicate) for f in fits if f.replicate != "file"]
    outputs = [p for f in fits for stage in fit_stages(f)[1:] for p in stage]
    return {"inputs": data + truth, "outputs": outputs}


def _table(name, fmt, caption=False):
    path = out(name, model="{model}", version="{version}", replicate="{replicate}", fmt=fmt)
    if not caption:
        return path
    return report(path, caption=f"../report/{name}.rst", category="{model}", subcategory="{replicate}",
                  labels={"model": "{model}", "replicate": "{replicate}", "table": name})


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
            _manifests = {out("manifest", model=m, version=v): [fit_stages(f) for f in PLAN.fits_of(m)]
                          for m, v in PLAN.versions.items()}
            for _line in integrity.repair(PLAN.results, _manifests):
                print(_line, file=sys.stderr)
    except GlmmError as error:
        print(error, file=sys.stderr)
        sys.exit(1)
