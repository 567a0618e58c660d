"""Shared fixtures: the repository root, the reference data, a Snakemake runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

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


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real workflow (this repo's Snakefile) with ``workdir`` as working directory."""
    cmd = [snakemake_bin(), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc
