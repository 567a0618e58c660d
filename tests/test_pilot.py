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
from glmm_steps.provenance import sha256

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
        (
            {"from_model": "pilot"},
            {**SLEEP_PILOT, "formula": "sqrt(Reaction) ~ Days + (1 | Subject)"},
            "response sqrt(Reaction) is not supported",
        ),
        (
            {"from_model": "pilot"},
            {**SLEEP_PILOT, "formula": "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"},
            "one term per grouping factor",
        ),
        (
            {"from_model": "pilot", "sweep": {"outcomes.Reaction.coefficients.Day": [1, 2]}},
            SLEEP_PILOT,
            "coefficients.Day: not a coefficient of the pilot's model",
        ),
        (
            {"from_model": "pilot", "sweep": {"outcomes.Reaction.random_sd.Subject": [1, 2]}},
            {**SLEEP_PILOT, "formula": "Reaction ~ Days + (0 + Days | Subject)"},
            "random_sd.Subject: the pilot's model has no random intercept of 'Subject'",
        ),
        (
            {"from_model": "pilot", "covariates": {"z": {"level": "Subject", "distribution": "binary", "p": 0.5}}},
            SLEEP_PILOT,
            "simulate.covariates: does not apply with from_model",
        ),
        (
            {"from_model": "pilot", "extend": {"Days": [-1, 0, 1]}},
            {**SLEEP_PILOT, "formula": "Reaction ~ log(Days + 1) + (1 | Subject)"},
            "log(Days + 1) is not a finite number",
        ),
        ({"from_model": "pilot"}, {**SLEEP_PILOT, "family": "gamma"}, "a gamma pilot is not supported"),
        ({"from_model": "pilot"}, {**ORTHO_PILOT, "formula": "distance ~ Sex + (1 | Subject)"}, "repeated covariate"),
        ({"from_model": "pilot", "fixed_effects": {"SexFemale": 1}}, ORTHO_PILOT, "SexFemale: not a fixed effect"),
    ],
)
def test_what_can_be_known_without_a_fit_is_refused_in_one_line(no_fitting, simulate, entry, message):
    simulate = dict(simulate)
    sweep = simulate.pop("sweep", None)
    config = _config(simulate, entry)
    if sweep:
        config["datasets"]["power"]["sweep"] = sweep
    with pytest.raises((ConfigError, GlmmError)) as info:
        check_config(config)
    assert message in str(info.value) and "\n" not in str(info.value)


def _fixtures(name: str = "pilot_fixtures.csv") -> dict[tuple[str, str, str], float]:
    ref = pd.read_csv(REFERENCE / name, keep_default_na=False)
    return {(q, g, t): float(v) for q, g, t, v in zip(ref["quantity"], ref["group"], ref["term"], ref["value"])}


def _assert_estimates(outcome: dict, ref: dict) -> None:
    """The outcome's fixed effects, random terms' SDs and correlations and residual SD are
    lme4's (the fixture's fixef, sd and cor rows)."""
    got = {
        ("fixef", "", "(Intercept)"): outcome["intercept"],
        ("sd", "Residual", "(Intercept)"): outcome["residual_sd"],
    }
    got |= {("fixef", "", n): v for n, v in outcome["coefficients"].items()}
    for r in outcome["model"]["random"]:
        got |= {("sd", r["group"], t): sd for t, sd in zip(r["terms"], r["sd"])}
        got |= {("cor", r["group"], f"{r['terms'][0]}.{t}"): c for t, c in zip(r["terms"][1:], r["cor"][0][1:])}
        assert outcome["random_sd"][r["group"]] == r["sd"][0]
    assert set(got) == {k for k in ref if k[0] in ("fixef", "sd", "cor")}
    for key, value in got.items():
        assert value == pytest.approx(ref[key], rel=1e-4, abs=1e-6), key


