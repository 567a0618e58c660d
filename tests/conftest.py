"""Shared fixtures: the repository root, the reference data, a Snakemake runner, and a
small study run end to end in a fresh clone (for the reproducibility and SLURM tests)."""

from __future__ import annotations

import os

# The suite's fits are small: OpenBLAS's worker threads spin on them (measured about 4x
# slower per fit on 2 cores) and every Snakemake job the tests start inherits this.
# Set before numpy is first imported, which the imports below do.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from glmm_steps.provenance import sha256

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "reference"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def bp_data() -> pd.DataFrame:
    """The reference study simulated with seed 123 (the file lme4 was fitted to)."""
    return pd.read_csv(REFERENCE / "data" / "bp_study_seed123.csv")


def snakemake_bin() -> str:
    """The snakemake of the interpreter running the tests (the project's .venv)."""
    exe = Path(sys.executable).with_name("snakemake")
    return str(exe) if exe.exists() else shutil.which("snakemake")


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The non-empty stderr lines of a run, less Snakemake's notice that it applies
    profiles/default (printed on every run of this workflow, not ours to judge)."""
    return [
        ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("Using workflow specific profile")
    ]


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real workflow (this repo's Snakefile) with ``workdir`` as working directory."""
    cmd = [snakemake_bin(), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table Snakemake prints before running: rule -> number of jobs.
    Read from Snakemake's plain table or the rich logger's (profiles/default), which
    writes rule names with spaces for underscores and pads the rows."""
    counts = {}
    for line in output.split("Job stats", 1)[1].splitlines():
        m = re.fullmatch(r"\s*([A-Za-z_][\w ]*?)\s+(\d+)\s*", line)
        if m:
            counts[m[1].replace(" ", "_")] = int(m[2])
            if m[1] == "total":
                break
    return counts


# A small study: 2 models x 2 seeds on a 4 hospitals x 5 patients x 4 visits design.
STUDY = {
    "datasets": {
        "study": {
            "seeds": [5, 6],
            "simulate": {
                "levels": [{"name": "hospital_id", "n": 4}, {"name": "patient_id", "n": 5}],
                "repeated": {"name": "time", "values": [1, 2, 3, 4]},
                "outcomes": {
                    "bp": {
                        "family": "gaussian",
                        "intercept": 120,
                        "coefficients": {"time": 0.5},
                        "random_sd": {"hospital_id": 2, "patient_id": 1},
                        "residual_sd": 5,
                    },
                    "events": {
                        "family": "poisson",
                        "intercept": 0,
                        "coefficients": {"time": 0.1},
                        "random_sd": {"patient_id": 0.5},
                    },
                },
            },
        }
    },
    "models": {
        "bp_lmm": {"dataset": "study", "formula": "bp ~ time + (1 | hospital_id) + (1 | patient_id)"},
        "events_glmm": {"dataset": "study", "formula": "events ~ time + (1 | patient_id)", "family": "poisson"},
    },
}

# Fields that legitimately differ between identical runs: timings and creation times,
# and the checksums of the two files that carry a timing.
VOLATILE_JSON = {"wall_time_s", "created"}


def fresh_clone(dest: Path) -> Path:
    """The tracked files of this checkout, copied as a fresh clone would have them."""
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    )
    for rel in files.stdout.splitlines():
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


def clone_command(clone: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """The snakemake command line and environment that run ``clone``'s own Snakefile on
    STUDY inside ``clone`` (written to ``clone/study.yaml``), with ``args`` appended."""
    (clone / "study.yaml").write_text(yaml.safe_dump(STUDY))
    env = dict(os.environ, PYTHONPATH=str(clone))
    cmd = [
        snakemake_bin(),
        "-s",
        str(clone / "Snakefile"),
        "--directory",
        str(clone),
        "--configfile",
        str(clone / "study.yaml"),
        *args,
    ]
    return cmd, env


def run_clone(clone: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run STUDY locally on 2 cores in ``clone``; fail with Snakemake's stderr if it fails."""
    cmd, env = clone_command(clone, "--cores", "2", *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-4000:])
    return proc


def comparable_results(results: Path) -> dict[str, object]:
    """Every result file's content, minus the fields allowed to vary."""
    out: dict[str, object] = {}
    for p in sorted(results.rglob("*")):
        rel = str(p.relative_to(results))
        # logs, fit files (they hold the fit's time) and the lock and configs the runs
        # leave in .glmm-steps/ are not results
        if not p.is_file() or rel.startswith(("logs/", ".glmm-steps/")) or p.name == "fit.zip":
            continue
        if p.suffix == ".json":
            rec = json.loads(p.read_text())
            for key in VOLATILE_JSON:
                rec.pop(key, None)
            if "outputs" in rec:  # a manifest: checksums of timing-bearing files vary
                rec["outputs"] = {
                    k: v for k, v in rec["outputs"].items() if not k.endswith(("fit_stats.json", "fit.zip"))
                }
                rec.pop("git", None)
            out[rel] = rec
        elif rel == "catalog.csv":
            out[rel] = pd.read_csv(p).drop(columns=["created", "git_commit", "git_dirty"]).to_dict("list")
        elif rel == "report/catalog.html":  # the catalog as the report shows it: the same times vary
            out[rel] = p.read_text().count("<tr>")
        else:
            out[rel] = sha256(p)
    return out


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory) -> Path:
    """A fresh clone with STUDY run locally: the reference every other run of it must
    reproduce (shared by the reproducibility and SLURM tests, so it runs once)."""
    clone = fresh_clone(tmp_path_factory.mktemp("clone_a"))
    run_clone(clone)
    return clone
