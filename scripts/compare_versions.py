"""Snakemake adapter: side-by-side estimates of two versions (glmm_steps.versions)."""

from pathlib import Path

from glmm_steps.extract import write_csv
from glmm_steps.logs import to_log
from glmm_steps.versions import compare_versions

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    write_csv(compare_versions(Path(sm.input.a).parent, Path(sm.input.b).parent), sm.output[0])
