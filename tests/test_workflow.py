"""End-to-end: the real Snakefile run by the real snakemake on small configs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REFERENCE, run_snakemake

pytestmark = pytest.mark.slow

TINY = {
    "datasets": {
        "tiny": {
            "seeds": [1, 2],
            "simulate": {
                "levels": [{"name": "site", "n": 4}, {"name": "subject", "n": 5}],
                "repeated": {"name": "visit", "values": [0, 1, 2]},
                "outcomes": {
                    "y": {"family": "gaussian", "intercept": 10, "coefficients": {"visit": 1.0},
                          "random_sd": {"site": 1.0, "subject": 0.5}, "residual_sd": 1.0},
                    "event": {"family": "binomial", "intercept": 0, "coefficients": {"visit": 0.5},
                              "random_sd": {"subject": 0.5}},
                },
            },
        },
        "sleep": {"path": "sleep.csv"},
    },
    "models": {
        "y_lmm": {"dataset": "tiny", "formula": "y ~ visit + (1 | site) + (1 | subject)"},
        "event_glmm": {"dataset": "tiny", "formula": "event ~ visit + (1 | subject)", "family": "binomial"},
        # verified at a tolerance no two engines meet: a deliberate mismatch the run reports
        "sleep_slopes": {"dataset": "sleep", "formula": "Reaction ~ Days + (Days | Subject)", "reml": False,
                         "verify": True, "verify_rtol": 1e-12, "verify_loglik_tol": 1e-12},
        "sleep_intercept": {"dataset": "sleep", "formula": "Reaction ~ Days + (1 | Subject)",
                            "engine": "statsmodels", "compare_with": ["sleep_slopes"], "verify": True},
        # `one` has a single level: the engine refuses it, and the run must go on.
        "doomed": {"dataset": "sleep", "formula": "Reaction ~ Days + (1 | one)"},
    },
}


def _write_config(workdir: Path, config: dict) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    sleep = pd.read_csv(REFERENCE / "data" / "sleepstudy.csv").assign(one=1)
    sleep.to_csv(workdir / "sleep.csv", index=False)
    config = _write_config(workdir, TINY)
    proc = run_snakemake(workdir, "--configfile", str(config))
    return workdir, config, proc


def test_every_output_and_the_failure_recorded(tiny_run):
    workdir, _, _ = tiny_run
    models = workdir / "results" / "models"
    for model, reps in {"y_lmm": ["seed-1", "seed-2"], "event_glmm": ["seed-1", "seed-2"],
                        "sleep_slopes": ["file"], "sleep_intercept": ["file"], "doomed": ["file"]}.items():
        for rep in reps:
            folder = models / model / rep
            for name in ("fixed_effects.csv", "variance_components.csv", "random_effects.csv",
                         "predictions.csv", "fit_stats.json", "plots/trajectories.png",
                         "plots/caterpillar.png", "plots/diagnostics.png"):
                assert (folder / name).is_file(), folder / name
    assert (workdir / "results" / "data" / "tiny" / "seed-2" / "truth.json").is_file()
    summary = pd.read_csv(workdir / "results" / "summary.csv")
    status = dict(zip(summary["model"] + "/" + summary["seed"].fillna(-1).astype(int).astype(str), summary["status"]))
    assert status["doomed/-1"] == "failed"
    assert status["y_lmm/1"] in ("ok", "singular") and status["sleep_slopes/-1"] == "ok"
    doomed = json.loads((models / "doomed" / "file" / "fit_stats.json").read_text())
    assert doomed["converged"] is False and "only 1 level" in doomed["error"]
    stats = json.loads((models / "sleep_slopes" / "file" / "fit_stats.json").read_text())
    assert stats["data_path"] == "sleep.csv" and stats["ngroups"] == {"Subject": 18}
    # the log of every step exists
    assert (workdir / "results" / "logs" / "fit" / "y_lmm_seed-1.log").is_file()


def test_verification_and_comparison(tiny_run):
    workdir, _, _ = tiny_run
    results = workdir / "results"
    summary = pd.read_csv(results / "summary.csv", keep_default_na=False).set_index("model")
    # the engines agree on sleep_intercept; the impossible tolerance is reported, not raised
    assert summary.loc["sleep_intercept", "verification"] == "agree"
    assert summary.loc["sleep_slopes", "verification"].startswith("DISAGREE: ")
    assert set(summary.loc["y_lmm", "verification"]) == {""}
    folder = results / "models" / "sleep_intercept" / "file"
    table = pd.read_csv(folder / "verification.csv")
    assert table["agree"].all() and set(table["quantity"]) == {"fixed_effect", "variance", "logLik"}
    other = json.loads((folder / "verification_fit_stats.json").read_text())
    assert other["engine"] == "mixedlm" and other["status"] == "ok"
    assert summary.loc["sleep_intercept", "engine"] == "statsmodels"
    lrt = pd.read_csv(results / "comparisons" / "sleep_intercept" / "file" / "likelihood_ratio.csv")
    assert lrt["model"].tolist() == ["sleep_intercept", "sleep_slopes"]
    assert lrt["refitted_ml"].tolist() == [True, False] and lrt["p_value"].iloc[1] < 1e-8
    ic = pd.read_csv(results / "comparisons" / "sleep_intercept" / "file" / "information_criteria.csv")
    assert ic.set_index("model")["delta_AIC"]["sleep_slopes"] == 0


def test_second_run_does_nothing(tiny_run):
    workdir, config, _ = tiny_run
    proc = run_snakemake(workdir, "--configfile", str(config))
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_bad_config_stops_before_any_job(tiny_run):
    workdir, _, _ = tiny_run
    before = _snapshot(workdir / "results")
    bad = json.loads(json.dumps(TINY))
    bad["models"]["y_lmm"]["formula"] = "y ~ visit + (1 | site) + (1 | patient)"
    proc = run_snakemake(workdir, "--configfile", str(_write_config(workdir / "..", bad)), check=False)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith("config error: models.y_lmm.formula:"), proc.stderr
    assert "'patient'" in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert _snapshot(workdir / "results") == before


def test_changing_one_model_reruns_only_that_model(tiny_run):
    workdir, _, _ = tiny_run
    models = workdir / "results" / "models"
    fits = {p: p.stat().st_mtime_ns for p in models.rglob("fit.pkl")}
    changed = json.loads(json.dumps(TINY))
    changed["models"]["y_lmm"]["formula"] = "y ~ visit + (1 | subject)"
    run_snakemake(workdir, "--configfile", str(_write_config(workdir, changed)))
    for path, mtime in fits.items():
        rerun = path.stat().st_mtime_ns != mtime
        assert rerun == ("y_lmm" in str(path)), path
    stats = json.loads((models / "y_lmm" / "seed-1" / "fit_stats.json").read_text())
    assert stats["formula"] == "y ~ visit + (1 | subject)"


def test_default_config_matches_lme4(tmp_path, root):
    """`make run`'s analysis, run in a scratch folder: the reference model's
    estimates agree with lme4 fitted to the same simulated file."""
    run_snakemake(tmp_path, "--configfile", str(root / "config" / "config.yaml"))
    data = tmp_path / "results" / "data" / "bp_study" / "seed-123" / "data.csv"
    assert data.read_bytes() == (REFERENCE / "data" / "bp_study_seed123.csv").read_bytes()
    fixtures = pd.read_csv(REFERENCE / "lme4_fixtures.csv")
    ref = fixtures[fixtures["case"] == "bp_lmm_reml"]
    fe = pd.read_csv(tmp_path / "results" / "models" / "bp_lmm" / "seed-123" / "fixed_effects.csv").set_index("term")
    for _, row in ref[ref["quantity"] == "fixef"].iterrows():
        assert fe.loc[row["term"], "estimate"] == pytest.approx(row["value"], rel=1e-6)
    vc = pd.read_csv(tmp_path / "results" / "models" / "bp_lmm" / "seed-123" / "variance_components.csv")
    for _, row in ref[ref["quantity"] == "variance"].iterrows():
        got = vc[(vc["group"] == row["group"]) & (vc["term"] == row["term"])]["variance"].item()
        assert got == pytest.approx(row["value"], rel=1e-4)
    stats = json.loads((tmp_path / "results" / "models" / "bp_lmm" / "seed-123" / "fit_stats.json").read_text())
    loglik = ref[ref["quantity"] == "logLik"]["value"].item()
    assert abs(stats["logLik"] - loglik) / 500 < 1e-6
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert set(summary["family"]) == {"gaussian", "binomial", "poisson"}
    assert (summary["status"] == "ok").all()
