"""Snakemake adapter: refit with the other engine and tabulate agreement (glmm_steps.verify.verify_file)."""

from glmm_steps.logs import to_log
from glmm_steps.verify import verify_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    print(
        verify_file(
            sm.input.fit,
            dict(sm.output.items()),
            sm.params.rtol,
            sm.params.loglik_tol,
            seed=sm.params.seed,
            data_path=sm.params.data_path,
        )
    )
