"""A million rows through the pipeline at the engine's own speed (a benchmark, not a test).

    python benchmarks/large_fit.py [--hospitals 200 --patients 500 --visits 10]
                                   [--repeat N] [--no-snakemake] [--no-r] [--workdir DIR]

Simulates the reference hospital/patient design (config/config.yaml's ``bp_study``)
scaled to 200 hospitals x 500 patients x 10 visits = 1,000,000 rows with the
pipeline's own simulate step (Parquet, the default at that size), then times the
REML fit of ``bp ~ time + (1 | hospital_id) + (1 | patient_id)``:

(a) engine: ``mixedlm.lmer`` on the frame already in memory, the fit call alone,
    with categorical ids as the pipeline fits it (integer ids, as read, are timed too);
(b) pipeline: the fit step (read the file, build the model frame, fit, tidy the
    results, save the fit) and the extract step (load the fit, write every table),
    the functions scripts/fit.py and scripts/extract.py call, each step in its own
    process as Snakemake runs them, timed from the call (imports excluded; they are
    printed too); with ``--snakemake`` (the default) also a real ``snakemake`` run of
    those two jobs, start to finish;
(c) lme4: ``lmer`` in ``Rscript`` (benchmarks/large_fit.R), the fit call alone, on
    the same rows written as CSV (R reads no Parquet without the arrow package). Its
    fixed effects are compared with the pipeline's, term by term, by the reference
    test's rule (rtol 1e-4, atol 1e-6): a line says how far apart they are, and a
    mismatch makes the script exit with status 1 after its report.

Every measurement runs in a fresh process with one BLAS thread, as Snakemake gives a
``threads: 1`` rule (on a busy 2-core machine a second OpenBLAS thread only spins: a
200 x 200 Cholesky took 0.25 s with two threads, 0.0006 s with one). On a shared
machine, run it more than once (``--repeat``), note the load it prints, and consider
``nice -n -10`` so that other work does not decide the wall times.
Each prints wall time, CPU time and peak resident memory; ``--repeat N`` runs (a)
and (b) N times, interleaved, and (c) N times, and keeps the fastest of each. The last line is

    pipeline/engine: <x> lme4/pipeline: <y> peak_gb: <z>

with ``peak_gb`` the fit step's peak memory; ``lme4/pipeline: n/a`` without R/lme4.
Targets (issue 8): pipeline/engine <= 1.5, lme4/pipeline >= 6, peak_gb < 4.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMULA = "bp ~ time + (1 | hospital_id) + (1 | patient_id)"
GROUPS = ("hospital_id", "patient_id")
ONE_THREAD = {
    v: "1"
    for v in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "GOTO_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    )
}


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), **ONE_THREAD)


def run_child(cmd: list[str], cwd: Path | None = None) -> tuple[str, dict]:
    """Run ``cmd``; return its output and {wall_s, cpu_s, peak_gb} of that process
    (its own rusage from wait4, so the peak is the child's, not this process's)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=cwd)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out[-4000:]}")
    return out, {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_gb": usage.ru_maxrss * 1024 / 1e9}


def _result(out: str) -> dict:
    """The JSON record a worker prints on its last line."""
    return json.loads(out.strip().splitlines()[-1])


# ---- workers: run in a child process -------------------------------------------------


def worker_engine(data_path: str, categorical: bool) -> None:
    import mixedlm

    from glmm_steps.tables import read_table

    frame = read_table(data_path, columns=["hospital_id", "patient_id", "time", "bp"])
    if categorical:
        frame = frame.astype({g: "category" for g in GROUPS})
    mixedlm.lmer  # noqa: B018  (mixedlm imports its submodules on first use: not part of a fit)
    start, cpu = time.perf_counter(), time.process_time()
    model = mixedlm.lmer(FORMULA, frame, REML=True)
    fit_s, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"fit_s": fit_s, "fit_cpu_s": fit_cpu, "fixef": [float(b) for b in model.beta]}))


