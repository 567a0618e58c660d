"""Snakemake adapter: one row per fit with its status (glmm_steps.summary.summarize)."""
from glmm_steps.extract import write_csv
from glmm_steps.logs import to_log
from glmm_steps.summary import summarize

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    table = summarize(list(sm.input.fit_stats), list(sm.input.verification))
    write_csv(table, sm.output[0])
    print(table.to_string(index=False))
