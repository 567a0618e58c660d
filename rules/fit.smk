# Stage 2: fit each model to each data file; verify with a second engine and
# compare nested models for the models that ask.


rule fit:
    input:
        data=current_version,
        newdata=predict_newdata,
    output:
        fit=out("fit", model="{model}", version="{version}", replicate="{replicate}"),
    log:
        out("log", rule="fit", name="{model}_{version}_{replicate}"),
    threads: 1
    resources:
        **resources_of("fit", mem_mb=2000, runtime=30),
    params:
        # The model's config entry: editing one model reruns that model alone.
        model=lambda w: PLAN.fit_entry(w.model),
        factors=dataset_factors,
        drop_missing=dataset_setting("drop_missing"),
    script:
        "../scripts/fit.py"


rule verify:
    input:
        fit=rules.fit.output.fit,
    output:
        verification=out("verification", model="{model}", version="{version}", replicate="{replicate}"),
        fit_stats=out("verification_fit_stats", model="{model}", version="{version}", replicate="{replicate}"),
    log:
        out("log", rule="verify", name="{model}_{version}_{replicate}"),
    params:
        rtol=lambda w: PLAN.config["models"][w.model]["verify_rtol"],
        loglik_tol=lambda w: PLAN.config["models"][w.model]["verify_loglik_tol"],
        seed=replicate_seed,
        data_path=replicate_data,
    script:
        "../scripts/verify.py"


rule compare:
    input:
        # The model itself first, then the models it names, all on this replicate.
        fits=lambda w: [
            out("fit", model=m, version=PLAN.versions[m], replicate=w.replicate)
            for m in [w.model, *PLAN.config["models"][w.model]["compare_with"]]
        ],
    output:
        **{t: out(t, model="{model}", version="{version}", replicate="{replicate}") for t in paths.COMPARISON_TABLES},
    log:
        out("log", rule="compare", name="{model}_{version}_{replicate}"),
    script:
        "../scripts/compare.py"
