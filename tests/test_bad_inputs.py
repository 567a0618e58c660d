"""The corpus of bad inputs (tests/bad_inputs/<case>/): each case runs through the
real workflow as the documented launcher runs it (``glmm-steps run config.yaml``); the
cases about reading the file, paths and names (the case name says so, SNAKEMAKE_TOO)
run again as the default config of a plain ``snakemake`` (``config/config.yaml``),
where the Snakefile itself reads the file (the other cases go through the same check
once read). Each run must stop before any job with exit status 1, print exactly its expected one-line
message (``expected.txt``) and nothing else on stderr, show no traceback, and create,
change or remove no file: an earlier results folder stays byte for byte as it was, and
nothing appears beside it (a config that would run code, e.g. ``touch pwned``, ran
none)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, run_snakemake, stderr_lines

pytestmark = pytest.mark.slow

CORPUS = ROOT / "tests" / "bad_inputs"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "expected.txt").is_file())


ROUTES = {"launcher": "config.yaml", "default_config": "config/config.yaml"}
SNAKEMAKE_TOO = ("yaml_", "config_", "results_dir", "empty_results_dir", "name_", "study_", "duplicate_")
RUNS = [(case, route) for case in CASES for route in ROUTES if route == "launcher" or case.startswith(SNAKEMAKE_TOO)]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (Snakemake's own .snakemake/ aside) and its digest."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".snakemake" not in p.relative_to(folder).parts
    }


def _earlier_results(results: Path) -> None:
    """A results folder as an earlier good run leaves it (contents need not be real)."""
    fit = results / "models" / "m" / "seed-1"
    fit.mkdir(parents=True)
    (fit / "fit_stats.json").write_text('{"model": "m", "status": "ok"}\n')
    (fit / "fixed_effects.csv").write_text("term,estimate\n(Intercept),10.1\n")
    (results / "summary.csv").write_text("model,status\nm,ok\n")


def _run(work: Path, route: str, args: list[str]) -> subprocess.CompletedProcess:
    if route == "launcher":
        cmd = [sys.executable, "-m", "glmm_steps.cli", "run", "config.yaml", "--cores", "2", *args]
        return subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return run_snakemake(work, *args, check=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, str], tuple]:
    """Run every case once each way (two at a time: a snakemake start-up is ~2-3 s)."""

    def run(key):
        case, route = key
        work = tmp_path_factory.mktemp(f"{case}-{route}")
        shutil.copytree(CORPUS / case, work, dirs_exist_ok=True)
        args = (work / "args.txt").read_text().split() if (work / "args.txt").exists() else []
        _earlier_results(work / "results")
        if route == "default_config":
            (work / "config").mkdir()
            shutil.copy(work / "config.yaml", work / "config" / "config.yaml")
        before = _snapshot(work)
        proc = _run(work, route, args)
        return work, proc, before, _snapshot(work)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(RUNS, pool.map(run, RUNS)))


def test_corpus_is_large_enough():
    assert len(CASES) >= 60
    # every case folder is complete: a config and its expected message
    assert sorted(p.name for p in CORPUS.iterdir() if p.is_dir()) == CASES


@pytest.mark.parametrize("case, route", RUNS)
def test_bad_input_stops_with_its_message(case, route, runs):
    work, proc, before, after = runs[case, route]
    expected = (CORPUS / case / "expected.txt").read_text().strip()
    expected = expected.replace("{workdir}", str(work)).replace("{config}", ROUTES[route])
    output = proc.stdout + proc.stderr
    lines = stderr_lines(proc)
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    assert lines == [expected], output
    assert after == before  # no file created, changed or removed, in results/ or beside it
    assert len(expected) <= 400
