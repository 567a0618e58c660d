# Simulation studies: batches of replicates in one job each, then the recovery and
# power tables (their figures: rule study_plots in plot.smk); a single replicate can be
# rerun on demand.


# simulate: {from_model: <model>}: the pilot model fitted once to its data file, its
# design (structure and estimates) written for the study's batches, which apply the
# overrides, extension and swept values to it. A changed data file or model entry
# refits it, and so reruns the batches; a changed override reruns the batches only.
rule pilot_design:
    input:
        data=lambda w: PLAN.data_path(PLAN.dataset_of(w.model), "file"),
    output:
        out("pilot_design", model="{model}"),
    log:
        out("log", rule="pilot_design", name="{model}"),
    threads: 1
    resources:
        mem_mb=2000,
    params:
        model=lambda w: PLAN.fit_entry(w.model),
        factors=dataset_setting("factors"),
        drop_missing=dataset_setting("drop_missing"),
    script:
        "../scripts/pilot_design.py"


# A study: each job simulates, fits and tidies a batch of replicates in-process, since
# starting a job costs far more than one fit; only tables are written per batch.
rule study_batch:
    input:
        pilot=pilot_design,
    output:
        estimates=out("batch_estimates", model="{model}", design="{design}", batch="{batch}"),
        fits=out("batch_fits", model="{model}", design="{design}", batch="{batch}"),
    log:
        out("log", rule="study_batch", name="{model}_{design}_{batch}"),
    threads: 1
    resources:
        mem_mb=2000,
    params:
        design=study_design,
        model=lambda w: PLAN.fit_entry(w.model),
        factors=dataset_factors,
        # (index, seed) of each replicate: changing base_seed or batch_size reruns the batch.
        replicates=lambda w: PLAN.replicate_seeds(w.model, *study.parse_batch_name(w.batch)),
        # test: lrt: the model each replicate is tested against (its config entry).
        compare_with=lambda w: {m: PLAN.fit_entry(m) for m in PLAN.config["models"][w.model]["compare_with"]},
    script:
        "../scripts/study_batch.py"


rule recovery:
    input:
        **study_batch_files(),
        pilot=pilot_design,
    output:
        table=out("recovery", model="{model}"),
        power_table=out("power", model="{model}"),
        # what made both tables (config, seeds, code, packages, SHA-256 of the batches)
        manifest=out("study_manifest", model="{model}"),
    log:
        out("log", rule="recovery", name="{model}"),
    params:
        **study_summary_params(),
        provenance=study_provenance,
    script:
        "../scripts/recovery.py"


# On demand only (not part of `all`): one replicate of a study rerun alone from its seed,
# with the data, tables and plots a per-seed analysis has, e.g.
#   snakemake results/studies/<model>/<design>/replicates/rep-7/fixed_effects.csv
rule study_replicate:
    input:
        pilot=pilot_design,
    output:
        **paths.replicate_outputs(PLAN.results, model="{model}", design="{design}", index="{index}"),
    log:
        out("log", rule="study_replicate", name="{model}_{design}_rep-{index}"),
    params:
        design=study_design,
        model=lambda w: PLAN.fit_entry(w.model),
        factors=dataset_factors,
        seed=lambda w: PLAN.replicate_seeds(w.model, int(w.index), int(w.index))[0][1],
    script:
        "../scripts/study_replicate.py"
