"""Snakemake adapter: draw the plots of one fit (glmm_steps.plot.plot_fit and
glmm_steps.residual_plot.residual_plot)."""
import json
from pathlib import Path

from glmm_steps.logs import to_log
from glmm_steps.plot import plot_fit
from glmm_steps.residual_plot import residual_plot

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    fit_stats = json.loads(Path(sm.input.fit_stats).read_text())
    plot_fit(sm.input.predictions, sm.input.random_effects, fit_stats, dict(sm.output.items()))
    residual_plot(sm.input.scaled_residuals, fit_stats, sm.output.residuals)
