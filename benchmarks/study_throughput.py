"""How much a simulation study costs through the pipeline compared with a plain loop.

Runs, in one invocation, a study of the reference design (bp ~ time + (1 | hospital_id)
+ (1 | patient_id), 10 hospitals x 10 patients x 5 visits; ``--outcome hypertension``
or ``adverse_events``: the default config's binary or count outcome of the same design,
a logit or log GLMM) two ways:

1. a plain Python loop in this process over the same glmm_steps functions a batch job
   calls (simulate, fit, tidy each replicate; then the recovery table and plots);
2. the real workflow: snakemake --cores N in a temporary folder (batch jobs, then the
   recovery and study plots jobs side by side),
   then a second snakemake invocation with nothing changed.

3. when Rscript is on the PATH, the same replicates looped in R with lme4's ``refit``
   (benchmarks/study_throughput.R), the way simr runs a power simulation.

Prints the loop's milliseconds per replicate, the wall times, the R loop beside them,
and, as the last line, ``ratio pipeline/loop: <x>``. Targets (issue 17): at most 3 ms
of loop per replicate on one core, the pipeline at most 1.2x the loop, and the second
invocation under 5 s. BLAS and mixedlm's native (rayon) pool get one thread in the
loop, as a 1-thread batch job sets for itself (scripts/study_batch.py), so the loop
and a job fit alike; snakemake runs without these settings, as a user's would.

The model's test is ``--test`` (default satterthwaite, a gaussian model's default:
lmerTest's t tests; the R loop then computes them with lmerTest too, and both print
the mean Satterthwaite df of the time slope) or wald (z tests; R: lme4's summary); a
GLMM's is Wald z (R: glmer's summary of each refit).

    python benchmarks/study_throughput.py [--replicates 1000] [--batch-size 500] [--cores 2]
        [--test satterthwaite] [--outcome bp]
"""

from __future__ import annotations

import os

USER_ENV = dict(os.environ)  # what snakemake runs with: the jobs set their own thread counts
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    # before numpy and mixedlm load: the thread count a 1-thread batch job sets (scripts/study_batch.py)
    os.environ[_var] = "1"

import argparse  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from glmm_steps import batch, paths, power, process_exit, recovery, study_plot  # noqa: E402
from glmm_steps.config import load_config, read_yaml  # noqa: E402
from glmm_steps.engines.base import ModelSpec  # noqa: E402
from glmm_steps.extract import write_csv  # noqa: E402
from glmm_steps.simulate import design_from_config, design_rows, draw_response  # noqa: E402

MODEL = "study_model"


def study_config(replicates: int, batch_size: int, test: str = "satterthwaite", outcome: str = "bp") -> dict:
    """The benchmark's config: the default config's reference design as a study whose
    model of ``outcome`` (its family from the design) tests its fixed effects with
    ``test`` (a GLMM: wald)."""
    reference = read_yaml(ROOT / "config" / "config.yaml")["datasets"]["bp_study"]["simulate"]
    family = reference["outcomes"][outcome]["family"]
    return {
        "max_jobs": 100_000,
        "datasets": {
            "reference": {"replicates": replicates, "base_seed": 2024, "batch_size": batch_size, "simulate": reference}
        },
        "models": {
            MODEL: {
                "dataset": "reference",
                "formula": f"{outcome} ~ time + (1 | hospital_id) + (1 | patient_id)",
                "family": family,
                "power_terms": ["time"],
                "test": test if family == "gaussian" else "wald",
                # no simulation residual tests: a power study's replicates refit
                "residuals": {"nsim": 0},
            }
        },
    }


