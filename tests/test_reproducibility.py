"""Provenance end to end, and the README's promises on faults: identical reruns;
every file a manifest lists rebuilt when corrupted or deleted, and nothing removed
that the workflow does not write in this run's results folder; one run at a time per
results folder; a killed run resumed with the README's recipe; nothing written
outside the results folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, STUDY, clone_command, comparable_results, fresh_clone, run_clone, stderr_lines

from glmm_steps import integrity, paths
from glmm_steps.provenance import PATHS, sha256, verify_outputs

pytestmark = pytest.mark.slow


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
        # per seed: the fit, its tables (residuals.csv included), 4 plots (residuals.png
        # included), the effect table and its plot
        assert len(m["outputs"]) == 2 * (1 + len(paths.TABLES) + len(paths.PLOTS) + 2) and len(m["inputs"]) == 4
        # paths relative to the results folder: a copied folder's manifest names its own files
        assert m["paths"] == PATHS
        for rel, digest in {**m["inputs"], **m["outputs"]}.items():
            assert not rel.startswith(("/", "results/", "..")), rel
            assert sha256(clean_run / "results" / rel) == digest, rel
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
    assert verify_outputs(bp.parent / "manifest.json", clean_run / "results") == []


def launcher(clone: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``glmm-steps run study.yaml ARGS`` in ``clone``, with the clone's own package."""
    (clone / "study.yaml").write_text(yaml.safe_dump(STUDY))
    proc = subprocess.run(
        [sys.executable, "-m", "glmm_steps.cli", "run", "study.yaml", *args],
        cwd=clone,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(clone)),
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-4000:])
    return proc


