"""Snakemake adapter: fit one model to one data file (glmm_steps.fit.fit_file)."""

from glmm_steps.engines.base import ModelSpec
from glmm_steps.errors import GlmmError
from glmm_steps.fit import fit_file, save_fit
from glmm_steps.logs import fail, to_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    try:
        result = fit_file(
            sm.input.data,
            ModelSpec.from_config(sm.wildcards.model, sm.params.model),
            factors=sm.params.factors,
            drop_missing=sm.params.drop_missing,
            answers=sm.params.model,
        )
    except GlmmError as e:
        fail(str(e))
    save_fit(result, sm.output.fit)
    print(
        f"{sm.wildcards.model} {sm.wildcards.replicate}: converged={result.converged} "
        f"error={result.error} warnings={result.warnings} notes={result.notes}"
    )
