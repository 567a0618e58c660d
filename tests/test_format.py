"""Static checks the suite runs: the code is formatted (ruff for Python, snakefmt for the
Snakefile and rules), ruff's lint finds nothing, and `snakemake --lint` reports nothing
but the per-rule conda/container advice (one pinned environment serves every rule)."""

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, snakemake_bin

BIN = Path(sys.executable).parent
SNAKEFILES = ["Snakefile", "rules"]
# The one lint that stays: every rule runs in the project's single pinned environment,
# and no conda channel is reachable here to build and test a second one.
ALLOWED_LINTS = {"Specify a conda environment or container for each rule."}


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def test_python_is_formatted_and_lint_free():
    fmt = _run(str(BIN / "ruff"), "format", "--check", "--diff", ".")
    assert fmt.returncode == 0, fmt.stdout[-3000:] + fmt.stderr[-2000:]
    lint = _run(str(BIN / "ruff"), "check", ".")
    assert lint.returncode == 0, lint.stdout[-3000:]


def test_snakefiles_are_formatted():
    proc = _run(str(BIN / "snakefmt"), "--check", *SNAKEFILES)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_snakemake_lint_only_asks_for_per_rule_environments():
    proc = _run(snakemake_bin(), "--lint")
    lints = set(re.findall(r"^\s+\* (.+?):?$", proc.stdout + proc.stderr, re.M))
    assert lints, "the conda/container advice is expected: has --lint changed its output?"
    assert lints <= ALLOWED_LINTS, lints - ALLOWED_LINTS
