"""Snakemake adapter: rerun one study replicate alone with every per-replicate output
(glmm_steps.batch.replicate_to_files)."""

from glmm_steps.batch import replicate_to_files
from glmm_steps.logs import to_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    replicate_to_files(
        sm.params.design,
        sm.wildcards.model,
        sm.params.model,
        sm.params.seed,
        sm.params.factors,
        dict(sm.output.items()),
    )
