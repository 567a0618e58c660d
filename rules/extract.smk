# Stage 3: tidy tables of each fit.


rule extract:
    input:
        fit=rules.fit.output.fit,
        bootstrap=bootstrap_intervals,
    output:
        **extract_outputs("csv"),
    log:
        out("log", rule="extract", name="{model}_{version}_{replicate}"),
    wildcard_constraints:
        model=models_writing("csv"),
    threads: 1
    resources:
        **resources_of("extract", mem_mb=1000, runtime=10),
    params:
        seed=replicate_seed,
        data_path=replicate_data,
    script:
        "../scripts/extract.py"


# Large fits write predictions and random effects as Parquet (models.<name>.table_format);
# each model is matched by exactly one of the two rules.
use rule extract as extract_parquet with:
    output:
        **extract_outputs("parquet"),
    wildcard_constraints:
        model=models_writing("parquet"),


# Answers computed in the fit step (glmm_steps.answers), written out: the effect-plot
# table for every model, and the tables of the models with predict: and emmeans:.
rule effects:
    input:
        fit=rules.fit.output.fit,
    output:
        effects=out("effects", model="{model}", version="{version}", replicate="{replicate}"),
    log:
        out("log", rule="effects", name="{model}_{version}_{replicate}"),
    threads: 1
    resources:
        **resources_of("extract", mem_mb=1000, runtime=10),
    script:
        "../scripts/answers.py"


use rule effects as predict_new with:
    output:
        predictions_new=report(
            out("predictions_new", model="{model}", version="{version}", replicate="{replicate}", fmt="csv"),
            caption="../report/predictions_new.rst",
            category="{model}",
            subcategory="{replicate}",
            labels={"model": "{model}", "replicate": "{replicate}", "table": "predictions_new"},
        ),
    log:
        out("log", rule="predict_new", name="{model}_{version}_{replicate}"),
    wildcard_constraints:
        model=models_asking("predict", "csv"),


use rule effects as predict_new_parquet with:
    output:
        predictions_new=out(
            "predictions_new", model="{model}", version="{version}", replicate="{replicate}", fmt="parquet"
        ),
    log:
        out("log", rule="predict_new_parquet", name="{model}_{version}_{replicate}"),
    wildcard_constraints:
        model=models_asking("predict", "parquet"),


use rule effects as emmeans with:
    output:
        emmeans=report(
            out("emmeans", model="{model}", version="{version}", replicate="{replicate}"),
            caption="../report/emmeans.rst",
            category="{model}",
            subcategory="{replicate}",
            labels={"model": "{model}", "replicate": "{replicate}", "table": "emmeans"},
        ),
        contrasts=out("contrasts", model="{model}", version="{version}", replicate="{replicate}"),
    log:
        out("log", rule="emmeans", name="{model}_{version}_{replicate}"),
    wildcard_constraints:
        model=models_asking("emmeans"),
