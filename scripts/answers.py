"""Snakemake adapter: write a fit's answer tables (glmm_steps.answers.write_answers)."""

from glmm_steps.answers import write_answers
from glmm_steps.fit import load_fit
from glmm_steps.logs import to_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    write_answers(load_fit(sm.input.fit), dict(sm.output.items()))
