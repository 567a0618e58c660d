"""glmm_steps.pilot: a study design from a pilot fit. The config check fits nothing and
refuses in one line; the pilot_design step's design holds the pilot's estimates (lme4's,
from the committed R fixtures); a batch applies overrides, extension and sweep to it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REFERENCE

from glmm_steps import cli, pilot
from glmm_steps.config import check_config
from glmm_steps.errors import ConfigError, GlmmError

SLEEP = {"path": str(REFERENCE / "data" / "sleepstudy.csv")}
ORTHO = {"path": str(REFERENCE / "data" / "Orthodont.csv")}
SLEEP_PILOT = {"dataset": "sleep", "formula": "Reaction ~ Days + (Days | Subject)"}
ORTHO_PILOT = {"dataset": "ortho", "formula": "distance ~ age + Sex + (age | Subject)"}


def _config(simulate: dict, pilot_entry: dict = SLEEP_PILOT, study_formula: str | None = None) -> dict:
    return {
        "datasets": {
            "sleep": SLEEP,
            "ortho": ORTHO,
            "power": {"replicates": 4, "base_seed": 1, "simulate": simulate},
        },
        "models": {
            "pilot": pilot_entry,
            "power_lmm": {"dataset": "power", "formula": study_formula or pilot_entry["formula"]},
        },
    }


@pytest.fixture
def no_fitting(monkeypatch):
    """Every fit, through the fit step or an engine, fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("fitted while checking the config")

    monkeypatch.setattr("glmm_steps.fit.fit_file", refuse)
    monkeypatch.setattr("glmm_steps.fit.get_engine", refuse)


def test_checking_a_pilot_config_fits_nothing(no_fitting, tmp_path, capsys):
    simulate = {"from_model": "pilot", "fixed_effects": {"Days": 5}, "extend": {"Subject": 30}}
    plan = check_config(_config(simulate))
    made = plan.config["datasets"]["power"]["simulate"]
    # the pilot's structure, extended, with the override: what the sweep and models are checked on
    assert made["levels"] == [{"name": "Subject", "n": 30}] and made["repeated"]["values"] == list(range(10))
    assert made["outcomes"]["Reaction"]["coefficients"] == {"Days": 5.0}
    assert plan.pilot_of("power_lmm") == simulate and plan.pilot_of("pilot") is None
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_config(simulate)))
    assert cli.main(["check", str(path)]) == 0
    assert "config ok" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("simulate", "entry", "message"),
    [
        ({"from_model": "power_lmm"}, SLEEP_PILOT, "'power_lmm' is not fitted to a data file"),
        ({"from_model": "pilot", "fixed_effects": {"Day": 1}}, SLEEP_PILOT, "fixed_effects.Day: not a fixed effect"),
        ({"from_model": "pilot", "extend": {"Reaction": 3}}, SLEEP_PILOT, "extend.Reaction: not a grouping factor"),
        ({"from_model": "pilot"}, {**SLEEP_PILOT, "formula": "Reaction ~ log1p(Days) + (1 | Subject)"}, "log1p"),
        ({"from_model": "pilot"}, {**ORTHO_PILOT, "formula": "distance ~ age * Sex + (1 | Subject)"}, "age:Sex"),
        (
            {"from_model": "pilot"},
            {**SLEEP_PILOT, "formula": "Reaction ~ Days + (0 + Days | Subject)"},
            "not supported",
        ),
        ({"from_model": "pilot"}, {**SLEEP_PILOT, "family": "gamma"}, "a gamma pilot is not supported"),
        ({"from_model": "pilot"}, {**ORTHO_PILOT, "formula": "distance ~ Sex + (1 | Subject)"}, "repeated covariate"),
        ({"from_model": "pilot", "fixed_effects": {"SexFemale": 1}}, ORTHO_PILOT, "SexFemale: not a fixed effect"),
    ],
)
def test_what_can_be_known_without_a_fit_is_refused_in_one_line(no_fitting, simulate, entry, message):
    with pytest.raises((ConfigError, GlmmError)) as info:
        check_config(_config(simulate, entry))
    assert message in str(info.value) and "\n" not in str(info.value)


