"""Snakemake adapter: rerun one study replicate alone with every per-replicate output
(glmm_steps.batch.replicate_to_files)."""

from glmm_steps.batch import replicate_to_files
from glmm_steps.logs import to_log
from glmm_steps.pilot import resolve

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    replicate_to_files(
        resolve(sm.params.design, list(sm.input.pilot), f"{sm.wildcards.model}'s study"),
        sm.wildcards.model,
        sm.params.model,
        sm.params.seed,
        sm.params.factors,
        dict(sm.output.items()),
    )
