"""The ``glmm-steps`` launcher: reads a config as data, checks it, and hands Snakemake
JSON it cannot template; one-line errors; ``check`` writes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, stderr_lines

YTE = "?(__import__('os').system('touch pwned'), 'text')[1]"


def glmm_steps(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "glmm_steps.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def _files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture
def work(tmp_path) -> Path:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    return tmp_path


def test_check_passes_the_default_config_and_writes_nothing(work):
    before = _files(work)
    proc = glmm_steps(work, "check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "config/config.yaml: config ok, 26 jobs for a fresh run, results in results\n"
    assert _files(work) == before and not (work / "results").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "nope.yaml"], "config error: cannot read config file nope.yaml: No such file or directory"),
        (["check", "nope.yaml"], "config error: cannot read config file nope.yaml: No such file or directory"),
        (["run", "config"], "config error: cannot read config file config: Is a directory"),
        (
            ["run", "config/config.yaml", "--configfile", "other.yaml"],
            "glmm-steps run: --configfile is not allowed here; give the config as CONFIG (glmm-steps run CONFIG ...) "
            "and run from the folder its paths are relative to",
        ),
        (
            ["run", "config/config.yaml", "--config", "results_dir=/tmp"],
            "glmm-steps run: --config is not allowed here; give the config as CONFIG (glmm-steps run CONFIG ...) "
            "and run from the folder its paths are relative to",
        ),
        (["check", "config/config.yaml", "-n"], "glmm-steps check takes only CONFIG, not -n"),
    ],
)
def test_one_line_errors_and_nothing_written(work, args, message):
    before = _files(work)
    proc = glmm_steps(work, *args)
    assert (proc.returncode, stderr_lines(proc), proc.stdout) == (1, [message], "")
    assert _files(work) == before


def test_usage():
    assert glmm_steps(ROOT, "--help").returncode == 0
    proc = glmm_steps(ROOT, "fit")
    assert proc.returncode == 2 and proc.stderr.startswith("usage: glmm-steps run [CONFIG]")


@pytest.mark.slow
def test_snakemake_gets_json_it_does_not_template(work):
    """A valid config whose free text is a YTE expression: Snakemake reads the JSON the
    launcher writes as JSON (see snakemake.common.configfile: JSON first), so nothing
    is evaluated; the JSON lies inside the results folder and holds the config."""
    config = yaml.safe_load((work / "config" / "config.yaml").read_text())
    config["datasets"]["bp_study"]["description"] = YTE
    config["results_dir"] = "out"
    (work / "mine.yaml").write_text(yaml.safe_dump(config))
    proc = glmm_steps(work, "run", "mine.yaml", "-n")
    assert proc.returncode == 0, proc.stderr
    assert not (work / "pwned").exists()
    written = list((work / "out" / ".glmm-steps").glob("config-*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text()) == config
    assert {p.name for p in work.iterdir()} == {"config", "mine.yaml", "out", ".snakemake"}
    # profiles/default's settings come from the launcher: no notice that a profile was applied
    assert "Using workflow specific profile" not in proc.stdout + proc.stderr


def test_default_profile_settings_are_passed_as_options():
    from glmm_steps.cli import profile_options

    settings = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    args = profile_options(["--cores", "2"])
    assert args[:2] == ["--workflow-profile", "none"]
    for key, value in settings.items():
        value = value[0] if isinstance(value, list) else value
        assert (f"--{key}" in args) == (value is True), key
        assert (f"--{key}={value}" in args) == (value not in (True, False)), key
    assert profile_options(["--profile", "profiles/slurm"]) == ["--workflow-profile", "none"]
    assert profile_options(["--workflow-profile", "profiles/default"]) == []


@pytest.mark.slow
def test_make_run_refuses_a_hostile_config_and_runs_nothing(tmp_path):
    """`make run CONFIG=...` goes through the launcher: a config carrying a YTE template
    is refused in one line, and the command in it never runs."""
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text(
        f'__use_yte__: true\nresults_dir: "{YTE.replace("pwned", str(tmp_path / "pwned"))}"\n'
        + (ROOT / "config" / "config.yaml").read_text()
    )
    proc = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "-o", ".venv/.installed", "run", f"CONFIG={hostile}"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "config error: __use_yte__: unknown key" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "pwned").exists()
    assert {p.name for p in tmp_path.iterdir()} == {"hostile.yaml"}
