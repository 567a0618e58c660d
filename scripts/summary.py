"""Snakemake adapter: one row per fit on disk with its status (glmm_steps.summary.summarize_results)."""

from glmm_steps.extract import write_csv
from glmm_steps.logs import to_log
from glmm_steps.summary import summarize_results

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    table = summarize_results(sm.params.models_dir, sm.params.current)
    write_csv(table, sm.output[0])
    print(table.to_string(index=False))
