"""Snakemake adapter: fit a pilot model once and write its design (glmm_steps.pilot.design_to_file)."""

from glmm_steps.errors import GlmmError
from glmm_steps.logs import fail, to_log
from glmm_steps.pilot import design_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    try:
        design = design_to_file(
            sm.input.data, sm.wildcards.model, sm.params.model, sm.params.factors, sm.params.drop_missing, sm.output[0]
        )
    except GlmmError as e:
        fail(str(e))
    print(design)
