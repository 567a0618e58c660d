"""Snakemake adapter: draw the plots of one fit (glmm_steps.plot.plot_fit)."""

import json
from pathlib import Path

from glmm_steps.logs import to_log
from glmm_steps.plot import plot_fit

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    plot_fit(
        sm.input.predictions,
        sm.input.random_effects,
        json.loads(Path(sm.input.fit_stats).read_text()),
        dict(sm.output.items()),
        factors=sm.params.factors,
    )
