"""Snakemake adapter: write the tidy tables of one fit (glmm_steps.extract.extract)."""
from glmm_steps.extract import extract
from glmm_steps.fit import load_fit
from glmm_steps.logs import to_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    extract(load_fit(sm.input.fit), dict(sm.output.items()), seed=sm.params.seed, data_path=sm.params.data_path)