def test_a_second_fresh_clone_killed_and_resumed_gives_identical_results(clean_run, tmp_path):
    """Two fresh clones of the same config give the same bytes (timings aside), even
    when the second run is killed mid-way and resumed with the README's recipe (a
    plain second run is the easier case, so it is not run again)."""
    clone = fresh_clone(tmp_path / "clone_k")
    cmd, env = clone_command(clone, "--cores", "1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
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
    # the README's recipe, through the launcher
    launcher(clone, "--unlock")
    launcher(clone, "--cores", "2", "--rerun-incomplete")
    a, b = comparable_results(clean_run / "results"), comparable_results(clone / "results")
    assert a.keys() == b.keys()
    assert len([k for k in a if k.endswith(".csv")]) >= 20
    assert {k for k in a if a[k] != b[k]} == set()


def test_every_listed_file_is_rebuilt_and_nothing_else_removed(clean_run, tmp_path):
    """A corrupted fit file, a deleted simulated data file (an intermediate: Snakemake
    alone would call the run done), a truncated manifest, and manifest entries naming
    files outside the results folder, all at once: the run reports each in one line,
    rebuilds every file to the same bytes, and removes nothing it does not write."""
    results = clean_run / "results"
    reference = comparable_results(results)
    bp = next((results / "models" / "bp_lmm").glob("[0-9a-f]*/seed-5"))
    events = next((results / "models" / "events_glmm").glob("[0-9a-f]*/seed-6")).parent
    (bp / "fit.zip").write_bytes(b"not a fit")
    (results / "data" / "study" / "seed-6" / "data.csv").unlink()
    events_manifest = events / "manifest.json"
    events_manifest.write_text(events_manifest.read_text()[:200])
    victims = [tmp_path / "victim.txt", clean_run / "victim.txt"]
    for v in victims:
        v.write_text("not the workflow's\n")
    manifest = json.loads((bp.parent / "manifest.json").read_text())
    manifest["outputs"] |= {str(victims[0]): "0" * 64, "../victim.txt": "0" * 64}
    (bp.parent / "manifest.json").write_text(json.dumps(manifest))
    # a truncated manifest blocks nothing, the README's --unlock included
    unlock = launcher(clean_run, "--unlock")
    assert "Traceback" not in unlock.stdout + unlock.stderr
    proc = launcher(clean_run, "--cores", "2")
    lines = stderr_lines(proc)
    rel = f"results/models/bp_lmm/{bp.parent.name}"
    assert f"checksum mismatch: {rel}/seed-5/fit.zip differs from {rel}/manifest.json; rebuilding it" in lines
    assert f"missing: results/data/study/seed-6/data.csv (listed in {rel}/manifest.json); rebuilding it" in lines
    assert (
        f"unreadable manifest: results/models/events_glmm/{events.name}/manifest.json "
        "(truncated, edited or of an older version); rebuilding it"
    ) in lines
    assert "Traceback" not in proc.stderr
    for v in victims:
        assert v.read_text() == "not the workflow's\n"
    victims[1].unlink()
    assert comparable_results(results) == reference
    for m in results.glob("models/*/[0-9a-f]*/manifest.json"):
        assert verify_outputs(m, results) == [] and json.loads(m.read_text())["paths"] == PATHS


def test_a_copy_of_the_results_folder_is_a_separate_folder(clean_run):
    """Manifests name files relative to their folder: running on a copy never touches
    the original, even where the original's files have since changed."""
    results, old = clean_run / "results", clean_run / "results_old"
    shutil.copytree(results, old, symlinks=True)
    try:
        stats = next((results / "models" / "bp_lmm").glob("[0-9a-f]*/seed-5/fit_stats.json"))
        kept = stats.read_bytes(), stats.stat()
        record = json.loads(kept[0])
        stats.write_text(json.dumps(record | {"wall_time_s": record["wall_time_s"] + 1}, indent=2) + "\n")
        before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
        (clean_run / "old.yaml").write_text(yaml.safe_dump(STUDY | {"results_dir": "results_old"}))
        proc = subprocess.run(
            [sys.executable, "-m", "glmm_steps.cli", "run", "old.yaml", "--cores", "2"],
            cwd=clean_run,
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(clean_run)),
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "checksum mismatch" not in proc.stderr
        assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before
        for m in old.glob("models/*/[0-9a-f]*/manifest.json"):
            assert verify_outputs(m, old) == []
    finally:
        shutil.rmtree(old)
        (clean_run / "old.yaml").unlink(missing_ok=True)
        stats.write_bytes(kept[0])
        os.utime(stats, ns=(kept[1].st_atime_ns, kept[1].st_mtime_ns))


def test_a_second_run_is_refused_before_it_removes_anything(clean_run):
    """While a run rebuilds fit files (so its fresh outputs differ from the manifests
    on disk), a second run on the same folder, through the launcher or snakemake, stops
    in one line; the first run ends well and gives the same results."""
    results = clean_run / "results"
    reference = comparable_results(results)
    for fit in results.glob("models/*/[0-9a-f]*/seed-*/fit.zip"):
        fit.unlink()
    cmd, env = clone_command(clean_run, "--cores", "1")
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while not integrity.is_locked(results) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = (
            "another run is using the results folder results; wait for it to end (or give this run another results_dir)"
        )
        second = launcher(clean_run, "--cores", "1", check=False)
        assert (second.returncode, stderr_lines(second)) == (1, [refused])
        second = run_clone(clean_run, "--cores", "1", check=False)
        assert (second.returncode, stderr_lines(second)) == (1, [refused])
        assert first.poll() is None, "the first run ended before the second was tried"
    finally:
        _, errors = first.communicate(timeout=600)
    assert first.returncode == 0, errors[-3000:]
    assert comparable_results(results) == reference


def test_report_and_nothing_written_outside_results(clean_run):
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    tracked = {Path(f).parts[0] for f in files} | {"study.yaml"}
    run_clone(clean_run, "--report", "results/report.html")
    html = (clean_run / "results" / "report.html").read_text()
    # captions, the provenance files and every model's plots are in the report
    assert "Conditional modes (BLUPs) of each grouping factor of bp_lmm" in html
    assert "manifest.json" in html and "catalog.html" in html and "summary.html" in html
    assert html.count("trajectories.png") >= 2
    # the tables are HTML pages (shown as tables), one per fit and table, under results/report/
    for model in ("bp_lmm", "events_glmm"):
        for seed in ("seed-5", "seed-6"):
            page = clean_run / "results" / "report" / "models" / model / seed / "fixed_effects.html"
            assert f"models/{model}/{seed}/fixed_effects.html" in html and "<table>" in page.read_text()
    # the report is not a result: leave clean_run's results as the other tests expect them
    (clean_run / "results" / "report.html").unlink()
    # the workflow created nothing beside results/ (and Snakemake's own .snakemake/)
    assert {p.name for p in clean_run.iterdir()} - tracked <= {"results", ".snakemake"}
