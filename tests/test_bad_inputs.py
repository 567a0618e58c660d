"""The corpus of bad inputs (tests/bad_inputs/<case>/): each case runs through the
real workflow and must stop before any job with exit status 1, print exactly its
expected one-line message (``expected.txt``) and nothing else on stderr, show no
traceback, and leave an earlier results folder byte for byte as it was."""

from __future__ import annotations

import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ROOT, run_snakemake, stderr_lines

pytestmark = pytest.mark.slow

CORPUS = ROOT / "tests" / "bad_inputs"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "expected.txt").is_file())


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _earlier_results(results: Path) -> None:
    """A results folder as an earlier good run leaves it (contents need not be real)."""
    fit = results / "models" / "m" / "seed-1"
    fit.mkdir(parents=True)
    (fit / "fit_stats.json").write_text('{"model": "m", "status": "ok"}\n')
    (fit / "fixed_effects.csv").write_text("term,estimate\n(Intercept),10.1\n")
    (results / "summary.csv").write_text("model,status\nm,ok\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple]:
    """Run every case once (two at a time: each is a snakemake start-up, ~2-3 s)."""
    def run(case: str):
        work = tmp_path_factory.mktemp(case)
        shutil.copytree(CORPUS / case, work, dirs_exist_ok=True)
        _earlier_results(work / "results")
        before = _snapshot(work / "results")
        proc = run_snakemake(work, "--configfile", str(work / "config.yaml"), check=False)
        return work, proc, before, _snapshot(work / "results")

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(CASES, pool.map(run, CASES)))


def test_corpus_is_large_enough():
    assert len(CASES) >= 30
    # every case folder is complete: a config and its expected message
    assert sorted(p.name for p in CORPUS.iterdir() if p.is_dir()) == CASES


@pytest.mark.parametrize("case", CASES)
def test_bad_input_stops_with_its_message(case, runs):
    work, proc, before, after = runs[case]
    expected = (CORPUS / case / "expected.txt").read_text().strip().replace("{workdir}", str(work))
    output = proc.stdout + proc.stderr
    lines = stderr_lines(proc)
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    assert lines == [expected], output
    assert after == before
    assert not (work / "results" / "data").exists()  # no job ran
