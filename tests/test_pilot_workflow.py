"""A study made from a pilot fit, run by the real snakemake: the pilot is fitted once,
by its own job, the batches simulate from the design file it writes, a second run
reruns nothing, and a changed override, data file or pilot model reruns what it must."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml
from conftest import REFERENCE, job_counts, run_snakemake

from glmm_steps.config import load_config
from glmm_steps.provenance import sha256

pytestmark = pytest.mark.slow

DAYS = list(range(12))
CONFIG = {
    "datasets": {
        "sleep": {"path": "sleepstudy.csv"},
        "from_pilot": {
            "replicates": 8,
            "base_seed": 5,
            "batch_size": 4,
            "simulate": {
                "from_model": "pilot",
                "fixed_effects": {"Days": 5.0},
                "extend": {"Subject": 30, "Days": DAYS},
            },
        },
    },
    "models": {
        "pilot": {"dataset": "sleep", "formula": "Reaction ~ Days + (Days | Subject)"},
        "pilot_power": {"dataset": "from_pilot", "formula": "Reaction ~ Days + (Days | Subject)"},
    },
}
# A pilot with a subject-level factor (Orthodont's Sex, 11 girls and 16 boys: arms per
# subject), an orthogonal quadratic by Sex and a slope on scale(age), extended to twice
# the subjects and a fifth visit at age 16.
ORTHO_FORMULA = "distance ~ poly(age, 2) * Sex + (1 + scale(age) | Subject)"
CONFIG["datasets"]["ortho"] = {"path": "Orthodont.csv"}
CONFIG["datasets"]["from_ortho"] = {
    "replicates": 60,
    "base_seed": 7,
    "batch_size": 60,
    "simulate": {"from_model": "ortho_pilot", "extend": {"Subject": 54, "age": [8, 10, 12, 14, 16]}},
}
CONFIG["models"]["ortho_pilot"] = {"dataset": "ortho", "formula": ORTHO_FORMULA}
CONFIG["models"]["ortho_power"] = {"dataset": "from_ortho", "formula": ORTHO_FORMULA, "residuals": {"nsim": 0}}


def _write(workdir, config, name="config.yaml"):
    path = workdir / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _dry_run(workdir, config_path) -> dict[str, int]:
    proc = run_snakemake(workdir, "--configfile", str(config_path), "-n")
    out = proc.stdout + proc.stderr
    return {} if "Nothing to be done" in out else job_counts(out)


@pytest.fixture(scope="module")
def pilot_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pilot_study")
    for name in ("sleepstudy.csv", "Orthodont.csv"):
        shutil.copy(REFERENCE / "data" / name, workdir / name)
    config = _write(workdir, CONFIG)
    proc = run_snakemake(workdir, "--configfile", str(config))
    return workdir, config, proc


def test_the_pilot_is_fitted_once_by_its_own_job(pilot_run, monkeypatch):
    workdir, config, proc = pilot_run
    monkeypatch.chdir(workdir)  # the config's data file is relative to it
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["pilot_design"] == 2 and counts["study_batch"] == 3
    assert counts["total"] == load_config(config).job_count
    design = json.loads((workdir / "results" / "pilots" / "pilot" / "design.json").read_text())
    # the pilot as fitted, before the override and the extension (the batches apply them)
    assert design["levels"] == [{"name": "Subject", "n": 18}] and design["repeated"]["values"] == list(range(10))
    ref = pd.read_csv(REFERENCE / "lme4_fixtures.csv", keep_default_na=False)
    ref = ref[(ref["case"] == "sleepstudy_reml") & (ref["quantity"] == "fixef")]
    assert design["outcomes"]["Reaction"]["coefficients"]["Days"] == pytest.approx(
        float(ref.loc[ref["term"] == "Days", "value"].iloc[0]), rel=1e-5
    )


def test_the_batches_simulate_the_pilot_with_its_overrides(pilot_run):
    workdir, config, _ = pilot_run
    study = workdir / "results" / "studies" / "pilot_power"
    fits = pd.concat(pd.read_csv(p) for p in study.rglob("fits.csv"))
    assert len(fits) == 8 and (fits["nobs"] == 30 * 12).all()
    table = pd.read_csv(study / "recovery.csv").set_index("term")
    assert table.loc["Days", "true_value"] == 5.0
    # the study's manifest names the pilot's design file among what made its tables
    manifest = json.loads((study / "manifest.json").read_text())
    assert manifest["inputs"]["pilots/pilot/design.json"] == sha256(workdir / "results/pilots/pilot/design.json")
    assert manifest["config"]["dataset"]["simulate"]["from_model"] == "pilot"
    # one replicate rerun alone simulates the same design from the pilot's file
    rep = study / "base" / "replicates" / "rep-1"
    run_snakemake(workdir, str(rep.relative_to(workdir) / "fixed_effects.csv"), "--configfile", str(config))
    estimates = pd.concat(pd.read_csv(p) for p in study.rglob("estimates.csv"))
    batch = estimates[(estimates["replicate"] == 1) & (estimates["term"] == "Days")]["estimate"].iloc[0]
    alone = pd.read_csv(rep / "fixed_effects.csv").set_index("term").loc["Days", "estimate"]
    assert alone == pytest.approx(batch, rel=1e-9)
    assert len(pd.read_csv(rep / "data.csv")) == 30 * 12


def test_a_transformed_factor_pilot_is_recovered(pilot_run):
    """ortho_power's replicates recover Orthodont's lme4 fit as its own columns code it:
    on the extended rows the study's poly(age, 2) basis and scale(age) differ from the
    pilot's, so the true values are those that reproduce the pilot's fixed and random
    parts (R's, tests/reference/pilot_transforms.csv); the fixed effects, SexMale and
    the interactions included, and the residual SD within 4 Monte-Carlo SEs (the
    random-effect SDs of 54 subjects are biased low, as REML's are, so not asserted)."""
    workdir, _, _ = pilot_run
    ref = pd.read_csv(REFERENCE / "pilot_transforms.csv", keep_default_na=False)
    value = {(q, g, t): float(v) for q, g, t, v in zip(ref["quantity"], ref["group"], ref["term"], ref["value"])}
    table = pd.read_csv(workdir / "results" / "studies" / "ortho_power" / "recovery.csv", keep_default_na=False)
    table = table.set_index(["group", "term"])
    expected = {("", t): v for (q, _, t), v in value.items() if q == "study_fixef"}
    expected[("Residual", "sd__Observation")] = value[("sd", "Residual", "(Intercept)")]
    assert len(expected) == 7
    for key, truth in expected.items():
        row = table.loc[key]
        assert float(row["true_value"]) == pytest.approx(truth, rel=1e-4), key
        assert int(row["n_estimated"]) == 60, key
        assert abs(float(row["mean_estimate"]) - truth) < 4 * float(row["bias_mcse"]), key
    for term in ("(Intercept)", "scale(age)"):
        row = table.loc[("Subject", f"sd__{term}")]
        assert float(row["true_value"]) == pytest.approx(value[("study_sd", "Subject", term)], rel=1e-4)
    design = json.loads((workdir / "results" / "pilots" / "ortho_pilot" / "design.json").read_text())
    assert design["arms"]["labels"] == ["Female", "Male"] and design["arms"]["ratio"] == [11, 16]
    fits = pd.read_csv(next((workdir / "results" / "studies" / "ortho_power").rglob("fits.csv")))
    assert (fits["nobs"] == 54 * 5).all()


def test_rerun_nothing_then_what_a_change_needs(pilot_run):
    workdir, config, _ = pilot_run
    design = workdir / "results" / "pilots" / "pilot" / "design.json"
    assert _dry_run(workdir, config) == {}
    # A new effect size: the batches (and what reads them) rerun, the pilot is not refitted.
    edited = json.loads(json.dumps(CONFIG))
    edited["datasets"]["from_pilot"]["simulate"]["fixed_effects"]["Days"] = 4.0
    edited_path = _write(workdir, edited, "edited.yaml")
    fitted_at = design.stat().st_mtime_ns
    proc = run_snakemake(workdir, "--configfile", str(edited_path))
    counts = job_counts(proc.stdout + proc.stderr)
    # pilot_power's two batches; not ortho_power's, nor a pilot or per-seed fit
    assert counts["study_batch"] == 2 and "pilot_design" not in counts and "fit" not in counts
    assert design.stat().st_mtime_ns == fitted_at
    recovery = pd.read_csv(workdir / "results" / "studies" / "pilot_power" / "recovery.csv").set_index("term")
    assert recovery.loc["Days", "true_value"] == 4.0
    assert _dry_run(workdir, edited_path) == {}
    # The pilot model's entry changes: the pilot is refitted, and the batches rerun.
    refit = json.loads(json.dumps(edited))
    refit["models"]["pilot"]["reml"] = False
    counts = _dry_run(workdir, _write(workdir, refit, "refit.yaml"))
    assert counts["pilot_design"] == 1 and counts["study_batch"] == 2
    # So does its data file.
    data = workdir / "sleepstudy.csv"
    data.write_text(data.read_text().replace("249.56", "249.57", 1))
    counts = _dry_run(workdir, edited_path)
    assert counts["pilot_design"] == 1 and counts["study_batch"] == 2


def test_a_pilot_fit_that_fails_stops_the_run_in_one_line(tmp_path):
    """A pilot whose data pass the config check but whose fit fails (sleepstudy with the
    reaction times scaled by 1e200: finite, so accepted, and no optimizer converges) stops
    the run at the pilot's own job, before any batch: its one-line reason is printed and
    kept in the job's log, no traceback, and no study output is written."""
    data = pd.read_csv(REFERENCE / "data" / "sleepstudy.csv")
    data.assign(Reaction=data["Reaction"] * 1e200).to_csv(tmp_path / "sleep_huge.csv", index=False)
    config = {
        "datasets": {
            "sleep": {"path": "sleep_huge.csv"},
            "from_pilot": {"replicates": 4, "base_seed": 1, "batch_size": 4, "simulate": {"from_model": "pilot"}},
        },
        "models": {
            "pilot": {"dataset": "sleep", "formula": "Reaction ~ Days + (Days | Subject)"},
            "pilot_power": {"dataset": "from_pilot", "formula": "Reaction ~ Days + (Days | Subject)"},
        },
    }
    proc = run_snakemake(tmp_path, "--configfile", str(_write(tmp_path, config)), check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    reason = "error: the pilot fit of 'pilot' to sleep_huge.csv failed: "
    assert reason in " ".join(output.split()), output[-3000:]
    assert (tmp_path / "results" / "logs" / "pilot_design" / "pilot.log").read_text().startswith(reason)
    assert "Traceback" not in output
    assert not (tmp_path / "results" / "pilots" / "pilot" / "design.json").exists()
    assert not (tmp_path / "results" / "studies").exists()
