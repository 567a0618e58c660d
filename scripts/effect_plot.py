"""Snakemake adapter: the effect plot or the predictions plot of one fit (glmm_steps.effect_plot)."""

from glmm_steps.effect_plot import plot_table
from glmm_steps.logs import to_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    plot_table(
        sm.params.kind,
        sm.input.table,
        sm.output.plot,
        response=sm.params.response,
        title=f"{sm.wildcards.model} ({sm.wildcards.replicate})",
    )
