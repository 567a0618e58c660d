"""What profile and bootstrap intervals cost, beside lme4's confint in R.

On the reference model (bp ~ time + (1 | hospital_id) + (1 | patient_id), REML, fitted
to tests/reference/data/bp_study_seed123.csv: 10 hospitals x 10 patients x 5 visits):

1. profile intervals of every parameter (glmm_steps: variance components profiled here,
   fixed effects by mixedlm) against ``confint(fit, method = "profile")`` in R;
2. an n-replicate parametric bootstrap (glmm_steps.engines.mixedlm_bootstrap.refits:
   simulate + refit + collect, in one process as a batch job runs it) against the
   engine's bare refits of the same simulated responses (``model.refit(y)`` alone), and
   against ``bootMer(fit, FUN, nsim = n)`` + percentile limits in R.

Prints the wall times and, as the last line,
``bootstrap/bare_refits: <x> profile_lme4/profile: <y|n/a> bootstrap_lme4/bootstrap: <z|n/a>``
(target: bootstrap/bare_refits at most 2). BLAS runs one thread, as in a Snakemake job.

    python benchmarks/inference.py [--n 1000] [--no-r]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads: the thread count Snakemake gives a 1-thread job

import argparse  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from glmm_steps import data as data_mod  # noqa: E402
from glmm_steps import formula as formula_mod  # noqa: E402
from glmm_steps import model_matrix, study  # noqa: E402
from glmm_steps.engines.base import ModelSpec  # noqa: E402
from glmm_steps.engines.mixedlm_bootstrap import refits, simulate_response  # noqa: E402
from glmm_steps.engines.mixedlm_engine import engine_model  # noqa: E402
from glmm_steps.engines.mixedlm_profile import lmm_profile  # noqa: E402

DATA = ROOT / "tests" / "reference" / "data" / "bp_study_seed123.csv"
FORMULA = "bp ~ time + (1 | hospital_id) + (1 | patient_id)"

R_SCRIPT = """
suppressPackageStartupMessages(library(lme4))
d <- read.csv("{data}")
d$hospital_id <- factor(d$hospital_id); d$patient_id <- factor(d$patient_id)
fit <- lmer({formula}, data = d, REML = TRUE)
t0 <- proc.time()[["elapsed"]]
ci <- suppressMessages(confint(fit, method = "profile", oldNames = FALSE))
t1 <- proc.time()[["elapsed"]]
b <- bootMer(fit, function(m) c(fixef(m), sigma(m)), nsim = {n}, seed = 1)
ci_b <- apply(b$t, 2, quantile, probs = c(0.025, 0.975), na.rm = TRUE)
t2 <- proc.time()[["elapsed"]]
cat(sprintf("R profile %.3f bootstrap %.3f\\n", t1 - t0, t2 - t1))
print(ci)
"""


def run_r(n: int) -> tuple[float, float] | None:
    """(profile seconds, bootstrap seconds) of lme4 in R, or None without Rscript."""
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench.R"
        script.write_text(R_SCRIPT.format(data=DATA, formula=FORMULA, n=n))
        proc = subprocess.run(["Rscript", str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        print("R failed:", proc.stderr[-500:])
        return None
    print(proc.stdout.rstrip())
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("R profile"))
    parts = line.split()
    return float(parts[2]), float(parts[4])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="bootstrap replicates")
    parser.add_argument("--no-r", action="store_true", help="skip the R side")
    args = parser.parse_args()

    spec = ModelSpec.from_config("bp_lmm", {"dataset": "bp", "formula": FORMULA})
    formula = formula_mod.parse(FORMULA)
    frame = data_mod.read_data(DATA, columns=formula.columns)
    frame, _ = data_mod.model_frame(frame, formula, str(DATA), (), family="gaussian")
    warnings.simplefilter("ignore")
    design = model_matrix.build(formula, frame)
    model, columns, groups = engine_model(frame, spec, formula, design)
    names = [columns.get(n, n) for n in model.matrices.fixed_names]

    start = time.perf_counter()
    ml = engine_model(frame, spec, formula, design, reml=False)[0]
    table = lmm_profile(model, ml, names, groups, columns=columns)
    profile_s = time.perf_counter() - start
    print(table.to_string(index=False))
    print(f"profile intervals (glmm_steps): {profile_s:.2f} s")

    replicates = [(i, study.replicate_seed(1, i)) for i in range(args.n)]
    start = time.perf_counter()
    boot = refits(frame, spec, formula, design, replicates)
    boot_s = time.perf_counter() - start
    failed = int((boot.drop_duplicates("replicate")["status"] == "failed").sum())
    ys = [simulate_response(model, "gaussian", np.random.default_rng(seed)) for _, seed in replicates]
    start = time.perf_counter()
    for y in ys:
        model.refit(y)
    bare_s = time.perf_counter() - start
    print(
        f"bootstrap of {args.n} replicates (glmm_steps, {failed} failed): {boot_s:.2f} s; "
        f"bare refits of the same responses: {bare_s:.2f} s"
    )

    r = None if args.no_r else run_r(args.n)
    ratio = boot_s / bare_s
    profile_ratio = f"{r[0] / profile_s:.2f}" if r else "n/a"
    boot_ratio = f"{r[1] / boot_s:.2f}" if r else "n/a"
    print(
        f"bootstrap/bare_refits: {ratio:.2f} profile_lme4/profile: {profile_ratio} "
        f"bootstrap_lme4/bootstrap: {boot_ratio}"
    )


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
