"""End-to-end: the real Snakefile run by the real snakemake on small configs."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REFERENCE, run_snakemake, stderr_lines

pytestmark = pytest.mark.slow

TINY = {
    "datasets": {
        "tiny": {
            "seeds": [1, 2],
            "simulate": {
                "levels": [{"name": "site", "n": 4}, {"name": "subject", "n": 5}],
                "repeated": {"name": "visit", "values": [0, 1, 2]},
                "outcomes": {
                    "y": {
                        "family": "gaussian",
                        "intercept": 10,
                        "coefficients": {"visit": 1.0},
                        "random_sd": {"site": 1.0, "subject": 0.5},
                        "residual_sd": 1.0,
                    },
                    "event": {
                        "family": "binomial",
                        "intercept": 0,
                        "coefficients": {"visit": 0.5},
                        "random_sd": {"subject": 0.5},
                    },
                },
            },
        },
        "sleep": {"path": "sleep.csv"},
    },
    "models": {
        "y_lmm": {"dataset": "tiny", "formula": "y ~ visit + (1 | site) + (1 | subject)"},
        "event_glmm": {"dataset": "tiny", "formula": "event ~ visit + (1 | subject)", "family": "binomial"},
        # verified at a tolerance no two engines meet: a deliberate mismatch the run reports
        "sleep_slopes": {
            "dataset": "sleep",
            "formula": "Reaction ~ Days + (Days | Subject)",
            "reml": False,
            "verify": True,
            "verify_rtol": 1e-12,
            "verify_loglik_tol": 1e-12,
        },
        "sleep_intercept": {
            "dataset": "sleep",
            "formula": "Reaction ~ Days + (1 | Subject)",
            "engine": "statsmodels",
            "compare_with": ["sleep_slopes"],
            "verify": True,
        },
        # `huge` (~1e202) passes every data check but the engine cannot fit it: the
        # failure is recorded and the run goes on.
        "doomed": {"dataset": "sleep", "formula": "huge ~ Days + (1 | Subject)"},
    },
}


def _write_config(workdir: Path, config: dict) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    sleep = pd.read_csv(REFERENCE / "data" / "sleepstudy.csv")
    sleep = sleep.assign(huge=sleep["Reaction"] * 1e200)
    sleep.to_csv(workdir / "sleep.csv", index=False)
    config = _write_config(workdir, TINY)
    proc = run_snakemake(workdir, "--configfile", str(config))
    return workdir, config, proc


def test_every_output_and_the_failure_recorded(tiny_run):
    workdir, _, proc = tiny_run
    # the run ends by counting fits per status, so the failed one is not missed
    assert "1 failed" in proc.stderr and "results/summary.csv" in proc.stderr
    models = workdir / "results" / "models"
    for model, reps in {
        "y_lmm": ["seed-1", "seed-2"],
        "event_glmm": ["seed-1", "seed-2"],
        "sleep_slopes": ["file"],
        "sleep_intercept": ["file"],
        "doomed": ["file"],
    }.items():
        for rep in reps:
            folder = models / model / "latest" / rep
            for name in (
                "fixed_effects.csv",
                "variance_components.csv",
                "random_effects.csv",
                "predictions.csv",
                "fit_stats.json",
                "plots/trajectories.png",
                "plots/caterpillar.png",
                "plots/diagnostics.png",
            ):
                assert (folder / name).is_file(), folder / name
    assert (workdir / "results" / "data" / "tiny" / "seed-2" / "truth.json").is_file()
    summary = pd.read_csv(workdir / "results" / "summary.csv")
    status = dict(zip(summary["model"] + "/" + summary["seed"].fillna(-1).astype(int).astype(str), summary["status"]))
    assert status["doomed/-1"] == "failed"
    assert status["y_lmm/1"] in ("ok", "singular") and status["sleep_slopes/-1"] == "ok"
    doomed = json.loads((models / "doomed" / "latest" / "file" / "fit_stats.json").read_text())
    assert doomed["converged"] is False and "finite" in doomed["error"]
    # checked for every mixedlm fit with estimates (the statsmodels engine has no such check)
    by_mixedlm = summary[summary["engine"] == "mixedlm"]
    assert by_mixedlm["hessian_ok"].notna().sum() == len(by_mixedlm) - 1
    assert "Subject treated as a factor" in summary.set_index("model").loc["sleep_slopes", "notes"]
    stats = json.loads((models / "sleep_slopes" / "latest" / "file" / "fit_stats.json").read_text())
    assert stats["data_path"] == "sleep.csv" and stats["ngroups"] == {"Subject": 18}
    # the log of every step exists
    version = (models / "y_lmm" / "latest").readlink().name
    assert (workdir / "results" / "logs" / "fit" / f"y_lmm_{version}_seed-1.log").is_file()


def test_verification_and_comparison(tiny_run):
    workdir, _, _ = tiny_run
    results = workdir / "results"
    summary = pd.read_csv(results / "summary.csv", keep_default_na=False).set_index("model")
    # the engines agree on sleep_intercept; the impossible tolerance is reported, not raised
    assert summary.loc["sleep_intercept", "verification"] == "agree"
    assert summary.loc["sleep_slopes", "verification"].startswith("DISAGREE: ")
    assert set(summary.loc["y_lmm", "verification"]) == {""}
    folder = results / "models" / "sleep_intercept" / "latest" / "file"
    table = pd.read_csv(folder / "verification.csv")
    assert table["agree"].all() and set(table["quantity"]) == {"fixed_effect", "variance", "logLik"}
    other = json.loads((folder / "verification_fit_stats.json").read_text())
    assert other["engine"] == "mixedlm" and other["status"] == "ok"
    assert summary.loc["sleep_intercept", "engine"] == "statsmodels"
    lrt = pd.read_csv(results / "models" / "sleep_intercept" / "latest" / "file" / "likelihood_ratio.csv")
    assert lrt["model"].tolist() == ["sleep_intercept", "sleep_slopes"]
    assert lrt["refitted_ml"].tolist() == [True, False] and lrt["p_value"].iloc[1] < 1e-8
    ic = pd.read_csv(results / "models" / "sleep_intercept" / "latest" / "file" / "information_criteria.csv")
    assert ic.set_index("model")["delta_AIC"]["sleep_slopes"] == 0


def test_run_prints_progress_and_a_closing_summary(tiny_run):
    _, _, proc = tiny_run
    out = proc.stdout + proc.stderr
    lines = [ln for ln in out.splitlines() if ln.strip()]
    # one screen: the job table, the study-free run's closing lines; no per-job blocks
    assert len(lines) <= 45, out
    assert "jobid:" not in out and "rule fit:" not in out
    assert re.search(r"^\s*total\s+\d+", out, re.M)  # jobs to do, before the progress display
    closing = out[out.index("fitted 5 models, 7 fits: ") :].splitlines()
    assert re.fullmatch(
        r"fitted 5 models, 7 fits: (\d+ \w+, )*1 failed(, \d+ \w+)* \(see results/summary.csv\)", closing[0]
    ), closing[0]
    assert any(ln.startswith("  doomed (data file): failed: ") for ln in closing)
    # ok, but verified with an impossible tolerance: the disagreement is listed too
    assert any(ln.startswith("  sleep_slopes (data file): ok: engines DISAGREE: ") for ln in closing)
    assert "results in results/ (models/<model>/latest/, catalog.csv); logs in results/logs/" in closing


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
    lines = stderr_lines(proc)
    assert lines == [lines[0]] and lines[0].startswith("config error: models.y_lmm.formula:"), proc.stderr
    assert "'patient'" in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert _snapshot(workdir / "results") == before


def test_changing_one_model_adds_a_version_and_keeps_the_old(tiny_run):
    workdir, _, _ = tiny_run
    models = workdir / "results" / "models"
    old_version = (models / "y_lmm" / "latest").readlink().name
    old_files = _snapshot(models / "y_lmm" / old_version)
    others = {p: p.stat().st_mtime_ns for p in models.rglob("fit.zip") if "y_lmm" not in str(p)}
    changed = json.loads(json.dumps(TINY))
    changed["models"]["y_lmm"]["formula"] = "y ~ visit + (1 | subject)"
    run_snakemake(workdir, "--configfile", str(_write_config(workdir, changed)))
    # no other model reran, the old version is byte-for-byte intact
    assert {p: p.stat().st_mtime_ns for p in others} == others
    assert _snapshot(models / "y_lmm" / old_version) == old_files
    new_version = (models / "y_lmm" / "latest").readlink().name
    assert new_version != old_version
    stats = json.loads((models / "y_lmm" / new_version / "seed-1" / "fit_stats.json").read_text())
    assert stats["formula"] == "y ~ visit + (1 | subject)"
    catalog = pd.read_csv(workdir / "results" / "catalog.csv")
    rows = catalog[catalog["model"] == "y_lmm"].set_index("version")
    assert set(rows.index) == {old_version, new_version}
    assert bool(rows.loc[new_version, "current"]) and not bool(rows.loc[old_version, "current"])
    assert "(1 | site)" in json.loads(rows.loc[old_version, "config"])["model"]["formula"]
    # summary.csv covers every fit on disk, as the catalog: the old version's fits stay
    # listed, and only the running config's are current
    summary = pd.read_csv(workdir / "results" / "summary.csv")
    y = summary[summary["model"] == "y_lmm"]
    assert sorted(y["version"]) == sorted([old_version] * 2 + [new_version] * 2)
    assert set(y.loc[y["current"], "version"]) == {new_version}
    assert summary["current"].sum() == len(summary) - 2

    # the documented comparison target: side by side, with differences
    target = f"results/comparisons/y_lmm/{old_version}_vs_{new_version}/seed-1.csv"
    run_snakemake(workdir, target, "--configfile", str(workdir / "config.yaml"))
    table = pd.read_csv(workdir / target)
    vc = table[table["table"] == "variance_components"].set_index("group")
    assert pd.isna(vc.loc["site", "estimate_b"]) and vc.loc["site", "estimate_a"] >= 0
    time_row = table[(table["table"] == "fixed_effects") & (table["term"] == "visit")].iloc[0]
    assert time_row["difference"] == pytest.approx(time_row["estimate_b"] - time_row["estimate_a"])


def test_default_config_matches_lme4(tmp_path, root):
    """`make run`'s analysis, run in a scratch folder: the reference model's
    estimates agree with lme4 fitted to the same simulated file."""
    run_snakemake(tmp_path, "--configfile", str(root / "config" / "config.yaml"))
    data = tmp_path / "results" / "data" / "bp_study" / "seed-123" / "data.csv"
    assert data.read_bytes() == (REFERENCE / "data" / "bp_study_seed123.csv").read_bytes()
    fixtures = pd.read_csv(REFERENCE / "lme4_fixtures.csv")
    ref = fixtures[fixtures["case"] == "bp_lmm_reml"]
    fe = pd.read_csv(
        tmp_path / "results" / "models" / "bp_lmm" / "latest" / "seed-123" / "fixed_effects.csv"
    ).set_index("term")
    for _, row in ref[ref["quantity"] == "fixef"].iterrows():
        assert fe.loc[row["term"], "estimate"] == pytest.approx(row["value"], rel=1e-6)
    vc = pd.read_csv(tmp_path / "results" / "models" / "bp_lmm" / "latest" / "seed-123" / "variance_components.csv")
    for _, row in ref[ref["quantity"] == "variance"].iterrows():
        got = vc[(vc["group"] == row["group"]) & (vc["term"] == row["term"])]["variance"].item()
        assert got == pytest.approx(row["value"], rel=1e-4)
    stats = json.loads(
        (tmp_path / "results" / "models" / "bp_lmm" / "latest" / "seed-123" / "fit_stats.json").read_text()
    )
    loglik = ref[ref["quantity"] == "logLik"]["value"].item()
    assert abs(stats["logLik"] - loglik) / 500 < 1e-6
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert set(summary["family"]) == {"gaussian", "binomial", "poisson"}
    assert (summary["status"] == "ok").all()
