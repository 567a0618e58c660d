"""Snakemake adapter: simulate one replicate (glmm_steps.simulate.simulate_to_files)."""

from glmm_steps.logs import to_log
from glmm_steps.simulate import simulate_to_files

with to_log(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    simulate_to_files(
        snakemake.params.design,
        int(snakemake.wildcards.seed),  # noqa: F821
        snakemake.output.data,
        snakemake.output.truth,
    )  # noqa: F821
