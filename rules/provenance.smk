# Provenance: a manifest per model version, the catalog of versions, the run
# summary, and comparisons between two versions on disk.


rule manifest:
    input:
        unpack(version_files),
    output:
        report(
            out("manifest", model="{model}", version="{version}"),
            caption="../report/manifest.rst",
            category="provenance",
            labels={"model": "{model}", "version": "{version}"},
        ),
    log:
        out("log", rule="manifest", name="{model}_{version}"),
    params:
        config_excerpt=lambda w: {
            "model": PLAN.fit_entry(w.model),
            "dataset": PLAN.config["datasets"][PLAN.dataset_of(w.model)],
        },
        seeds=lambda w: [f.replicate for f in PLAN.fits_of(w.model)],
        # {results}/models/{model}/{version}/manifest.json: the results folder it lies in
        results=lambda w, output: os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(output[0])))),
    script:
        "../scripts/manifest.py"


rule catalog:
    input:
        [out("manifest", model=m, version=v) for m, v in PLAN.versions.items()],
    output:
        out("catalog"),
    log:
        out("log", rule="catalog", name="catalog"),
    params:
        # the folder of every model's versions, beside the catalog (not hard-coded: --lint)
        models_dir=lambda w, output: os.path.join(os.path.dirname(output[0]), "models"),
        current=PLAN.versions,
    script:
        "../scripts/catalog.py"


# Every fit on disk (as the catalog): the running config's fits are its inputs, the
# others are read from the folder, so two configs sharing it never drop each other's rows.
rule summary:
    input:
        fit_stats=[out("fit_stats", model=f.model, version=f.version, replicate=f.replicate) for f in PLAN.fits],
        verification=[
            out("verification", model=f.model, version=f.version, replicate=f.replicate) for f in PLAN.verified()
        ],
    output:
        out("summary"),
    log:
        out("log", rule="summary", name="summary"),
    params:
        models_dir=lambda w, output: os.path.join(os.path.dirname(output[0]), "models"),
        current=PLAN.versions,
    script:
        "../scripts/summary.py"


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
        "../scripts/compare_versions.py"
