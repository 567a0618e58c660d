"""End-to-end: a small simulation study run by the real snakemake."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import run_snakemake

from glmm_steps.config import load_config

pytestmark = pytest.mark.slow

# Two design points: with one site the model cannot be fitted (a grouping factor needs two
# levels), so every replicate of that design fails and must still be counted.
STUDY = {
    "datasets": {
        "tiny": {
            "replicates": 6,
            "base_seed": 11,
            "batch_size": 4,
            "sweep": {"levels.site.n": [1, 4]},
            "simulate": {
                "levels": [{"name": "site", "n": 4}, {"name": "subject", "n": 5}],
                "repeated": {"name": "visit", "values": [0, 1, 2]},
                "outcomes": {
                    "y": {
                        "family": "gaussian",
                        "intercept": 10,
                        "coefficients": {"visit": 1.0},
                        "random_sd": {"site": 1.0, "subject": 0.5},
                        "residual_sd": 1.0,
                    }
                },
            },
        },
    },
    "models": {"y_lmm": {"dataset": "tiny", "formula": "y ~ visit + (1 | site) + (1 | subject)"}},
}


# One replicate's full outputs, asked for by path (not part of `all`).
REPLICATE = "results/studies/y_lmm/site.n=4/replicates/rep-5/fixed_effects.csv"


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study")
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    proc = run_snakemake(workdir, "all", REPLICATE, "--configfile", str(config))
    return workdir, config, proc


def test_plan_counts_the_jobs_snakemake_schedules(study_run):
    workdir, config, proc = study_run
    total = re.search(r"^\s*total\s+(\d+)", proc.stdout + proc.stderr, re.M)
    assert total, proc.stderr
    # 2 design points x 2 batches (0-3, 4-5), recovery, study plots, the report's tables,
    # all; plus the one replicate
    assert load_config(config).job_count == 8
    assert int(total.group(1)) == 8 + 1


def test_recovery_counts_failed_replicates(study_run):
    workdir, _, proc = study_run
    study = workdir / "results" / "studies" / "y_lmm"
    table = pd.read_csv(study / "recovery.csv")
    failed = table[table["design"] == "site.n=1"]
    assert set(failed["term"]) == {"(Intercept)", "visit", "sd__(Intercept)", "sd__Observation"}
    assert (failed["n_failed"] == 6).all() and (failed["n_estimated"] == 0).all()
    ok = table[table["design"] == "site.n=4"]
    assert (ok["n_replicates"] == 6).all() and (ok["n_failed"] == 0).all()
    assert list(table["levels.site.n"]) == [1] * 5 + [4] * 5
    visit = ok.set_index("term").loc["visit"]
    assert visit["true_value"] == 1.0 and visit["n_estimated"] == 6
    # coverage is the share of the batches' intervals that contain the truth
    rows = pd.concat(pd.read_csv(p) for p in sorted((study / "site.n=4" / "batches").rglob("estimates.csv")))
    rows = rows[rows["term"] == "visit"]
    assert len(rows) == 6
    assert visit["coverage"] == ((rows["conf_low"] <= 1.0) & (1.0 <= rows["conf_high"])).mean()
    for plot in ("estimates", "coverage", "power"):
        assert (study / "plots" / f"{plot}.png").is_file()
    batches = sorted(p.relative_to(study).as_posix() for p in study.rglob("fits.csv"))
    assert batches == [f"site.n={n}/batches/{b}/fits.csv" for n in (1, 4) for b in ("0-3", "4-5")]
    # the batch jobs say how far they got, in their logs and on snakemake's output
    log = workdir / "results" / "logs" / "study_batch" / "y_lmm_site.n=4_0-3.log"
    assert "y_lmm site.n=4 replicates 0-3: 4/4 (100%), 0 failed" in log.read_text()
    assert "y_lmm site.n=1 replicates 4-5: 2/2 (100%), 2 failed" in proc.stderr


def test_one_replicate_on_demand_matches_its_batch_row(study_run):
    workdir, _, _ = study_run
    rerun = pd.read_csv(workdir / REPLICATE, dtype=str)
    rows = pd.read_csv(workdir / "results/studies/y_lmm/site.n=4/batches/4-5/estimates.csv", dtype=str)
    rows = rows[(rows["replicate"] == "5") & (rows["effect"] == "fixed")]
    for col in ("term", "estimate", "std_error", "p_value"):
        assert list(rows[col]) == list(rerun[col]), col


def test_the_study_manifest_says_what_made_its_tables(study_run):
    """A study's manifest (written by its recovery job) records the model's and
    dataset's config entries, the base seed and number of replicates, the code and
    package versions, and the SHA-256 of every batch table it summarised and of the
    recovery and power tables, by path relative to the results folder."""
    from glmm_steps.provenance import PACKAGES, sha256, verify_outputs

    workdir, _, _ = study_run
    results = workdir / "results"
    manifest = json.loads((results / "studies/y_lmm/manifest.json").read_text())
    assert manifest["model"] == "y_lmm" and manifest["version"] is None
    assert manifest["config"]["model"]["formula"] == STUDY["models"]["y_lmm"]["formula"]
    assert manifest["config"]["dataset"]["sweep"] == STUDY["datasets"]["tiny"]["sweep"]
    assert manifest["seeds"] == {"base_seed": 11, "replicates": 6}
    assert set(manifest["packages"]) == set(PACKAGES) and manifest["packages"]["mixedlm"]
    batches = sorted(str(p.relative_to(results)) for p in (results / "studies/y_lmm").glob("*/batches/*/*.csv"))
    assert len(batches) == 8 and sorted(manifest["inputs"]) == batches
    assert sorted(manifest["outputs"]) == ["studies/y_lmm/power.csv", "studies/y_lmm/recovery.csv"]
    for rel, digest in {**manifest["inputs"], **manifest["outputs"]}.items():
        assert sha256(results / rel) == digest, rel
    assert verify_outputs(results / "studies/y_lmm/manifest.json", results) == []


def test_second_run_does_nothing(study_run):
    workdir, config, _ = study_run
    proc = run_snakemake(workdir, "--configfile", str(config))
    assert "Nothing to be done" in proc.stdout + proc.stderr


# Coverage needs a study large enough that Monte-Carlo error is small: 400 replicates
# of a tiny design (40 subjects x 4 visits), fitted in-process by the functions a batch
# job calls, in a child process with one BLAS thread as Snakemake gives a threads: 1 job
# (with two threads OpenBLAS only spins on these small problems: 4x slower).
COVERAGE_STUDY = """
import json, sys
from glmm_steps.batch import run_batch
from glmm_steps.engines.base import ModelSpec
from glmm_steps.recovery import summarise
from glmm_steps.simulate import Design, Level, Outcome
from glmm_steps.study import replicate_seeds

