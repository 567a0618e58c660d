# Stage 3: tidy tables of each fit.

rule extract:
    input:
        fit=rules.fit.output.fit,
        bootstrap=bootstrap_intervals,
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
        "../scripts/extract.py"


# Large fits write predictions and random effects as Parquet (models.<name>.table_format);
# each model is matched by exactly one of the two rules.
use rule extract as extract_parquet with:
    output:
        **extract_outputs("parquet"),
    wildcard_constraints:
        model=models_writing("parquet"),