def test_a_cluster_level_factor_becomes_arms_with_lme4s_estimates(tmp_path):
    """Orthodont's Sex (per Subject) as arms: labels its levels, ratio its 11 girls to 16
    boys, effect lme4's SexMale; the rest lme4's fit too."""
    ref = _fixtures()
    out = tmp_path / "design.json"
    design = pilot.design_to_file(ORTHO["path"], "pilot", {**ORTHO_PILOT, "family": "gaussian"}, [], False, str(out))
    assert pilot.read_design(out) == design
    fitted = design["pilot_fit"]  # what the numbers come from
    assert fitted["data_sha256"] == sha256(ORTHO["path"]) and fitted["nobs"] == 108
    assert fitted["entry"]["formula"] == ORTHO_PILOT["formula"] and fitted["packages"]["mixedlm"]
    assert fitted["converged"] and not fitted["singular"]
    assert design["arms"] == {"name": "Sex", "level": "Subject", "labels": ["Female", "Male"], "ratio": [11, 16]}
    assert [ref[("units", "Subject", s)] for s in ("Female", "Male")] == [11, 16]
    assert design["repeated"] == {"name": "age", "values": [8, 10, 12, 14]}
    _assert_estimates(design["outcomes"]["distance"], ref)
    # a batch's design point: the file, the override by the pilot's own name, the extension, the sweep
    point = pilot.resolve(
        {
            "pilot": {"from_model": "pilot", "fixed_effects": {"SexMale": 1.0}, "extend": {"Subject": 40}},
            "values": {"levels.Subject.n": 60},
        },
        [str(out)],
        "datasets.power.simulate",
    )
    assert point["outcomes"]["distance"]["coefficients"]["SexMale"] == 1.0 and point["levels"][0]["n"] == 60
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
    terms = {r["group"]: r["terms"] for r in made["outcomes"]["bp"]["model"]["random"]}
    assert terms == {"hospital_id": ["(Intercept)", "time"], "patient_id": ["(Intercept)", "time"]}


ORTHO_TRANSFORMS = "distance ~ poly(age, 2) * Sex + (1 + scale(age) | Subject)"


def test_a_pilots_transforms_and_levels_are_reused_as_r_predicts(tmp_path):
    """Orthodont with an orthogonal quadratic by Sex and a slope on scale(age): the design
    holds lme4's estimates, and its generator's fixed part on new rows, ages up to 16
    (beyond the pilot's 14), is lme4's predict(re.form = NA): the pilot's poly basis,
    scale() centre and SD, and factor levels reapplied, not recomputed."""
    from glmm_steps import outcome_model

    ref = _fixtures("pilot_transforms.csv")
    design = pilot.fit_design(ORTHO["path"], "pilot", {"dataset": "ortho", "formula": ORTHO_TRANSFORMS})
    o = design["outcomes"]["distance"]
    _assert_estimates(o, ref)
    assert o["model"]["state"]["scale"]["scale(age)"] == {"center": 11.0, "scale": pytest.approx(2.2465, abs=1e-4)}
    model = outcome_model.from_config(o["model"])
    rows = pd.DataFrame(
        [(age, sex) for sex in ("Female", "Male") for age in (8, 10, 12, 14, 16)], columns=["age", "Sex"]
    )
    m = outcome_model.matrices(model, rows)
    eta = m.X @ outcome_model.coefficient_vector(m.fixed_names, o["intercept"], o["coefficients"])
    expected = [ref[("predict", sex, str(age))] for age, sex in zip(rows["age"], rows["Sex"])]
    np.testing.assert_allclose(eta, expected, rtol=1e-5)