def worker_fit(plan_config: str, model: str) -> None:
    t0 = time.perf_counter()
    import mixedlm
    import pyarrow.parquet  # noqa: F401  (glmm_steps imports these on first use)

    from glmm_steps.config import load_config
    from glmm_steps.engines import mixedlm_engine  # noqa: F401
    from glmm_steps.engines.base import ModelSpec
    from glmm_steps.fit import fit_file, save_fit

    # Time the engine's own call inside the step: the rest of the step is the pipeline's
    # own work, measured in the same process (not a difference of two noisy processes).
    engine_call = {}
    lmer = mixedlm.lmer

    def timed_lmer(*args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return lmer(*args, **kwargs)
        finally:
            engine_call.update(s=time.perf_counter() - start, cpu_s=time.process_time() - cpu)

    mixedlm.lmer = timed_lmer

    plan = load_config(plan_config)
    fit = next(f for f in plan.fits if f.model == model)
    data_path = plan.data_path(fit.dataset, fit.replicate)
    out = Path(plan.results) / "bench" / "fit.zip"
    imports_s = time.perf_counter() - t0
    start, cpu = time.perf_counter(), time.process_time()
    # What scripts/fit.py does.
    result = fit_file(
        data_path,
        ModelSpec.from_config(model, plan.config["models"][model]),
        factors=plan.config["datasets"][fit.dataset]["factors"],
    )
    saved = time.perf_counter()
    save_fit(result, out)
    end = time.perf_counter()
    print(
        json.dumps(
            {
                "step_s": end - start,
                "step_cpu_s": time.process_time() - cpu,
                "imports_s": imports_s,
                "engine_s": result.wall_time_s,
                "engine_call_s": engine_call["s"],
                "engine_call_cpu_s": engine_call["cpu_s"],
                "save_s": end - saved,
                "fit_mb": out.stat().st_size / 1e6,
                "fixef": result.fixef["estimate"].tolist(),
                "terms": result.fixef["term"].tolist(),
            }
        )
    )


def worker_extract(plan_config: str, model: str) -> None:
    t0 = time.perf_counter()
    import pyarrow.parquet  # noqa: F401  (glmm_steps imports it on first use)

    from glmm_steps import paths
    from glmm_steps.config import load_config
    from glmm_steps.extract import extract
    from glmm_steps.fit import load_fit

    plan = load_config(plan_config)
    fit = next(f for f in plan.fits if f.model == model)
    fmt = plan.table_format(model)
    outputs = {
        t: paths.output_path(
            t, str(Path(plan.results) / "bench"), fmt=fmt, model=model, version=fit.version, replicate=fit.replicate
        )
        for t in paths.TABLES
    }
    imports_s = time.perf_counter() - t0
    start, cpu = time.perf_counter(), time.process_time()
    # What scripts/extract.py does.
    extract(
        load_fit(Path(plan.results) / "bench" / "fit.zip"),
        outputs,
        seed=None,
        data_path=plan.data_path(fit.dataset, fit.replicate),
    )
    end = time.perf_counter()
    print(
        json.dumps(
            {
                "step_s": end - start,
                "step_cpu_s": time.process_time() - cpu,
                "imports_s": imports_s,
                "format": fmt,
                "sizes_mb": {t: Path(p).stat().st_size / 1e6 for t, p in outputs.items()},
            }
        )
    )


# ---- the driver ------------------------------------------------------------------------


def make_config(workdir: Path, hospitals: int, patients: int, visits: int) -> tuple[Path, Path]:
    """Write the scaled reference design as a config (simulated dataset) and a second
    config fitting the same file as a data file (for the Snakemake run)."""
    import yaml

    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    design = base["datasets"]["bp_study"]
    design["simulate"]["levels"] = [{"name": "hospital_id", "n": hospitals}, {"name": "patient_id", "n": patients}]
    design["simulate"]["repeated"]["values"] = list(range(1, visits + 1))
    design["description"] = f"bp_study scaled to {hospitals} x {patients} x {visits}"
    model = {"dataset": "big", "formula": FORMULA, "family": "gaussian", "reml": True}
    simulated = {"results_dir": str(workdir / "results"), "datasets": {"big": design}, "models": {"bp_lmm": model}}
    path = workdir / "simulated.yaml"
    path.write_text(yaml.safe_dump(simulated, sort_keys=False))
    return path, workdir / "file.yaml"


def best(runs: list[dict], key: str) -> dict:
    return min(runs, key=lambda r: r[key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hospitals", type=int, default=200)
    parser.add_argument("--patients", type=int, default=500, help="patients per hospital")
    parser.add_argument("--visits", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the fastest counts")
    parser.add_argument("--no-snakemake", action="store_true", help="skip the real snakemake run")
    parser.add_argument("--no-r", action="store_true", help="skip lme4 even if Rscript is installed")
    parser.add_argument("--workdir", help="keep files here (default: a temporary folder, removed)")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="large_fit_")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        run(args, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir: Path) -> None:
    import yaml

    from glmm_steps.config import load_config
    from glmm_steps.simulate import simulate_to_files

    py = sys.executable
    me = str(Path(__file__).resolve())
    config, file_config = make_config(workdir, args.hospitals, args.patients, args.visits)
    plan = load_config(config)
    data_path = plan.data_path("big", "seed-123")
    start = time.perf_counter()
    simulate_to_files(
        plan.config["datasets"]["big"]["simulate"], 123, data_path, str(Path(data_path).with_name("truth.json"))
    )
    print(
        f"simulated {plan.designs['big'].nrows:,} rows in {time.perf_counter() - start:.1f} s "
        f"-> {Path(data_path).name} ({Path(data_path).stat().st_size / 1e6:.0f} MB); "
        f"tables: {plan.table_format('bp_lmm')}"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")

    # Interleaved, so that a burst of load from elsewhere hits both sides alike.
    engine_runs, pipeline_runs = [], []
    for _ in range(args.repeat):
        for categorical in (False, True):
            out, usage = run_child([py, me, "--worker", "engine", data_path, str(categorical)])
            engine_runs.append({**_result(out), **usage, "ids": "categorical" if categorical else "integer"})
        out, fit_usage = run_child([py, me, "--worker", "fit", str(config), "bp_lmm"])
        fit = _result(out)
        out, extract_usage = run_child([py, me, "--worker", "extract", str(config), "bp_lmm"])
        extract = _result(out)
        pipeline_runs.append(
            {
                "total_s": fit["step_s"] + extract["step_s"],
                "total_cpu_s": fit["step_cpu_s"] + extract["step_cpu_s"],
                "fit": fit,
                "extract": extract,
                "fit_usage": fit_usage,
                "extract_usage": extract_usage,
            }
        )
    # As many draws as the pipeline gets (the fastest of more draws from a noisy machine
    # would be biased low), on the frame the pipeline fits: categorical ids. Integer ids
    # are timed too, for reference.
    engine = best([r for r in engine_runs if r["ids"] == "categorical"], "fit_s")
    pipeline = best(pipeline_runs, "total_s")
    peak_gb = max(r["fit_usage"]["peak_gb"] for r in pipeline_runs)

    snakemake_s = None
    if not args.no_snakemake:
        file_cfg = {
            "results_dir": str(workdir / "sm_results"),
            "datasets": {"big": {"path": data_path}},
            "models": {"bp_lmm": {"dataset": "big", "formula": FORMULA}},
        }
        file_config.write_text(yaml.safe_dump(file_cfg, sort_keys=False))
        file_plan = load_config(file_config)
        from glmm_steps import paths

        target = paths.output_path(
            "fit_stats", file_plan.results, model="bp_lmm", version=file_plan.versions["bp_lmm"], replicate="file"
        )
        times = []
        for _ in range(args.repeat):
            shutil.rmtree(workdir / "sm_results", ignore_errors=True)
            snakemake = str(Path(py).with_name("snakemake"))
            _, usage = run_child(
                [
                    snakemake,
                    "-s",
                    str(ROOT / "Snakefile"),
                    "--configfile",
                    str(file_config),
                    "--cores",
                    "1",
                    "--quiet",
                    "all",
                    "--",
                    target,
                ],
                cwd=workdir,
            )
            times.append(usage["wall_s"])
        snakemake_s = min(times)

    lme4 = None
    if not args.no_r and shutil.which("Rscript"):
        probe = subprocess.run(["Rscript", "-e", "library(lme4)"], capture_output=True)
        if probe.returncode == 0:
            from glmm_steps.tables import read_table, write_table

            csv = workdir / "data_for_R.csv"
            write_table(read_table(data_path), csv)  # exact floats: the same numbers
            runs = []
            for _ in range(args.repeat):
                out, usage = run_child(
                    ["Rscript", str(ROOT / "benchmarks" / "large_fit.R"), str(csv), FORMULA, *GROUPS]
                )
                lines = dict(ln.split(" ", 1) for ln in out.splitlines() if ln.startswith(("read_s", "fit_")))
                fixef = {ln.split()[1]: float(ln.split()[-1]) for ln in out.splitlines() if ln.startswith("fixef ")}
                runs.append(
                    {
                        "fit_s": float(lines["fit_s"]),
                        "fit_cpu_s": float(lines["fit_cpu_s"]),
                        "read_s": float(lines["read_s"]),
                        "fixef": fixef,
                        **usage,
                    }
                )
            lme4 = best(runs, "fit_s")
    load = os.getloadavg()

    fit, extract, fu, eu = pipeline["fit"], pipeline["extract"], pipeline["fit_usage"], pipeline["extract_usage"]
    rows = [
        (
            "(a) engine: mixedlm.lmer, frame in memory",
            engine["fit_s"],
            engine["fit_cpu_s"],
            engine["peak_gb"],
            "categorical ids; all runs: " + ", ".join(f"{r['ids']} {r['fit_s']:.2f} s" for r in engine_runs),
        ),
        (
            "(b) pipeline: fit + extract steps",
            pipeline["total_s"],
            pipeline["total_cpu_s"],
            max(fu["peak_gb"], eu["peak_gb"]),
            "the step calls, reading and writing files",
        ),
        (
            "    fit step",
            fit["step_s"],
            fit["step_cpu_s"],
            fu["peak_gb"],
            f"engine call {fit['engine_call_s']:.2f} s, save {fit['save_s']:.2f} s ({fit['fit_mb']:.0f} MB); "
            f"process {fu['wall_s']:.1f} s with imports",
        ),
        (
            "    extract step",
            extract["step_s"],
            extract["step_cpu_s"],
            eu["peak_gb"],
            f"{extract['format']} tables; process {eu['wall_s']:.1f} s with imports",
        ),
    ]
    if snakemake_s is not None:
        rows.append(
            (
                "    snakemake run of both jobs",
                snakemake_s,
                float("nan"),
                float("nan"),
                "start to finish: snakemake start-up, 2 Python jobs",
            )
        )
    if lme4 is not None:
        rows.append(
            (
                "(c) lme4: lmer in Rscript",
                lme4["fit_s"],
                lme4["fit_cpu_s"],
                lme4["peak_gb"],
                f"CSV read {lme4['read_s']:.1f} s not counted",
            )
        )
    print(f"\n{'measurement':<44} {'wall s':>8} {'CPU s':>8} {'peak GB':>8}  notes")
    for name, wall, cpu, peak, note in rows:
        print(f"{name:<44} {wall:8.2f} {cpu:8.2f} {peak:8.2f}  {note}")
    print("(peak GB: the whole process, reading the data included)")
    print(
        "fixed effects: engine "
        + " ".join(f"{b:.8g}" for b in engine["fixef"])
        + " | pipeline "
        + " ".join(f"{b:.8g}" for b in fit["fixef"])
        + (" | lme4 " + " ".join(f"{b:.8g}" for b in lme4["fixef"].values()) if lme4 else "")
    )
    mismatch = lme4 is not None and not fixef_agree(dict(zip(fit["terms"], fit["fixef"])), lme4["fixef"])
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in load)}")
    cpu_ratio = pipeline["total_cpu_s"] / engine["fit_cpu_s"]
    print(
        f"CPU-time ratios (less sensitive to other load than wall time, not immune): "
        f"pipeline/engine {cpu_ratio:.2f}"
        + (f", lme4/pipeline {lme4['fit_cpu_s'] / pipeline['total_cpu_s']:.2f}" if lme4 else "")
    )

    # The pipeline's own work, each part measured in the process that did it: the fit step
    # less the engine call inside it, plus the extract step. Engine times swing by 2x on a
    # loaded machine; this does not.
    own = [r["fit"]["step_s"] - r["fit"]["engine_call_s"] + r["extract"]["step_s"] for r in pipeline_runs]
    own_cpu = [
        r["fit"]["step_cpu_s"] - r["fit"]["engine_call_cpu_s"] + r["extract"]["step_cpu_s"] for r in pipeline_runs
    ]
    implied = (engine["fit_s"] + min(own)) / engine["fit_s"]
    implied_cpu = (engine["fit_cpu_s"] + min(own_cpu)) / engine["fit_cpu_s"]
    print(
        f"pipeline's own work (fit step less the engine call, plus extract): {min(own):.2f} s wall, "
        f"{min(own_cpu):.2f} s CPU -> (engine + own work) / engine = {implied:.2f} wall, {implied_cpu:.2f} CPU"
    )

    ratio = pipeline["total_s"] / engine["fit_s"]
    speedup = lme4["fit_s"] / pipeline["total_s"] if lme4 else None
    print(
        f"targets: pipeline/engine {ratio:.2f} (<= 1.5: {'met' if ratio <= 1.5 else 'MISSED'}), "
        + (f"lme4/pipeline {speedup:.2f} (>= 6: {'met' if speedup >= 6 else 'MISSED'}), " if speedup else "")
        + f"fit step peak {peak_gb:.2f} GB (< 4: {'met' if peak_gb < 4 else 'MISSED'})"
    )
    print(
        f"pipeline/engine: {ratio:.2f} lme4/pipeline: {f'{speedup:.2f}' if speedup else 'n/a'} peak_gb: {peak_gb:.2f}"
    )
    if mismatch:
        raise SystemExit("lme4's fixed effects differ from the pipeline's (see above)")


# The reference test's rule for fixed effects (tests/test_lme4_reference.py): lme4 prints
# them with 10 significant digits, far finer than this.
FIXEF_RTOL, FIXEF_ATOL = 1e-4, 1e-6


def fixef_agree(pipeline: dict[str, float], lme4: dict[str, float]) -> bool:
    """Print how far the pipeline's fixed effects are from lme4's, term by term (the same
    terms by name), and return whether every one is within FIXEF_RTOL * |lme4| + FIXEF_ATOL."""
    if sorted(pipeline) != sorted(lme4):
        print(f"fixed effects vs lme4: MISMATCH: terms {sorted(pipeline)} vs lme4 {sorted(lme4)}")
        return False
    rel = {t: abs(pipeline[t] - lme4[t]) / abs(lme4[t]) if lme4[t] else abs(pipeline[t]) for t in lme4}
    ok = all(abs(pipeline[t] - lme4[t]) <= FIXEF_RTOL * abs(lme4[t]) + FIXEF_ATOL for t in lme4)
    print(
        f"fixed effects vs lme4: largest relative difference {max(rel.values()):.2g} "
        f"({'agree' if ok else 'MISMATCH'} at rtol {FIXEF_RTOL:g}, atol {FIXEF_ATOL:g})"
    )
    return ok


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        sys.path.insert(0, str(ROOT))
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "engine":
            worker_engine(rest[0], rest[1] == "True")
        elif kind == "fit":
            worker_fit(*rest)
        else:
            worker_extract(*rest)
    else:
        sys.path.insert(0, str(ROOT))
        main()