def run_loop(config_path: Path, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The study as a plain loop in this process: every replicate simulated, fitted and
    tidied in turn, then the recovery table and plots. Returns the recovery table and
    the replicates' estimates."""
    plan = load_config(config_path)
    point = plan.design_point(MODEL, "base")
    design = design_from_config(point.spec)
    spec = ModelSpec.from_config(MODEL, plan.config["models"][MODEL])
    n = plan.config["datasets"]["reference"]["replicates"]
    # As every job does on entering its log (glmm_steps.logs.to_log): the libraries'
    # objects are kept out of the collector's walks.
    process_exit.freeze_loaded()
    # run_batch is itself the plain loop (fit_replicate per seed), here over every replicate.
    start, cpu = time.perf_counter(), time.process_time()
    estimates, fits = batch.run_batch(design, spec, "base", plan.replicate_seeds(MODEL, 0, n - 1))
    replicates, replicates_cpu = time.perf_counter() - start, time.process_time() - cpu
    # CPU time too: on a shared machine the wall time counts other processes' turns.
    print(
        f"loop over replicates (simulate, refit, tidy): {1000 * replicates / n:.2f} ms per replicate wall, "
        f"{1000 * replicates_cpu / n:.2f} ms CPU"
    )
    # The recovery and study plots steps' work: both tables and all four figures.
    table = recovery.summarise(estimates, fits, 0.05, ["time"], ["base"])
    powers = power.power_table(table, [])
    write_csv(table, out / "recovery.csv")
    write_csv(powers, out / "power.csv")
    study_plot.draw_all(estimates, table, ["base"], {p: str(out / f"{p}.png") for p in paths.RECOVERY_PLOTS})
    power.power_curve_plot(powers, out / "power_curve.png", "loop")
    return table, estimates


def run_r_loop(config_path: Path, out: Path, test: str, outcome: str) -> str | None:
    """The same replicates in an R lme4 refit loop (benchmarks/study_throughput.R), when
    Rscript is present: the Python simulator's responses of ``outcome`` go to R as one
    column each; ``test`` satterthwaite takes lmerTest's tests of each refit; a GLMM
    is refitted with glmer's family. Returns R's output, or None without R."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return None
    plan = load_config(config_path)
    design = design_from_config(plan.design_point(MODEL, "base").spec)
    n = plan.config["datasets"]["reference"]["replicates"]
    rows = design_rows(design)
    frame = rows[0].copy()
    seeds = [seed for _, seed in plan.replicate_seeds(MODEL, 0, n - 1)]
    responses = {f"y{i + 1}": draw_response(design, outcome, seed, rows) for i, seed in enumerate(seeds)}
    family = plan.config["models"][MODEL]["family"]
    frame = pd.concat([frame, pd.DataFrame(responses)], axis=1)
    path = out / "responses.csv"
    frame.to_csv(path, index=False, float_format="%.17g")
    proc = subprocess.run(
        [rscript, str(ROOT / "benchmarks" / "study_throughput.R"), str(path), test, family],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else f"R loop failed: {proc.stderr.strip()[-300:]}"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_snakemake(workdir: Path, config_path: Path, cores: int) -> tuple[float, float, str]:
    """Run the workflow; returns (wall seconds, CPU seconds of snakemake and its jobs,
    combined output)."""
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [
        str(exe if exe.exists() else shutil.which("snakemake")),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config_path),
        "--cores",
        str(cores),
    ]
    env = dict(USER_ENV, PYTHONPATH=str(ROOT))
    start, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"snakemake failed:\n{proc.stderr[-3000:]}")
    return wall, _children_cpu() - cpu, proc.stdout + proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--test", choices=["satterthwaite", "wald"], default="satterthwaite")
    parser.add_argument("--outcome", choices=["bp", "hypertension", "adverse_events"], default="bp")
    args = parser.parse_args()
    if args.outcome != "bp":
        args.test = "wald"  # a GLMM's tests are Wald z, as glmer's

    workdir = Path(tempfile.mkdtemp(prefix="study_throughput_"))
    try:
        config_path = workdir / "config.yaml"
        config_path.write_text(
            yaml.safe_dump(study_config(args.replicates, args.batch_size, args.test, args.outcome), sort_keys=False)
        )
        n_batches = -(-args.replicates // args.batch_size)
        print(
            f"study: {args.replicates} replicates of the reference design's {args.outcome}, {n_batches} batch jobs of "
            f"{args.batch_size}, --cores {args.cores}, test {args.test}; load average before: "
            f"{os.getloadavg()[0]:.2f}"
        )

        loop_dir = workdir / "loop"
        loop_dir.mkdir()
        start, cpu = time.perf_counter(), time.process_time()
        loop_table, loop_estimates = run_loop(config_path, loop_dir)
        loop, loop_cpu = time.perf_counter() - start, time.process_time() - cpu
        print(
            f"loop (one process, same glmm_steps functions): {loop:.1f} s wall, {loop_cpu:.1f} s CPU "
            f"({1000 * loop / args.replicates:.1f} ms per replicate)"
        )

        r_output = run_r_loop(config_path, loop_dir, args.test, args.outcome)
        slope = loop_table.loc[loop_table["term"] == "time", "mean_estimate"].iloc[0]
        print(r_output if r_output is not None else "R lme4 loop: Rscript not found, skipped")
        print(f"Python mean time estimate: {slope:.10g}")
        if args.test == "satterthwaite":
            df = loop_estimates.loc[loop_estimates["term"] == "time", "df"].mean()
            print(f"Python mean time df: {df:.8g}")

        pipeline, pipeline_cpu, _ = run_snakemake(workdir, config_path, args.cores)
        print(
            f"pipeline (snakemake, {n_batches} batch jobs, recovery and plots): {pipeline:.1f} s wall, "
            f"{pipeline_cpu:.1f} s CPU (CPU ratio pipeline/loop {pipeline_cpu / loop_cpu:.2f})"
        )
        noop, noop_cpu, output = run_snakemake(workdir, config_path, args.cores)
        nothing = "Nothing to be done" in output
        print(
            f"second invocation, nothing changed: {noop:.1f} s wall, {noop_cpu:.1f} s CPU "
            f"({'nothing to do' if nothing else 'RAN JOBS'})"
        )

        piped = pd.read_csv(workdir / paths.output_path("recovery", "results", model=MODEL))
        same = np.allclose(piped["mean_estimate"], loop_table["mean_estimate"], rtol=1e-8) and np.allclose(
            piped["coverage"], loop_table["coverage"], equal_nan=True
        )
        print(
            f"recovery tables of loop and pipeline agree: {'yes' if same else 'NO'}; "
            f"load average after: {os.getloadavg()[0]:.2f}"
        )
        if r_output is not None and "ms per replicate" in r_output:
            r_ms = float(r_output.split(" ms per replicate")[0].rsplit(" ", 1)[1])
            print(f"ratio R lme4 loop/loop: {r_ms / (1000 * loop / args.replicates):.2f}")
        print(f"ratio pipeline/loop: {pipeline / loop:.2f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
