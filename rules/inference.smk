# Bootstrap intervals (models with `intervals: bootstrap`): batches of parametric
# refits, one job each (as a study's batches), then their percentile limits, which
# the extract step puts into the tables.


rule bootstrap_batch:
    input:
        data=current_version,
    output:
        refits=out("bootstrap_batch", model="{model}", version="{version}", replicate="{replicate}", batch="{batch}"),
    log:
        out("log", rule="bootstrap_batch", name="{model}_{version}_{replicate}_{batch}"),
    threads: 1
    resources:
        **resources_of("fit", mem_mb=2000, runtime=30),
    params:
        model=lambda w: PLAN.fit_entry(w.model),
        factors=dataset_setting("factors"),
        drop_missing=dataset_setting("drop_missing"),
        # (index, seed) of each replicate: changing the seed or batch_size reruns the batch.
        replicates=lambda w: bootstrap.batch_replicates(PLAN.config["models"][w.model], w.batch),
    script:
        "../scripts/bootstrap_batch.py"


rule bootstrap:
    input:
        batches=lambda w: [
            out("bootstrap_batch", model=w.model, version=w.version, replicate=w.replicate, batch=b)
            for b in bootstrap.batch_names(PLAN.config["models"][w.model])
        ],
    output:
        intervals=out("bootstrap", model="{model}", version="{version}", replicate="{replicate}"),
    log:
        out("log", rule="bootstrap", name="{model}_{version}_{replicate}"),
    script:
        "../scripts/bootstrap.py"