def _fixtures() -> dict[tuple[str, str, str], float]:
    ref = pd.read_csv(REFERENCE / "pilot_fixtures.csv", keep_default_na=False)
    return {(q, g, t): float(v) for q, g, t, v in zip(ref["quantity"], ref["group"], ref["term"], ref["value"])}


def test_a_cluster_level_factor_becomes_arms_with_lme4s_estimates(tmp_path):
    """Orthodont's Sex (per Subject) as arms: labels its levels, ratio its 11 girls to 16
    boys, effect lme4's SexMale; the rest lme4's fit too."""
    ref = _fixtures()
    out = tmp_path / "design.json"
    design = pilot.design_to_file(ORTHO["path"], "pilot", {**ORTHO_PILOT, "family": "gaussian"}, [], False, str(out))
    assert pilot.read_design(out) == design
    assert design["arms"] == {"name": "Sex", "level": "Subject", "labels": ["Female", "Male"], "ratio": [11, 16]}
    assert [ref[("units", "Subject", s)] for s in ("Female", "Male")] == [11, 16]
    assert design["repeated"] == {"name": "age", "values": [8, 10, 12, 14]}
    o = design["outcomes"]["distance"]
    got = {
        ("fixef", "", "(Intercept)"): o["intercept"],
        ("fixef", "", "age"): o["coefficients"]["age"],
        ("fixef", "", "SexMale"): o["arm_effects"]["Male"],
        ("sd", "Subject", "(Intercept)"): o["random_sd"]["Subject"],
        ("sd", "Subject", "age"): o["random_slopes"]["Subject"]["sd"],
        ("cor", "Subject", "(Intercept).age"): o["random_slopes"]["Subject"]["cor"],
        ("sd", "Residual", "(Intercept)"): o["residual_sd"],
    }
    for key, value in got.items():
        assert value == pytest.approx(ref[key], rel=1e-4, abs=1e-6), key
    # a batch's design point: the file, the override by the pilot's own name, the extension, the sweep
    point = pilot.resolve(
        {
            "pilot": {"from_model": "pilot", "fixed_effects": {"SexMale": 1.0}, "extend": {"Subject": 40}},
            "values": {"levels.Subject.n": 60},
        },
        [str(out)],
        "datasets.power.simulate",
    )
    assert point["outcomes"]["distance"]["arm_effects"] == {"Male": 1.0} and point["levels"][0]["n"] == 60
    assert design["levels"][0]["n"] == 27  # the file itself is untouched


def test_a_study_of_a_factor_pilot_is_checked_as_arms(no_fitting):
    plan = check_config(_config({"from_model": "pilot"}, ORTHO_PILOT))
    assert plan.config["datasets"]["power"]["simulate"]["arms"]["labels"] == ["Female", "Male"]


def test_unit_and_row_covariates_take_the_pilots_mean_sd_and_proportion(tmp_path):
    """sleepstudy with each subject's day-0 reaction time (a subject-level number), whether
    it is above the median (subject-level 0/1), and the previous day's reaction (per row)."""
    data = pd.read_csv(SLEEP["path"])
    base = data[data["Days"] == 0].set_index("Subject")["Reaction"]
    data["baseline"] = data["Subject"].map(base)
    data["slow"] = (data["baseline"] > base.median()).astype(int)
    data["noise"] = np.random.default_rng(1).normal(size=len(data))
    path = tmp_path / "sleep.csv"
    data.to_csv(path, index=False)
    entry = {"dataset": "d", "formula": "Reaction ~ noise + baseline + slow + Days + (1 | Subject)"}
    design = pilot.fit_design(str(path), "pilot", {**entry, "family": "gaussian"})
    covariates = design["covariates"]
    assert covariates["baseline"] == {
        "level": "Subject",
        "distribution": "normal",
        "mean": pytest.approx(base.mean()),
        "sd": pytest.approx(base.std()),
    }
    assert covariates["slow"] == {
        "level": "Subject",
        "distribution": "binary",
        "p": pytest.approx((base > base.median()).mean()),
    }
    assert covariates["noise"]["level"] == "Days" and covariates["noise"]["sd"] == pytest.approx(data["noise"].std())
    assert set(design["outcomes"]["Reaction"]["coefficients"]) == {"Days", "baseline", "slow", "noise"}
    config = _config({"from_model": "pilot"}, entry)
    config["datasets"]["d"] = {"path": str(path)}
    plan = check_config(config)
    assert set(plan.config["datasets"]["power"]["simulate"]["covariates"]) == {"baseline", "slow", "noise"}


