"""Snakemake adapter: likelihood-ratio and AIC/BIC tables (glmm_steps.compare.compare_files)."""

from glmm_steps.compare import compare_files
from glmm_steps.logs import to_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    print(compare_files(list(sm.input.fits), dict(sm.output.items())).to_string(index=False))
