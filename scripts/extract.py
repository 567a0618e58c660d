"""Snakemake adapter: write the tidy tables of one fit (glmm_steps.extract.extract), with
its bootstrap limits when the model asks for them."""

from glmm_steps.extract import extract
from glmm_steps.fit import load_fit
from glmm_steps.logs import to_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    result = load_fit(sm.input.fit)
    if sm.input.bootstrap:
        from glmm_steps.bootstrap import read_intervals

        result.intervals, note = read_intervals(sm.input.bootstrap[0])
        result.notes = [*result.notes, note]
    extract(result, dict(sm.output.items()), seed=sm.params.seed, data_path=sm.params.data_path)