def test_a_pilot_fit_that_fails_is_one_line(monkeypatch):
    from glmm_steps import fit

    def failed(path, spec, **kwargs):
        return fit._failed(spec, "ValueError: every optimizer failed")

    monkeypatch.setattr("glmm_steps.fit.fit_file", failed)
    with pytest.raises(GlmmError) as info:
        pilot.fit_design(SLEEP["path"], "pilot", {**SLEEP_PILOT, "family": "gaussian"})
    assert str(info.value) == (
        f"the pilot fit of 'pilot' to {SLEEP['path']} failed: ValueError: every optimizer failed"
    )


def test_a_design_file_that_is_not_one_is_refused(tmp_path):
    bad = tmp_path / "design.json"
    bad.write_text('{"levels": []}')
    with pytest.raises(GlmmError, match="not a pilot design"):
        pilot.read_design(bad)


def test_a_binomial_pilot_with_nested_factors_has_lme4s_estimates():
    """The reference study's 0/1 hypertension, hospitals then patients: the nesting and
    units from the data, the estimates lme4's (Laplace, tolPwrss 1e-10)."""
    entry = {
        "dataset": "bp",
        "formula": "hypertension ~ time + (1 | patient_id) + (1 | hospital_id)",
        "family": "binomial",
    }
    design = pilot.fit_design(str(REFERENCE / "data" / "bp_study_seed123.csv"), "pilot", entry)
    assert design["levels"] == [{"name": "hospital_id", "n": 10}, {"name": "patient_id", "n": 10}]
    assert design["repeated"] == {"name": "time", "values": [1, 2, 3, 4, 5]}
    ref = pd.read_csv(REFERENCE / "lme4_fixtures.csv", keep_default_na=False)
    ref = ref[ref["case"] == "bp_hypertension_laplace_tolpwrss"]
    value = {(q, g, t): float(v) for q, g, t, v in zip(ref["quantity"], ref["group"], ref["term"], ref["value"])}
    o = design["outcomes"]["hypertension"]
    assert o["family"] == "binomial" and "residual_sd" not in o
    assert o["intercept"] == pytest.approx(value[("fixef", "", "(Intercept)")], rel=1e-4, abs=1e-6)
    assert o["coefficients"]["time"] == pytest.approx(value[("fixef", "", "time")], rel=1e-4, abs=1e-6)
    for g in ("hospital_id", "patient_id"):
        assert o["random_sd"][g] ** 2 == pytest.approx(value[("variance", g, "(Intercept)")], rel=1e-3, abs=1e-6), g


def test_a_slope_at_each_level_is_part_of_the_design(no_fitting):
    entry = {
        "dataset": "bp",
        "formula": "bp ~ time + (1 + time | hospital_id) + (1 + time | patient_id)",
    }
    config = _config({"from_model": "pilot"}, entry)
    config["datasets"]["bp"] = {"path": str(REFERENCE / "data" / "bp_study_seed123.csv")}
    made = check_config(config).config["datasets"]["power"]["simulate"]
    slopes = made["outcomes"]["bp"]["random_slopes"]
    assert {g: s["term"] for g, s in slopes.items()} == {"hospital_id": "time", "patient_id": "time"}
