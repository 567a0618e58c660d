"""Snakemake adapter: list every result version and link `latest` (glmm_steps.versions)."""

from glmm_steps.extract import write_csv
from glmm_steps.logs import to_log
from glmm_steps.versions import catalog, link_latest

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    write_csv(catalog(sm.params.models_dir, sm.params.current), sm.output[0])
    link_latest(sm.params.models_dir, sm.params.current)
