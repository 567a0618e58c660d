"""Provenance end to end: identical reruns, corrupted outputs rebuilt, a killed run resumed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, run_snakemake, snakemake_bin
from glmm_steps.provenance import sha256, verify_outputs

pytestmark = pytest.mark.slow

CONFIG = {
    "datasets": {
        "study": {
            "seeds": [5, 6],
            "simulate": {
                "levels": [{"name": "hospital_id", "n": 4}, {"name": "patient_id", "n": 5}],
                "repeated": {"name": "time", "values": [1, 2, 3, 4]},
                "outcomes": {
                    "bp": {"family": "gaussian", "intercept": 120, "coefficients": {"time": 0.5},
                           "random_sd": {"hospital_id": 2, "patient_id": 1}, "residual_sd": 5},
                    "events": {"family": "poisson", "intercept": 0, "coefficients": {"time": 0.1},
                               "random_sd": {"patient_id": 0.5}},
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


def _fresh_clone(dest: Path) -> Path:
    """The tracked files of this checkout, copied as a fresh clone would have them."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"], capture_output=True, text=True, check=True)
    for rel in files.stdout.splitlines():
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


def _run_clone(clone: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    (clone / "study.yaml").write_text(yaml.safe_dump(CONFIG))
    env = dict(os.environ, PYTHONPATH=str(clone))
    cmd = [snakemake_bin(), "-s", str(clone / "Snakefile"), "--directory", str(clone), "--cores", "2",
           "--configfile", str(clone / "study.yaml"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-4000:])
    return proc


def _comparable(results: Path) -> dict[str, object]:
    """Every result file's content, minus the fields allowed to vary."""
    out: dict[str, object] = {}
    for p in sorted(results.rglob("*")):
        rel = str(p.relative_to(results))
        if not p.is_file() or rel.startswith("logs/") or p.suffix == ".pkl":
            continue
        if p.suffix == ".json":
            rec = json.loads(p.read_text())
            for key in VOLATILE_JSON:
                rec.pop(key, None)
            if "outputs" in rec:  # a manifest: checksums of timing-bearing files vary
                rec["outputs"] = {k: v for k, v in rec["outputs"].items()
                                  if not k.endswith(("fit_stats.json", "fit.pkl"))}
                rec.pop("git", None)
            out[rel] = rec
        elif rel == "catalog.csv":
            out[rel] = pd.read_csv(p).drop(columns=["created", "git_commit", "git_dirty"]).to_dict("list")
        else:
            out[rel] = sha256(p)
    return out


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    clone = _fresh_clone(tmp_path_factory.mktemp("clone_a"))
    _run_clone(clone)
    return clone


def test_two_fresh_clones_give_identical_results(clean_run, tmp_path):
    other = _fresh_clone(tmp_path / "clone_b")
    _run_clone(other)
    a, b = _comparable(clean_run / "results"), _comparable(other / "results")
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
        assert len(m["outputs"]) == 2 * (1 + 5 + 3) and len(m["inputs"]) == 4
        for rel, digest in {**m["inputs"], **m["outputs"]}.items():
            assert sha256(clean_run / rel) == digest, rel
        assert m["config"]["model"]["formula"] in m["config"]["model"].values()


def test_corrupted_and_deleted_outputs_are_rebuilt(clean_run):
    bp = next((clean_run / "results" / "models" / "bp_lmm").glob("[0-9a-f]*/seed-5"))
    table, plot = bp / "fixed_effects.csv", bp / "plots" / "caterpillar.png"
    good_table, good_plot = table.read_bytes(), plot.read_bytes()
    table.write_text(good_table.decode().replace("time", "tine"))
    plot.unlink()
    proc = _run_clone(clean_run)
    assert f"checksum mismatch: results/models/bp_lmm/{bp.parent.name}/seed-5/fixed_effects.csv" in proc.stderr
    assert table.read_bytes() == good_table and plot.read_bytes() == good_plot
    assert verify_outputs(bp.parent / "manifest.json") == []


def test_killed_run_resumes_to_the_same_numbers(clean_run, tmp_path):
    clone = _fresh_clone(tmp_path / "clone_k")
    (clone / "study.yaml").write_text(yaml.safe_dump(CONFIG))
    env = dict(os.environ, PYTHONPATH=str(clone))
    cmd = [snakemake_bin(), "-s", str(clone / "Snakefile"), "--directory", str(clone), "--cores", "1",
           "--configfile", str(clone / "study.yaml")]
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
    _run_clone(clone, "--unlock")
    _run_clone(clone, "--rerun-incomplete")
    assert _comparable(clone / "results") == _comparable(clean_run / "results")


def test_report_and_nothing_written_outside_results(clean_run):
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split()
    tracked = {Path(f).parts[0] for f in files} | {"study.yaml"}
    _run_clone(clean_run, "--report", "results/report.html")
    html = (clean_run / "results" / "report.html").read_text()
    # captions, the provenance files and every model's plots are in the report
    assert "Conditional modes (BLUPs) of each grouping factor of bp_lmm" in html
    assert "manifest.json" in html and "catalog.csv" in html
    assert html.count("trajectories.png") >= 2
    # the workflow created nothing beside results/ (and Snakemake's own .snakemake/)
    assert {p.name for p in clean_run.iterdir()} - tracked <= {"results", ".snakemake"}
