# Stage 4: plots of each fit.


rule plot:
    input:
        predictions=lambda w: out(
            "predictions", model=w.model, version=w.version, replicate=w.replicate, fmt=PLAN.table_format(w.model)
        ),
        random_effects=lambda w: out(
            "random_effects", model=w.model, version=w.version, replicate=w.replicate, fmt=PLAN.table_format(w.model)
        ),
        fit_stats=rules.extract.output.fit_stats,
        scaled_residuals=lambda w: out(
            "scaled_residuals", model=w.model, version=w.version, replicate=w.replicate, fmt=PLAN.table_format(w.model)
        ),
    output:
        **{
            p: report(
                out("plot", model="{model}", version="{version}", replicate="{replicate}", plot=p),
                caption=f"../report/{p}.rst",
                category="{model}",
                subcategory="{replicate}",
                labels={"model": "{model}", "replicate": "{replicate}", "plot": p},
            )
            for p in paths.PLOTS
        },
    log:
        out("log", rule="plot", name="{model}_{version}_{replicate}"),
    threads: 1
    resources:
        **resources_of("plot", mem_mb=1000, runtime=10),
    params:
        factors=dataset_factors,
    script:
        "../scripts/plot.py"


# The effect plot of every fit, and the plot of a predict: entry's predictions.
rule effect_plot:
    input:
        table=rules.effects.output.effects,
    output:
        plot=report(
            out("plot", model="{model}", version="{version}", replicate="{replicate}", plot="effects"),
            caption="../report/effects.rst",
            category="{model}",
            subcategory="{replicate}",
            labels={"model": "{model}", "replicate": "{replicate}", "plot": "effects"},
        ),
    log:
        out("log", rule="effect_plot", name="{model}_{version}_{replicate}"),
    threads: 1
    resources:
        **resources_of("plot", mem_mb=1000, runtime=10),
    params:
        kind="effects",
        # the y axis is labelled with the response as the formula writes it
        response=lambda w: PLAN.config["models"][w.model]["formula"].split("~")[0].strip(),
    script:
        "../scripts/effect_plot.py"


use rule effect_plot as prediction_plot with:
    input:
        table=lambda w: out(
            "predictions_new", model=w.model, version=w.version, replicate=w.replicate, fmt=predict_format(w.model)
        ),
    output:
        plot=out("plot", model="{model}", version="{version}", replicate="{replicate}", plot="predictions_new"),
    log:
        out("log", rule="prediction_plot", name="{model}_{version}_{replicate}"),
    wildcard_constraints:
        model=models_asking("predict"),
    params:
        kind="predictions_new",
        response=lambda w: PLAN.config["models"][w.model]["formula"].split("~")[0].strip(),


# A study model's figures, drawn from its batch files beside (not after) the recovery
# job that writes its tables.
rule study_plots:
    input:
        **study_batch_files(),
    output:
        **{
            p: report(
                out("recovery_plot", model="{model}", plot=p),
                caption="../report/recovery_plots.rst",
                category="studies",
                subcategory="{model}",
                labels={"model": "{model}", "plot": p},
            )
            for p in paths.RECOVERY_PLOTS
        },
    log:
        out("log", rule="study_plots", name="{model}"),
    params:
        **study_summary_params(),
    script:
        "../scripts/study_plots.py"
