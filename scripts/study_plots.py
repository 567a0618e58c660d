"""Snakemake adapter: a study model's plots (glmm_steps.study_plot.study_plots_to_files)."""

from glmm_steps.logs import to_log
from glmm_steps.study_plot import study_plots_to_files

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    # params: alpha, power_terms, designs, target_power (rules/common.smk: study_summary_params)
    study_plots_to_files(
        list(sm.input.estimates), list(sm.input.fits), dict(sm.output.items()), **dict(sm.params.items())
    )