design = Design((Level("subject", 40),), "visit", (0, 1, 2, 3),
                (Outcome("y", "gaussian", 2.0, {"visit": 0.5}, {"subject": 1.0}, residual_sd=1.0),))
n = int(sys.argv[1])
estimates, fits = run_batch(design, ModelSpec("m", "d", "y ~ visit + (1 | subject)"), "d",
                            list(enumerate(replicate_seeds(2026, n))))
print(summarise(estimates, fits).to_json(orient="records"))
"""
COVERAGE_REPLICATES = 400
NOMINAL = 0.95


def test_wald_interval_coverage_is_nominal_within_monte_carlo_error(root):
    """The study's 95% intervals cover the true fixed effects 95% of the time, within
    three Monte-Carlo standard errors (sqrt(0.95 * 0.05 / 400) = 1.1%): a wrong standard
    error, interval or truth would move coverage far outside. Measured: 0.94 for the
    intercept, 0.95 for the visit slope."""
    threads = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.run(
        [sys.executable, "-c", COVERAGE_STUDY, str(COVERAGE_REPLICATES)],
        capture_output=True,
        check=False,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(root), **threads),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.DataFrame(json.loads(proc.stdout.strip().splitlines()[-1])).set_index("term")
    mcse = math.sqrt(NOMINAL * (1 - NOMINAL) / COVERAGE_REPLICATES)
    for term in ("(Intercept)", "visit"):
        row = table.loc[term]
        assert row["n_estimated"] == COVERAGE_REPLICATES and row["n_failed"] == 0, row
        assert abs(row["coverage"] - NOMINAL) <= 3 * mcse, (
            f"{term}: coverage {row['coverage']:.3f}, nominal {NOMINAL} +- {3 * mcse:.3f} (3 MCSE)"
        )


def test_report_holds_the_study(study_run):
    workdir, config, _ = study_run
    run_snakemake(workdir, "--configfile", str(config), "--report", "results/report.html")
    html = (workdir / "results" / "report.html").read_text()
    # the recovery table as an HTML table, and the three recovery plots, with their captions
    page = (workdir / "results" / "report" / "studies" / "y_lmm" / "recovery.html").read_text()
    assert page.count("<tr>") == 1 + 10 and "<th>coverage_mcse</th>" in page
    assert "studies/y_lmm/recovery.html" in html and "Parameter recovery of a simulation study" in html
    for plot in ("estimates", "coverage", "power"):
        assert f"studies/y_lmm/plots/{plot}.png" in html
    (workdir / "results" / "report.html").unlink()
