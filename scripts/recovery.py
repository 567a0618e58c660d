"""Snakemake adapter: a study model's recovery and power tables (glmm_steps.recovery.recovery_to_files)."""

from glmm_steps.logs import to_log
from glmm_steps.recovery import recovery_to_files

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    # params: alpha, power_terms, designs, target_power (rules/common.smk: study_summary_params)
    table = recovery_to_files(
        list(sm.input.estimates), list(sm.input.fits), dict(sm.output.items()), **dict(sm.params.items())
    )
    print(table.to_string(index=False))
