"""Snakemake adapter: fit one batch of a study's replicates (glmm_steps.batch.batch_to_files)."""

from glmm_steps.batch import batch_to_files
from glmm_steps.errors import GlmmError
from glmm_steps.logs import fail, to_log
from glmm_steps.pilot import resolve

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    try:
        fits = batch_to_files(
            resolve(sm.params.design, list(sm.input.pilot), f"{sm.wildcards.model}'s study"),
            sm.wildcards.model,
            sm.params.model,
            sm.wildcards.design,
            sm.params.replicates,
            sm.params.factors,
            dict(sm.output.items()),
            compare_with=sm.params.compare_with,
        )
    except GlmmError as e:
        fail(str(e))
    print(fits["status"].value_counts().to_string())
