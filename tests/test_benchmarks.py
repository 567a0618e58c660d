"""The benchmarks under benchmarks/ still run, at a tiny size.

They are not timed here (speed is what they print, not what a test asserts): these
tests only check that each one runs to the end against the current code and prints
the line its README section quotes. large_fit.py once broke unnoticed when result
paths gained a version folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"\d+\.\d+"


def run_benchmark(*args: str, timeout: int = 300) -> list[str]:
    """Run ``benchmarks/<args>`` with this interpreter; return its output lines."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / args[0]), *args[1:]], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout.splitlines()


@pytest.mark.slow
def test_large_fit_runs_and_the_pipeline_fits_what_the_engine_fits(tmp_path):
    lines = run_benchmark("large_fit.py", "--hospitals", "4", "--patients", "5", "--visits", "4",
                          "--no-r", "--workdir", str(tmp_path))
    assert re.fullmatch(rf"pipeline/engine: {NUMBER} lme4/pipeline: n/a peak_gb: {NUMBER}", lines[-1]), lines[-1]
    engine, pipeline = next(ln for ln in lines if ln.startswith("fixed effects:")).removeprefix(
        "fixed effects: engine ").split(" | pipeline ")
    assert engine.split() == pipeline.split()
    # The real snakemake run of the fit and extract jobs happened and was timed.
    assert any(ln.lstrip().startswith("snakemake run of both jobs") for ln in lines)
    assert list((tmp_path / "sm_results" / "models" / "bp_lmm").glob("*/file/predictions.*"))


@pytest.mark.slow
def test_study_throughput_runs_and_loop_and_pipeline_agree():
    lines = run_benchmark("study_throughput.py", "--replicates", "6", "--batch-size", "3")
    assert "recovery tables of loop and pipeline agree: yes" in "\n".join(lines)
    assert re.fullmatch(rf"ratio pipeline/loop: {NUMBER}", lines[-1]), lines[-1]


def test_statsmodels_optimum_runs():
    lines = run_benchmark("statsmodels_optimum.py", "123", "1")
    assert re.fullmatch(r"default fit\(\) short of the optimum by > 1e-3 on [01] of 1 seeds", lines[-1]), lines[-1]


@pytest.mark.slow
def test_inference_benchmark_runs():
    lines = run_benchmark("inference.py", "--n", "20", "--no-r")
    assert re.fullmatch(rf"bootstrap/bare_refits: {NUMBER} profile_lme4/profile: n/a bootstrap_lme4/bootstrap: n/a",
                        lines[-1]), lines[-1]
    assert any(ln.startswith("bootstrap of 20 replicates (glmm_steps, 0 failed)") for ln in lines)
