"""Snakemake adapter: a study model's recovery and power tables and manifest (glmm_steps.recovery.recovery_to_files)."""

from pathlib import Path

from glmm_steps.logs import to_log
from glmm_steps.recovery import recovery_to_files

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    # params: alpha, power_terms, designs, target_power (rules/common.smk: study_summary_params)
    summary = {k: v for k, v in sm.params.items() if k != "provenance"}
    # the pilot's design file (a study from a pilot fit) is an input the batches were made from
    provenance = {**sm.params.provenance, "inputs": list(sm.input.pilot), "repo": Path(sm.scriptdir).parent}
    table = recovery_to_files(
        list(sm.input.estimates), list(sm.input.fits), dict(sm.output.items()), **summary, provenance=provenance
    )
    print(table.to_string(index=False))