def test_a_studys_own_transforms_get_the_true_values_that_reproduce_the_pilots():
    """Extended to ages 8..16, a study's poly(age, 2) and scale(age) are computed from the
    extended rows: the true values in the recovery are the coefficients, SDs and
    correlation of those columns that reproduce the pilot's fixed and random parts
    (R: lm() of predict() on the new basis, and A Sigma A')."""
    from glmm_steps import batch
    from glmm_steps.engines.base import ModelSpec
    from glmm_steps.simulate import design_from_config

    ref = _fixtures("pilot_transforms.csv")
    fitted = pilot.fit_design(ORTHO["path"], "pilot", {"dataset": "ortho", "formula": ORTHO_TRANSFORMS})
    extended = pilot.apply(fitted, {"extend": {"Subject": 54, "age": [8, 10, 12, 14, 16]}}, "test")
    design = design_from_config(extended)
    spec = ModelSpec.from_config("study", {"dataset": "d", "formula": ORTHO_TRANSFORMS})
    truth = batch.study_truth(design, spec, ["Subject"])
    assert set(truth.fixed) == {t for q, _, t in ref if q == "study_fixef"}
    for term, value in truth.fixed.items():
        assert value == pytest.approx(ref[("study_fixef", "", term)], rel=1e-4), term
    subject = truth.random["Subject"]
    assert subject["terms"] == ["(Intercept)", "scale(age)"]
    for term, sd in zip(subject["terms"], subject["sd"]):
        assert sd == pytest.approx(ref[("study_sd", "Subject", term)], rel=1e-4), term
    assert subject["cor"][0][1] == pytest.approx(ref[("study_cor", "Subject", "(Intercept).scale(age)")], rel=1e-4)
    # the pilot's own rows: the study codes them as the pilot did, so its truth is by name
    same = batch.study_truth(design_from_config(fitted), spec, ["Subject"])
    assert same.fixed is None and same.random == {}


def test_a_log_response_is_simulated_on_its_scale_and_written_back():
    """A gaussian pilot of log(Reaction): the outcome column is exp() of draws whose
    mean is the pilot's linear predictor on the log scale."""
    from glmm_steps.simulate import design_from_config, simulate

    entry = {"dataset": "sleep", "formula": "log(Reaction) ~ Days + (Days | Subject)"}
    design = pilot.fit_design(SLEEP["path"], "pilot", entry)
    o = design["outcomes"]["Reaction"]
    assert o["model"]["response"] == "log" and 0.01 < o["coefficients"]["Days"] < 0.05
    data, truth = simulate(design_from_config(pilot.apply(design, {"extend": {"Subject": 400}}, "test")), 3)
    by_day = np.log(data["Reaction"]).groupby(data["Days"]).mean()
    slope = np.polyfit(by_day.index.to_numpy(dtype=float), by_day.to_numpy(), 1)[0]
    # 400 subjects: the slope's SE is about SD(Days slope) / 20
    assert abs(slope - o["coefficients"]["Days"]) < 4 * o["model"]["random"][0]["sd"][1] / 20
    assert truth["outcomes"]["Reaction"]["random_effects"]["Subject"]["terms"] == ["(Intercept)", "Days"]


def test_a_pilot_studys_power_is_rs_for_the_same_design():
    """The power of poly(age, 2)2:SexMale, set to 1.5 in the pilot's basis as simr's
    fixef<- sets it, with 90 subjects at ages 8..16: this pipeline's replicates (the
    pilot's model as generator, refits with Satterthwaite t tests) against 1,000
    replicates simulated in R independently (predict(newparams) for the fixed part,
    the pilot's VarCorr for the random part, lmerTest for the test), on the same rows
    (tests/reference/pilot_power_reference.R): equal within 3 Monte-Carlo SEs of
    their difference."""
    from glmm_steps import batch, study
    from glmm_steps.engines.base import ModelSpec
    from glmm_steps.simulate import design_from_config, unit_ids

    ref = {q: float(v) for q, v in pd.read_csv(REFERENCE / "pilot_power.csv").itertuples(index=False)}
    fitted = pilot.fit_design(ORTHO["path"], "pilot", {"dataset": "ortho", "formula": ORTHO_TRANSFORMS})
    point = {"fixed_effects": {"poly(age, 2)2:SexMale": 1.5}, "extend": {"Subject": 90, "age": [8, 10, 12, 14, 16]}}
    design = design_from_config(pilot.apply(fitted, point, "test"))
    rows = pd.read_csv(REFERENCE / "data" / "pilot_power_rows.csv")
    pd.testing.assert_frame_equal(unit_ids(design), rows, check_dtype=False)  # R simulated these rows
    spec = ModelSpec.from_config("m", {"dataset": "d", "formula": ORTHO_TRANSFORMS, "residuals": {"nsim": 0}})
    n = 300
    estimates, fits = batch.run_batch(design, spec, "n90", [(i, study.replicate_seed(11, i)) for i in range(n)])
    assert (fits["status"] == "ok").mean() > 0.9 and estimates["test"].eq("Satterthwaite t").any()
    p = estimates.loc[estimates["term"] == "poly(age, 2)2:SexMale", "p_value"].to_numpy()
    power = float(np.mean(p < 0.05))
    se = np.sqrt(power * (1 - power) / n + ref["mcse"] ** 2)
    print(f"power {power:.3f} (R {ref['power']:.3f}), MC SE of the difference {se:.3f}")
    assert abs(power - ref["power"]) < 3 * se, (power, ref["power"], se)
    assert 0.3 < ref["power"] < 0.7  # a power where a wrong effect size would show


