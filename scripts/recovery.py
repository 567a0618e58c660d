"""Snakemake adapter: a study model's recovery table and plots (glmm_steps.recovery.recovery_to_files)."""

from glmm_steps.logs import to_log
from glmm_steps.recovery import recovery_to_files

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    table = recovery_to_files(
        list(sm.input.estimates),
        list(sm.input.fits),
        dict(sm.output.items()),
        sm.params.alpha,
        sm.params.power_terms,
        sm.params.designs,
        target_power=sm.params.target_power,
    )
    print(table.to_string(index=False))
