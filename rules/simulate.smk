# Stage 1: simulate a dataset replicate from its design (datasets with `simulate:`).


rule simulate:
    output:
        data=out("data", dataset="{dataset}", replicate="seed-{seed}", fmt="csv"),
        truth=out("truth", dataset="{dataset}", replicate="seed-{seed}"),
    log:
        out("log", rule="simulate", name="{dataset}_seed-{seed}"),
    wildcard_constraints:
        dataset=datasets_writing("csv"),
    threads: 1
    resources:
        **resources_of("simulate", mem_mb=1000, runtime=10),
    params:
        design=lambda w: PLAN.config["datasets"][w.dataset]["simulate"],
    script:
        "../scripts/simulate.py"


# Large designs are simulated to Parquet (datasets.<name>.format): the same step under a
# second name, because one rule's outputs cannot change extension from dataset to dataset.
use rule simulate as simulate_parquet with:
    output:
        data=out("data", dataset="{dataset}", replicate="seed-{seed}", fmt="parquet"),
        truth=out("truth", dataset="{dataset}", replicate="seed-{seed}"),
    wildcard_constraints:
        dataset=datasets_writing("parquet"),
