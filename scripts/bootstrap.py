"""Snakemake adapter: percentile limits of a model's bootstrap batches (glmm_steps.bootstrap.intervals_to_file)."""

from glmm_steps.bootstrap import intervals_to_file
from glmm_steps.logs import to_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    intervals_to_file(list(sm.input.batches), sm.output.intervals)
