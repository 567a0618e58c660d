"""Provenance end to end: identical reruns, corrupted outputs rebuilt, a killed run resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, clone_command, comparable_results, fresh_clone, run_clone
from glmm_steps.provenance import sha256, verify_outputs

pytestmark = pytest.mark.slow


def test_two_fresh_clones_give_identical_results(clean_run, tmp_path):
    other = fresh_clone(tmp_path / "clone_b")
    run_clone(other)
    a, b = comparable_results(clean_run / "results"), comparable_results(other / "results")
    assert a.keys() == b.keys()
    assert len([k for k in a if k.endswith(".csv")]) >= 20
    assert {k for k in a if a[k] != b[k]} == set()


def test_manifest_lists_real_versions_and_checksums(clean_run):
    manifests = sorted((clean_run / "results" / "models").glob("*/[0-9a-f]*/manifest.json"))
    assert len(manifests) == 2
    for path in manifests:
        m = json.loads(path.read_text())
        assert m["seeds"] == ["seed-5", "seed-6"]
        from importlib.metadata import version
        for pkg in ("snakemake", "pandas", "numpy", "scipy", "statsmodels", "mixedlm", "matplotlib"):
            assert m["packages"][pkg] == version(pkg)
        assert m["platform"]["machine"] and m["python"].count(".") == 2
        assert len(m["outputs"]) == 2 * (1 + 6 + 4) and len(m["inputs"]) == 4  # fit, tables, plots
        for rel, digest in {**m["inputs"], **m["outputs"]}.items():
            assert sha256(clean_run / rel) == digest, rel
        assert m["config"]["model"]["formula"] in m["config"]["model"].values()


def test_corrupted_and_deleted_outputs_are_rebuilt(clean_run):
    bp = next((clean_run / "results" / "models" / "bp_lmm").glob("[0-9a-f]*/seed-5"))
    table, plot = bp / "fixed_effects.csv", bp / "plots" / "caterpillar.png"
    good_table, good_plot = table.read_bytes(), plot.read_bytes()
    table.write_text(good_table.decode().replace("time", "tine"))
    plot.unlink()
    run_clone(clean_run, "-n")  # a dry run reports nothing and deletes nothing
    assert table.read_bytes() != good_table
    proc = run_clone(clean_run)
    assert f"checksum mismatch: results/models/bp_lmm/{bp.parent.name}/seed-5/fixed_effects.csv" in proc.stderr
    assert table.read_bytes() == good_table and plot.read_bytes() == good_plot
    assert verify_outputs(bp.parent / "manifest.json") == []


def test_killed_run_resumes_to_the_same_numbers(clean_run, tmp_path):
    clone = fresh_clone(tmp_path / "clone_k")
    cmd, env = clone_command(clone, "--cores", "1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    # Kill the whole run (Snakemake and its job) as soon as the second fit has started.
    deadline = time.monotonic() + 300
    logs = clone / "results" / "logs" / "fit"
    while time.monotonic() < deadline and proc.poll() is None:
        if logs.is_dir() and len(list(logs.iterdir())) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (clone / "results" / "summary.csv").exists()
    run_clone(clone, "--unlock")
    run_clone(clone, "--rerun-incomplete")
    assert comparable_results(clone / "results") == comparable_results(clean_run / "results")


def test_report_and_nothing_written_outside_results(clean_run):
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split()
    tracked = {Path(f).parts[0] for f in files} | {"study.yaml"}
    run_clone(clean_run, "--report", "results/report.html")
    html = (clean_run / "results" / "report.html").read_text()
    # captions, the provenance files and every model's plots are in the report
    assert "Conditional modes (BLUPs) of each grouping factor of bp_lmm" in html
    assert "manifest.json" in html and "catalog.csv" in html
    assert html.count("trajectories.png") >= 2
    # the report is not a result: leave clean_run's results as the other tests expect them
    (clean_run / "results" / "report.html").unlink()
    # the workflow created nothing beside results/ (and Snakemake's own .snakemake/)
    assert {p.name for p in clean_run.iterdir()} - tracked <= {"results", ".snakemake"}
