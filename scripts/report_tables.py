"""Snakemake adapter: the result tables as HTML pages for the report (glmm_steps.html_tables)."""

from glmm_steps.html_tables import tables_to_html
from glmm_steps.logs import to_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    tables_to_html({sm.output[key]: (sm.input[key], sm.params.titles[key]) for key in sm.params.titles})
