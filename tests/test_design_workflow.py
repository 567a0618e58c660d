"""End-to-end: a power study with every new design element, run by the real snakemake,
recovers what it simulated (within Monte-Carlo error)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml
from conftest import REFERENCE, run_snakemake

pytestmark = pytest.mark.slow

N = 60
DESIGN = {
    "levels": [{"name": "hospital", "n": 20}, {"name": "patient", "n": [3, 5]}],
    "crossed": [{"name": "rater", "n": 10}],
    "repeated": {"name": "time", "values": [0, 1, 2]},
    "arms": {"name": "arm", "level": "hospital", "labels": ["control", "treated"], "ratio": [1, 1]},
    "covariates": {
        "age": {"level": "patient", "distribution": "normal", "mean": 0, "sd": 1},
        "smoker": {"level": "patient", "distribution": "binary", "p": 0.4},
    },
    "missing": {"dropout": 0.1, "mcar": 0.05},
    "outcomes": {
        "y": {
            "family": "gaussian",
            "intercept": 10,
            "coefficients": {"time": 0.5, "age": 1.0, "smoker": -1.0},
            "arm_effects": {"treated": 2.0},
            "arm_by_time": {"treated": -0.5},
            "random_sd": {"hospital": 1.0, "patient": 1.5, "rater": 0.8},
            "random_slopes": {"patient": {"term": "time", "sd": 0.5, "cor": 0.4}},
            "residual_sd": 1.0,
        }
    },
}
# A sample-size question: a cluster-randomised trial at two numbers of hospitals.
CLUSTERED = {
    "levels": [{"name": "hospital", "n": 10}, {"name": "patient", "n": 5}],
    "repeated": {"name": "visit", "values": [1]},
    "arms": {"name": "arm", "level": "hospital", "labels": ["control", "treated"]},
    "outcomes": {
        "y": {
            "family": "gaussian",
            "intercept": 0,
            "arm_effects": {"treated": 0.6},
            "random_sd": {"hospital": 0.3},
            "residual_sd": 0.95,
        }
    },
}
CONFIG = {
    "datasets": {
        "trial": {"replicates": N, "base_seed": 17, "batch_size": 30, "simulate": DESIGN},
        "size": {
            "replicates": 40,
            "base_seed": 3,
            "batch_size": 40,
            "simulate": CLUSTERED,
            "sweep": {"levels.hospital.n": [6, 40]},
        },
    },
    "models": {
        "trial_lmm": {
            "dataset": "trial",
            "formula": "y ~ time * arm + age + smoker + (1 | hospital) + (1 + time | patient) + (1 | rater)",
            "power_terms": ["armtreated", "time:armtreated"],
        },
        "size_lmm": {
            "dataset": "size",
            "formula": "y ~ arm + (1 | hospital)",
            "power_terms": ["armtreated"],
            "target_power": 0.8,
        },
        # lme4's sleepstudy as a pilot, extended to 30 subjects and 12 days, slope set to 5
        "pilot": {"dataset": "sleep", "formula": "Reaction ~ Days + (Days | Subject)"},
        "pilot_power": {"dataset": "from_pilot", "formula": "Reaction ~ Days + (Days | Subject)"},
    },
}
# The same sample-size question answered by a likelihood-ratio test (ML fits).
CONFIG["models"]["size_ml"] = {
    "dataset": "size",
    "formula": "y ~ arm + (1 | hospital)",
    "reml": False,
    "test": "lrt",
    "compare_with": ["size_null"],
    "power_terms": ["armtreated"],
}
CONFIG["models"]["size_null"] = {"dataset": "size", "formula": "y ~ 1 + (1 | hospital)", "reml": False}
CONFIG["datasets"]["sleep"] = {"path": "sleepstudy.csv"}
CONFIG["datasets"]["from_pilot"] = {
    "replicates": N,
    "base_seed": 5,
    "batch_size": N,
    "simulate": {
        "from_model": "pilot",
        "fixed_effects": {"Days": 5.0},
        "extend": {"Subject": 30, "Days": list(range(12))},
    },
}


def _pilot_estimates() -> dict[tuple[str, str], float]:
    """lme4's fit of the pilot, lmer(Reaction ~ Days + (Days | Subject), sleepstudy), from
    the committed lme4 reference, as recovery.csv names the parameters; Days set to 5."""
    ref = pd.read_csv(REFERENCE / "lme4_fixtures.csv", keep_default_na=False)
    ref = ref[ref["case"] == "sleepstudy_reml"]
    value = {(q, g, t): float(v) for q, g, t, v in zip(ref["quantity"], ref["group"], ref["term"], ref["value"])}
    return {
        ("", "(Intercept)"): value[("fixef", "", "(Intercept)")],
        ("", "Days"): 5.0,
        ("Subject", "sd__(Intercept)"): value[("variance", "Subject", "(Intercept)")] ** 0.5,
        ("Subject", "sd__Days"): value[("variance", "Subject", "Days")] ** 0.5,
        ("Subject", "cor__(Intercept).Days"): value[("correlation", "Subject", "cor((Intercept),Days)")],
        ("Residual", "sd__Observation"): value[("sigma", "Residual", "")],
    }


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("design_study")
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    shutil.copy(REFERENCE / "data" / "sleepstudy.csv", workdir / "sleepstudy.csv")
    proc = run_snakemake(workdir, "--configfile", str(config))
    return workdir, proc


@pytest.fixture(scope="module")
def recovery_table(study_run):
    workdir, _ = study_run
    return pd.read_csv(workdir / "results" / "studies" / "trial_lmm" / "recovery.csv").set_index(["group", "term"])


def test_sample_size_answer_in_power_table_plot_and_run_summary(study_run):
    workdir, proc = study_run
    study = workdir / "results" / "studies" / "size_lmm"
    table = pd.read_csv(study / "power.csv")
    assert list(table["levels.hospital.n"]) == [6, 40]
    small, large = table.itertuples()
    # 6 hospitals detect 0.6 SD rarely, 40 nearly always (design effect 1.36: power 0.97 in theory)
    assert small.power < 0.8 <= large.power and not small.reaches_target and large.reaches_target
    assert (table["smallest_size"] == 40).all()
    assert large.power_low <= large.power <= large.power_high
    assert (study / "plots" / "power_curve.png").stat().st_size > 10_000
    assert (
        f"power: size_lmm armtreated: levels.hospital.n = 40 reaches power 0.8 (power {large.power:.3f}" in proc.stderr
    )


def test_every_design_element_is_recovered(recovery_table):
    t = recovery_table
    expected = {
        (pd.NA, "armtreated"): 2.0,
        (pd.NA, "time:armtreated"): -0.5,
        (pd.NA, "age"): 1.0,
        (pd.NA, "smoker"): -1.0,
        (pd.NA, "time"): 0.5,
        ("hospital", "sd__(Intercept)"): 1.0,
        ("patient", "sd__(Intercept)"): 1.5,
        ("patient", "sd__time"): 0.5,
        ("patient", "cor__(Intercept).time"): 0.4,
        ("rater", "sd__(Intercept)"): 0.8,
        ("Residual", "sd__Observation"): 1.0,
    }
    t = t.reset_index()
    t["group"] = t["group"].fillna("")
    t = t.set_index(["group", "term"])
    for (group, term), value in expected.items():
        row = t.loc[("" if group is pd.NA else group, term)]
        assert row["true_value"] == value, (group, term)
        assert row["n_estimated"] >= N - 2, (group, term)
        # within 4 Monte-Carlo SEs of the truth (small-sample SD bias is well inside that here)
        assert abs(row["mean_estimate"] - value) < 4 * row["bias_mcse"], (group, term, row["mean_estimate"])
    assert t.loc[("", "armtreated"), "power"] > 0.5


def test_a_pilot_fit_extended_recovers_the_pilots_estimates(study_run):
    workdir, _ = study_run
    table = pd.read_csv(
        workdir / "results" / "studies" / "pilot_power" / "recovery.csv",
        keep_default_na=False,
        na_values={"mean_estimate": [""], "bias_mcse": [""]},
    )
    table = table.set_index(["group", "term"])
    for key, value in _pilot_estimates().items():
        row = table.loc[key]
        assert abs(row["true_value"] - value) < 1e-4 * abs(value), key  # the generator is the pilot fit
        assert abs(row["mean_estimate"] - value) < 4 * row["bias_mcse"], (key, row["mean_estimate"])
    # extended: 30 subjects x 12 days in every replicate
    fits = pd.concat(pd.read_csv(p) for p in (workdir / "results" / "studies" / "pilot_power").rglob("fits.csv"))
    assert (fits["nobs"] == 360).all()


def test_lrt_power_through_the_workflow(study_run):
    workdir, _ = study_run
    table = pd.read_csv(workdir / "results" / "studies" / "size_ml" / "power.csv")
    lrt = table[table["term"] == "vs size_null"]
    wald = table[table["term"] == "armtreated"]
    assert list(lrt["levels.hospital.n"]) == [6, 40] and (lrt["n_replicates"] == 40).all()
    assert lrt["power"].iloc[1] > lrt["power"].iloc[0]
    # same replicates, same effect: the two tests' power differs by a few replicates at most
    assert (abs(lrt["power"].to_numpy() - wald["power"].to_numpy()) <= 0.15).all()
