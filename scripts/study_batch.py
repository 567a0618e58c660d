"""Snakemake adapter: fit one batch of a study's replicates (glmm_steps.batch.batch_to_files)."""

import os

sm = snakemake  # noqa: F821 (injected by Snakemake)
# The job's thread count for the native pools, before numpy and mixedlm load them:
# Snakemake sets none for a script, and mixedlm's rayon pool (and BLAS) then start a
# thread per core, which on a shared or busy machine makes each small refit slower
# (the reference design: 7.7 ms per replicate against 4.9 ms with one thread).
for _var in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(sm.threads))

from glmm_steps.batch import batch_to_files  # noqa: E402
from glmm_steps.errors import GlmmError  # noqa: E402
from glmm_steps.logs import fail, to_log  # noqa: E402
from glmm_steps.pilot import resolve  # noqa: E402

with to_log(sm.log[0]):
    try:
        fits = batch_to_files(
            resolve(sm.params.design, list(sm.input.pilot), f"{sm.wildcards.model}'s study"),
            sm.wildcards.model,
            sm.params.model,
            sm.wildcards.design,
            sm.params.replicates,
            sm.params.factors,
            dict(sm.output.items()),
            compare_with=sm.params.compare_with,
        )
    except GlmmError as e:
        fail(str(e))
    print(fits["status"].value_counts().to_string())
