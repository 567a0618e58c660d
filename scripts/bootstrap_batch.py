"""Snakemake adapter: one batch of parametric bootstrap refits (glmm_steps.bootstrap.batch_to_file)."""

from glmm_steps.bootstrap import batch_to_file
from glmm_steps.errors import GlmmError
from glmm_steps.logs import fail, to_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    try:
        table = batch_to_file(
            sm.input.data,
            sm.wildcards.model,
            sm.params.model,
            sm.params.factors,
            sm.params.drop_missing,
            sm.params.replicates,
            sm.output.refits,
        )
    except GlmmError as e:
        fail(str(e))
    print(table.drop_duplicates("replicate")["status"].value_counts().to_string())