def test_a_pilot_study_can_lose_rows_to_dropout(tmp_path):
    """missing: with from_model (the trialist's dropout) reaches the design, is swept
    like any key, and its replicates lose rows; the fits run in full (the rows change),
    their truth still the pilot's."""
    from glmm_steps import batch, study
    from glmm_steps.engines.base import ModelSpec
    from glmm_steps.simulate import design_from_config

    simulate = {"from_model": "pilot", "extend": {"Subject": 40}, "missing": {"dropout": 0.3}}
    config = _config(simulate)
    config["datasets"]["power"]["sweep"] = {"missing.dropout": [0.0, 0.3]}
    plan = check_config(config)
    assert plan.pilot_of("power_lmm")["missing"] == {"dropout": 0.3, "mcar": 0}
    out = tmp_path / "design.json"
    pilot.design_to_file(SLEEP["path"], "pilot", {**SLEEP_PILOT, "family": "gaussian"}, [], False, str(out))
    nobs = {}
    for name, point in plan.study_designs["power"].items():
        spec = pilot.resolve(
            {"pilot": plan.pilot_of("power_lmm"), "values": point.values}, [str(out)], "datasets.power.simulate"
        )
        design = design_from_config(spec)
        model = ModelSpec.from_config(
            "m", {"dataset": "power", "formula": SLEEP_PILOT["formula"], "residuals": {"nsim": 0}}
        )
        assert batch.refittable(design, model) == (point.values["missing.dropout"] == 0.0)
        estimates, fits = batch.run_batch(design, model, name, [(i, study.replicate_seed(2, i)) for i in range(3)])
        assert fits["status"].isin(["ok", "singular"]).all()
        days = estimates[estimates["term"] == "Days"]
        assert (days["true_value"] == spec["outcomes"]["Reaction"]["coefficients"]["Days"]).all()
        nobs[point.values["missing.dropout"]] = fits["nobs"].to_numpy()
    assert (nobs[0.0] == 40 * 10).all() and (nobs[0.3] < 40 * 10 * 0.6).all()


def test_a_covariate_that_is_not_on_a_shared_schedule_is_not_taken_as_repeated(tmp_path):
    """Irregular measurement times (sleepstudy's days plus a random part of a day: 180
    distinct values, 10 rows per subject) would give every simulated subject 180 rows:
    refused in one line when the config is checked, naming the variable."""
    data = pd.read_csv(SLEEP["path"])
    data["hours"] = data["Days"] * 24 + np.random.default_rng(3).uniform(0, 12, len(data))
    path = tmp_path / "sleep.csv"
    data.to_csv(path, index=False)
    config = _config({"from_model": "pilot"}, {"dataset": "d", "formula": "Reaction ~ hours + (1 | Subject)"})
    config["datasets"]["d"] = {"path": str(path)}
    with pytest.raises(ConfigError) as info:
        check_config(config)
    message = str(info.value)
    assert "'hours' takes 180 distinct values" in message and "10 rows" in message and "\n" not in message
