"""Answers beyond the estimates (issue 15): predictions for new rows, marginal means and
contrasts, ICC and Nakagawa's R², against R (tests/reference/answers_reference.R:
lme4 1.1-31, emmeans 1.8.4-1 with lmerTest's Satterthwaite df and pbkrtest's
Kenward-Roger df, performance 0.10.2),
a simulation of the prediction intervals' coverage, and the config checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import REFERENCE

from glmm_steps import answers, predict
from glmm_steps.config import check_config
from glmm_steps.engines.base import ModelSpec
from glmm_steps.errors import ConfigError
from glmm_steps.fit import fit_model
from glmm_steps.formula import parse


def _spec(name, dataset, formula, **keys):
    """A ModelSpec as the config builds it: R's default tests (Satterthwaite for a
    gaussian mixedlm model), which the marginal means' df follow."""
    return ModelSpec.from_config(name, {"dataset": dataset, "formula": formula, **keys})


DATA = REFERENCE / "data"


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(REFERENCE / name)


@pytest.fixture(scope="module")
def sleep_fit():
    frame = pd.read_csv(DATA / "sleepstudy.csv")
    spec = _spec("sleep", "d", "Reaction ~ Days + (Days | Subject)")
    return fit_model(frame, spec, answers={})


@pytest.fixture(scope="module")
def contra_fit():
    frame = pd.read_csv(DATA / "Contraception.csv")
    spec = _spec("contra", "d", "use01 ~ age + urban + (1 | district)", family="binomial")
    return fit_model(frame, spec, answers={"emmeans": {"specs": ["urban"], "adjust": "none"}})


# ---- predictions ------------------------------------------------------------------------


@pytest.mark.parametrize("case, fit_name", [("sleep_slopes", "sleep_fit"), ("contra", "contra_fit")])
def test_predictions_on_new_rows_match_r(case, fit_name, request):
    result = request.getfixturevalue(fit_name)
    ref = _read("answers_predict.csv").query("case == @case")
    rows = pd.read_csv(DATA / ("sleepstudy_new.csv" if case == "sleep_slopes" else "Contraception_new.csv"))
    formula = parse(result.spec.formula)
    cond = predict.predict_new(result, formula, rows, {"re_form": "conditional", "interval": "none"})
    pop = predict.predict_new(result, formula, rows, {"re_form": "population", "interval": "confidence"})
    link = "predicted_link" if result.spec.family != "gaussian" else "predicted"
    # lme4 and the engine agree on the estimates to about 1e-7 (LMM) and 1e-5 (GLMM)
    rtol = 1e-6 if case == "sleep_slopes" else 1e-4
    np.testing.assert_allclose(cond[link], ref["conditional_link"], rtol=rtol)
    np.testing.assert_allclose(pop[link], ref["population_link"], rtol=rtol)
    se = pop["std_error_link"] if result.spec.family != "gaussian" else pop["std_error"]
    np.testing.assert_allclose(se, ref["population_se_link"], rtol=1e-4)
    # unseen levels get the population prediction, and are named
    new = cond["new_levels"] != ""
    assert new.any() and (~new).any()
    np.testing.assert_allclose(cond.loc[new, link], pop.loc[new, link], rtol=1e-12)
    if result.spec.family == "binomial":
        np.testing.assert_allclose(pop["predicted"], 1 / (1 + np.exp(-pop["predicted_link"])), rtol=1e-12)
        assert (pop["conf_low"] < pop["predicted"]).all() and (pop["predicted"] < pop["conf_high"]).all()


@pytest.mark.parametrize("engine", ["mixedlm", "statsmodels"])
def test_conditional_covariances_of_a_levels_effects_match_lme4(engine, sleep_fit):
    """ranef(condVar = TRUE)'s postVar for sleepstudy's correlated slopes: the
    variances (cond_sd^2) and the intercept-slope covariance of every subject."""
    if engine != "mixedlm":
        spec = _spec("sleep", "d", "Reaction ~ Days + (Days | Subject)", engine=engine)
        sleep_fit = fit_model(pd.read_csv(DATA / "sleepstudy.csv"), spec, answers={})
    ref = _read("answers_condvar.csv").assign(level=lambda d: d["level"].astype(str)).set_index("level")
    ranef = sleep_fit.ranef.assign(level=lambda d: d["level"].astype(str))
    sd = ranef.pivot(index="level", columns="term", values="cond_sd").loc[ref.index]
    np.testing.assert_allclose(sd["(Intercept)"] ** 2, ref["var_intercept"], rtol=1e-4)
    np.testing.assert_allclose(sd["Days"] ** 2, ref["var_days"], rtol=1e-4)
    cov = sleep_fit.ranef_cov.assign(level=lambda d: d["level"].astype(str)).set_index("level").loc[ref.index]
    assert set(zip(cov["term_a"], cov["term_b"])) == {("(Intercept)", "Days")}
    np.testing.assert_allclose(cov["covariance"], ref["cov_intercept_days"], rtol=1e-4)


def test_prediction_interval_of_a_seen_level_carries_the_intercept_slope_covariance(sleep_fit):
    """x'Vx + z' postVar z + sigma^2 with lme4's postVar: without the (negative)
    covariance the interval at day 9 would be wider than R's numbers give."""
    ref = _read("answers_condvar.csv").assign(level=lambda d: d["level"].astype(str)).set_index("level").loc["308"]
    rows = pd.DataFrame({"Subject": [308, 308], "Days": [0.0, 9.0]})
    got = predict.predict_new(sleep_fit, parse(sleep_fit.spec.formula), rows, {"interval": "prediction"})
    X = np.array([[1.0, 0.0], [1.0, 9.0]])
    post = np.array([[ref["var_intercept"], ref["cov_intercept_days"]], [ref["cov_intercept_days"], ref["var_days"]]])
    sigma2 = predict.residual_variance(sleep_fit)
    want = np.sqrt(np.einsum("ij,jk,ik->i", X, sleep_fit.vcov, X) + np.einsum("ij,jk,ik->i", X, post, X) + sigma2)
    np.testing.assert_allclose(got["std_error"], want, rtol=1e-4)
    without = np.sqrt(want[1] ** 2 - 2 * 9.0 * ref["cov_intercept_days"])
    assert without / want[1] - 1 > 1e-3


def test_prediction_interval_is_wider_and_includes_the_residual(sleep_fit):
    rows = pd.read_csv(DATA / "sleepstudy_new.csv")
    formula = parse(sleep_fit.spec.formula)
    conf = predict.predict_new(sleep_fit, formula, rows, {"interval": "confidence"})
    pred = predict.predict_new(sleep_fit, formula, rows, {"interval": "prediction"})
    sigma2 = predict.residual_variance(sleep_fit)
    assert (pred["std_error"] ** 2 >= conf["std_error"] ** 2 + sigma2 - 1e-9).all()
    # an unseen subject's interval carries the whole random-effect variance, a seen one less
    assert pred.loc[3, "std_error"] > pred.loc[0, "std_error"]


def _coverage(result, rows: pd.DataFrame, draws: np.ndarray, spec: dict) -> float:
    table = predict.predict_new(result, parse(result.spec.formula), rows, spec)
    lo, hi = table["conf_low"].to_numpy(), table["conf_high"].to_numpy()
    return float(np.mean((draws >= lo[:, None]) & (draws <= hi[:, None])))


@pytest.mark.slow
def test_prediction_intervals_cover_new_data_drawn_from_the_fitted_model(bp_data):
    """New observations drawn from the fitted model (its estimates taken as the truth)
    fall inside the 95% prediction interval at 0.95, within Monte-Carlo error: for
    patients in new hospitals (population) and for seen patients (conditional)."""
    spec = _spec("bp", "d", "bp ~ time + (1 | hospital_id) + (1 | patient_id)")
    result = fit_model(bp_data, spec, answers={})
    rng = np.random.default_rng(20261201)
    vc = result.varcorr.set_index("group")["variance"]
    beta = result.fixef["estimate"].to_numpy()
    n_draws = 400
    # 10 new rows (new hospitals and patients) at visits 1..10, 400 draws each: 4000 in all
    new = pd.DataFrame({"time": np.arange(1, 11, dtype=float), "hospital_id": 900, "patient_id": 9000})
    mean = beta[0] + beta[1] * new["time"].to_numpy()
    sd = np.sqrt(vc["hospital_id"] + vc["patient_id"] + vc["Residual"])
    draws = mean[:, None] + rng.normal(0, sd, size=(len(new), n_draws))
    mc = 4 * np.sqrt(0.95 * 0.05 / draws.size)
    rate = _coverage(result, new, draws, {"re_form": "population", "interval": "prediction"})
    assert abs(rate - 0.95) < mc + 0.005, rate  # + the fixed effects' share of the interval
    # seen patients: their modes plus their conditional variance, plus the residual
    seen = bp_data.drop_duplicates("patient_id").head(10)[["hospital_id", "patient_id"]].assign(time=3.0)
    re = result.ranef
    b, sd_b = 0.0, 0.0
    for g in ("hospital_id", "patient_id"):
        part = re[re["group"] == g].set_index("level")
        keys = seen[g].astype(str)
        b = b + part.loc[keys, "estimate"].to_numpy()
        sd_b = sd_b + part.loc[keys, "cond_sd"].to_numpy() ** 2
    mean = beta[0] + beta[1] * 3.0 + b
    draws = mean[:, None] + rng.normal(0, 1, size=(10, n_draws)) * np.sqrt(sd_b + vc["Residual"])[:, None]
    rate = _coverage(result, seen.reset_index(drop=True), draws, {"re_form": "conditional", "interval": "prediction"})
    assert abs(rate - 0.95) < mc + 0.005, rate
    # and the interval without the residual variance would miss badly: the test can fail
    narrow = predict.predict_new(result, parse(spec.formula), new, {"re_form": "population", "interval": "confidence"})
    assert (
        np.mean(
            (draws >= narrow["conf_low"].to_numpy()[:10, None]) & (draws <= narrow["conf_high"].to_numpy()[:10, None])
        )
        < 0.5
    )


# ---- marginal means and contrasts -------------------------------------------------------

EMMEANS_CASES = {
    "cake_factorial": ("cake.csv", "angle ~ recipe * factor(temp) + (1 | recipe:replicate)", "gaussian", [], {}),
    "cake_covariate": ("cake.csv", "angle ~ recipe + temp + (1 | recipe:replicate)", "gaussian", [], {}),
    "cake_covariate_at": (
        "cake.csv",
        "angle ~ recipe + temp + (1 | recipe:replicate)",
        "gaussian",
        [],
        {"temp": [215]},
    ),
    "cbpp_response": ("cbpp.csv", "cbind(incidence, healthy) ~ period + (1 | herd)", "binomial", ["period"], {}),
    "cbpp_rate_offset": ("cbpp.csv", "incidence ~ period + offset(log(size)) + (1 | herd)", "poisson", ["period"], {}),
}


@pytest.fixture(scope="module")
def emmeans_fits():
    out = {}
    for case, (data, formula, family, factors, at) in EMMEANS_CASES.items():
        frame = pd.read_csv(DATA / data)
        spec = _spec(case, "d", formula, family=family)
        result = fit_model(frame, spec, factors=factors, answers={})
        out[case] = (result, factors, at)
    return out


# every (case, adjustment) the R script wrote pairs for
PAIR_CASES = sorted(
    {
        (c, a)
        for c, a in pd.read_csv(REFERENCE / "answers_contrasts.csv")[["case", "adjust"]].itertuples(index=False)
        if c in EMMEANS_CASES
    }
)


@pytest.mark.parametrize("case, adjust", PAIR_CASES)
def test_emmeans_and_pairs_match_r(case, adjust, emmeans_fits):
    result, factors, at = emmeans_fits[case]
    spec = "period" if case.startswith("cbpp") else "recipe"
    ref_c = _read("answers_contrasts.csv").query("case == @case and adjust == @adjust")
    emm, con = answers.emmeans_mod.marginal_means(
        result, parse(result.spec.formula), {"specs": [spec], "at": at, "adjust": adjust}, factors
    )
    ref = _read("answers_emmeans.csv").query("case == @case")
    assert list(emm[spec].astype(str)) == list(ref["level"].astype(str))
    rtol = 1e-4
    for col in ("estimate", "std_error", "conf_low", "conf_high"):
        np.testing.assert_allclose(emm[col], ref[col], rtol=rtol, err_msg=col)
    np.testing.assert_allclose(emm["df"], ref["df"].astype(float), rtol=rtol)
    assert list(con["contrast"]) == list(ref_c["contrast"])
    for col in ("estimate", "std_error", "conf_low", "conf_high"):
        np.testing.assert_allclose(con[col], ref_c[col], rtol=rtol, err_msg=col)
    np.testing.assert_allclose(con["df"], ref_c["df"].astype(float), rtol=rtol)
    np.testing.assert_allclose(con["p_value"], ref_c["p_value"], rtol=1e-3, atol=1e-6)


def test_binomial_emmeans_on_the_response_scale(contra_fit):
    ref = _read("answers_emmeans.csv").query("case == 'contra_response'")
    ref_c = _read("answers_contrasts.csv").query("case == 'contra_response'")
    emm, con = contra_fit.emmeans, contra_fit.contrasts
    assert (emm["scale"] == "response").all() and (con["scale"] == "odds ratio").all()
    for col in ("estimate", "std_error", "conf_low", "conf_high"):
        np.testing.assert_allclose(emm[col], ref[col], rtol=1e-4, err_msg=col)
        np.testing.assert_allclose(con[col], ref_c[col], rtol=1e-4, err_msg=col)
    assert np.isinf(emm["df"]).all()


def test_mixedlm_residual_df_is_not_used(emmeans_fits):
    """mixedlm's own emmeans takes the residual df (266 on cake); emmeans' Satterthwaite
    df is 42, and ours follow it."""
    result, factors, _ = emmeans_fits["cake_covariate"]
    emm, _ = answers.emmeans_mod.marginal_means(result, parse(result.spec.formula), {"specs": ["recipe"]}, factors)
    assert np.all(np.abs(emm["df"] - 42.0) < 1e-3)


# Kenward-Roger fits (`inference: kenward_roger`): emmeans' lmer.df = "kenward-roger"
# takes pbkrtest's adjusted covariance for the SEs and Lb_ddf for the df.
KR_CASES = {
    "cake_factorial_kr": ("cake.csv", "angle ~ recipe * factor(temp) + (1 | recipe:replicate)", "recipe", {}),
    "cake_covariate_at_kr": ("cake.csv", "angle ~ recipe + temp + (1 | recipe:replicate)", "recipe", {"temp": [215]}),
    "sleep_days_kr": ("sleepstudy.csv", "Reaction ~ Days + (Days | Subject)", "Days", {"Days": [0, 4.5, 9]}),
    "exam12_kr": ("Exam.csv", "normexam ~ standLRT + sex + (1 | school)", "sex", {}),
}


def _kr_fit(case):
    data, formula, _, _ = KR_CASES[case]
    frame = pd.read_csv(DATA / data)
    if case == "exam12_kr":
        frame = frame[frame["school"].between(1, 12)]
    return fit_model(frame, _spec(case, "d", formula, inference="kenward_roger"), answers={})


@pytest.fixture(scope="module")
def kr_fits():
    return {case: _kr_fit(case) for case in KR_CASES}


@pytest.mark.parametrize("case", list(KR_CASES))
def test_kenward_roger_emmeans_and_pairs_match_r(case, kr_fits):
    result = kr_fits[case]
    _, _, spec, at = KR_CASES[case]
    ref = _read("answers_emmeans.csv").query("case == @case")
    ref_c = _read("answers_contrasts.csv").query("case == @case")
    for adjust in ref_c["adjust"].unique():
        emm, con = answers.emmeans_mod.marginal_means(
            result, parse(result.spec.formula), {"specs": [spec], "at": at, "adjust": adjust}
        )
        assert [float(v) if spec == "Days" else v for v in emm[spec]] == (
            list(ref["level"].astype(float)) if spec == "Days" else list(ref["level"].astype(str))
        )
        for col in ("estimate", "std_error", "df", "conf_low", "conf_high"):
            np.testing.assert_allclose(emm[col], ref[col].astype(float), rtol=1e-4, err_msg=col)
        want = ref_c.query("adjust == @adjust")
        for col in ("estimate", "std_error", "df", "conf_low", "conf_high"):
            np.testing.assert_allclose(con[col], want[col].astype(float), rtol=1e-4, err_msg=f"{adjust} {col}")
        np.testing.assert_allclose(con["p_value"], want["p_value"], rtol=1e-3, atol=1e-6)


def test_kenward_roger_adjusted_standard_errors_are_used(kr_fits):
    """On the unbalanced schools the adjusted SEs are 3e-3 above the unadjusted ones: a
    mean computed from ``vcov`` (or Satterthwaite's df) would fail the R comparison."""
    result = kr_fits["exam12_kr"]
    ref = _read("answers_emmeans.csv").query("case == 'exam12_kr'")
    emm, _ = answers.emmeans_mod.marginal_means(result, parse(result.spec.formula), {"specs": ["sex"]})
    L = np.array([[1.0, result.frame["standLRT"].mean(), 0.0], [1.0, result.frame["standLRT"].mean(), 1.0]])
    unadjusted = np.sqrt(np.einsum("ij,jk,ik->i", L, result.vcov, L))
    assert np.all(np.abs(unadjusted / ref["std_error"].to_numpy() - 1) > 1e-3)
    np.testing.assert_allclose(emm["std_error"], ref["std_error"], rtol=1e-5)
    assert result.vcov_jacobian is None and not any("Satterthwaite" in n for n in result.notes)


def test_kenward_roger_predictions_equal_the_marginal_means_at_the_same_rows(kr_fits):
    """A population prediction with a confidence interval at (recipe, temp = 215) is
    emmeans' mean at that point: the same adjusted SE and Kenward-Roger df as R's."""
    result = kr_fits["cake_covariate_at_kr"]
    ref = _read("answers_emmeans.csv").query("case == 'cake_covariate_at_kr'")
    rows = pd.DataFrame({"recipe": ["A", "B", "C"], "temp": [215] * 3, "replicate": [1] * 3})
    got = predict.predict_new(
        result, parse(result.spec.formula), rows, {"re_form": "population", "interval": "confidence"}
    )
    for ours, theirs in (("predicted", "estimate"), ("std_error", "std_error"), ("df", "df"), ("conf_low", "conf_low")):
        np.testing.assert_allclose(got[ours], ref[theirs].astype(float), rtol=1e-4, err_msg=ours)


# ---- ICC and R² ---------------------------------------------------------------------------

R2_CASES = {
    "sleep_intercept": ("sleepstudy.csv", "Reaction ~ Days + (1 | Subject)", "gaussian", []),
    "sleep_slopes": ("sleepstudy.csv", "Reaction ~ Days + (Days | Subject)", "gaussian", []),
    "cake_covariate": ("cake.csv", "angle ~ recipe + temp + (1 | recipe:replicate)", "gaussian", []),
    "contra_logit": ("Contraception.csv", "use01 ~ age + urban + (1 | district)", "binomial", []),
    "contra_probit": ("Contraception.csv", "use01 ~ age + urban + (1 | district)", ("binomial", "probit"), []),
    "grouse_poisson": ("grouseticks.csv", "TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION)", "poisson", ["YEAR"]),
}


@pytest.mark.parametrize("case", list(R2_CASES))
def test_icc_and_r2_match_performance(case):
    data, formula, family, factors = R2_CASES[case]
    family, link = family if isinstance(family, tuple) else (family, None)
    spec = _spec(case, "d", formula, family=family, **({"link": link} if link else {}))
    result = fit_model(pd.read_csv(DATA / data), spec, factors=factors, answers={})
    ref = _read("answers_r2.csv").set_index("case").loc[case]
    got = result.variance_explained
    assert got["note"] is None
    for key in ("icc_adjusted", "icc_conditional", "r2_marginal", "r2_conditional"):
        assert got[key] == pytest.approx(ref[key], rel=1e-3), key


def test_icc_left_empty_with_a_note_where_performance_gives_none():
    frame = pd.read_csv(DATA / "sleepstudy.csv")
    slopes_only = fit_model(frame, _spec("m", "d", "Reaction ~ 1 + (Days | Subject)"), answers={})
    got = slopes_only.variance_explained
    assert got["icc_adjusted"] is None and "random slope 'Days'" in got["note"]
    # a singular fit: pure noise around the mean has no between-subject variance
    rng = np.random.default_rng(3)
    flat = frame.assign(Reaction=rng.normal(300, 30, len(frame)))
    singular = fit_model(flat, _spec("m", "d", "Reaction ~ Days + (1 | Subject)"), answers={})
    assert singular.singular
    assert singular.variance_explained["r2_marginal"] is None
    assert "singular" in singular.variance_explained["note"]


# ---- the config check -------------------------------------------------------------------


def _config(tmp_path, predict_spec=None, emmeans_spec=None):
    data = tmp_path / "cake.csv"
    data.write_text((DATA / "cake.csv").read_text())
    model = {"dataset": "cake", "formula": "angle ~ recipe + temp + (1 | recipe:replicate)"}
    if predict_spec is not None:
        model["predict"] = predict_spec
    if emmeans_spec is not None:
        model["emmeans"] = emmeans_spec
    return {"results_dir": str(tmp_path / "results"), "datasets": {"cake": {"path": str(data)}}, "models": {"m": model}}


@pytest.mark.parametrize(
    "rows, message",
    [
        ("recipe,replicate\nA,1\n", "column 'temp' is missing"),
        ("recipe,replicate,temp\nD,1,175\n", "level 'D'"),
        ("recipe,replicate,temp\nA,1,hot\n", "temp"),
    ],
)
def test_bad_newdata_is_refused_before_any_job(tmp_path, rows, message):
    new = tmp_path / "new.csv"
    new.write_text(rows)
    with pytest.raises(ConfigError) as err:
        check_config(_config(tmp_path, {"newdata": str(new)}))
    text = str(err.value)
    assert "models.m.predict.newdata" in text and message in text and "\n" not in text


def test_predict_and_emmeans_keys_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of newdata"):
        check_config(_config(tmp_path, {}))
    with pytest.raises(ConfigError, match="models.m.emmeans.specs.0"):
        check_config(_config(tmp_path, emmeans_spec={"specs": ["oven"]}))
    plan = check_config(
        _config(
            tmp_path,
            {"grid": {"recipe": ["A", "B"], "temp": [180, 200], "replicate": [1, 99]}},
            {"specs": ["recipe"], "adjust": "holm"},
        )
    )
    assert plan.config["models"]["m"]["predict"]["interval"] == "confidence"


def test_statsmodels_engine_gives_the_same_answers(tmp_path):
    """statsmodels' MixedLM fit (asymptotic df) predicts and averages as mixedlm does."""
    frame = pd.read_csv(DATA / "cake.csv")
    entry = {
        "predict": {"grid": {"recipe": ["A", "C"], "temp": [180.0], "replicate": [1, 99]}},
        "emmeans": {"specs": ["recipe"]},
    }
    fits = {
        e: fit_model(frame, _spec("m", "d", "angle ~ recipe + temp + (1 | recipe:replicate)", engine=e), answers=entry)
        for e in ("mixedlm", "statsmodels")
    }
    a, b = fits["mixedlm"], fits["statsmodels"]
    np.testing.assert_allclose(a.predictions_new["predicted"], b.predictions_new["predicted"], rtol=1e-4)
    np.testing.assert_allclose(a.emmeans["estimate"], b.emmeans["estimate"], rtol=1e-5)
    np.testing.assert_allclose(a.emmeans["std_error"], b.emmeans["std_error"], rtol=1e-3)
    assert np.isinf(b.emmeans["df"]).all() and np.all(a.emmeans["df"] < 50)
    assert b.variance_explained["icc_adjusted"] == pytest.approx(a.variance_explained["icc_adjusted"], rel=1e-3)


# ---- plots and the workflow -------------------------------------------------------------


def test_effect_and_prediction_plots(tmp_path, emmeans_fits):
    from glmm_steps.effect_plot import plot_effects, plot_predictions

    result, factors, _ = emmeans_fits["cake_covariate"]
    table = answers.effects(result, parse(result.spec.formula), factors)
    # one curve per recipe over temp's observed range, intervals around the means
    assert list(table["level"].unique()) == ["A", "B", "C"] and (table["covariate"] == "temp").all()
    assert table["x"].min() == 175 and table["x"].max() == 225
    assert ((table["conf_low"] < table["estimate"]) & (table["estimate"] < table["conf_high"])).all()
    plot_effects(table, tmp_path / "effects.png", response="angle")
    plot_effects(table.iloc[0:0], tmp_path / "empty.png")
    rows = pd.DataFrame({"recipe": ["A", "B"], "temp": [180.0, 180.0], "replicate": [1, 99]})
    pred = predict.predict_new(result, parse(result.spec.formula), rows, {"interval": "prediction"})
    plot_predictions(pred, tmp_path / "pred.png", response="angle")
    for name in ("effects.png", "empty.png", "pred.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_workflow_writes_the_answers(tmp_path):
    import json

    import yaml
    from conftest import run_snakemake, stderr_lines

    (tmp_path / "cake.csv").write_text((DATA / "cake.csv").read_text())
    (tmp_path / "new.csv").write_text("recipe,temp,replicate\nA,200,1\nB,215,99\n")
    config = {
        "datasets": {"cake": {"path": "cake.csv"}},
        "models": {
            "cake_lmm": {
                "dataset": "cake",
                "formula": "angle ~ recipe + temp + (1 | recipe:replicate)",
                "predict": {"newdata": "new.csv", "interval": "prediction"},
                "emmeans": {"specs": ["recipe"]},
            }
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run_snakemake(tmp_path, "--configfile", str(path))
    folder = tmp_path / "results" / "models" / "cake_lmm" / "latest" / "file"
    emm = pd.read_csv(folder / "emmeans.csv")
    ref = _read("answers_emmeans.csv").query("case == 'cake_covariate'")
    np.testing.assert_allclose(emm["conf_low"], ref["conf_low"], rtol=1e-4)
    con = pd.read_csv(folder / "contrasts.csv")
    assert list(con["contrast"]) == ["A - B", "A - C", "B - C"] and (con["adjust"] == "tukey").all()
    pred = pd.read_csv(folder / "predictions_new.csv", keep_default_na=False)
    assert list(pred["new_levels"]) == ["", "recipe:replicate"]
    width = pred["conf_high"].astype(float) - pred["conf_low"].astype(float)
    assert width[1] > width[0]  # an unseen replicate carries its whole random-effect variance
    stats = json.loads((folder / "fit_stats.json").read_text())
    r2 = _read("answers_r2.csv").set_index("case").loc["cake_covariate"]
    assert stats["variance_explained"]["icc_adjusted"] == pytest.approx(r2["icc_adjusted"], rel=1e-3)
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert summary.loc[0, "r2_marginal"] == pytest.approx(r2["r2_marginal"], rel=1e-3)
    for name in ("effects.csv", "plots/effects.png", "plots/predictions_new.png"):
        assert (folder / name).is_file(), name
    # a newdata file with a recipe the fit never saw is refused before any job, in one line
    (tmp_path / "new.csv").write_text("recipe,temp,replicate\nD,200,1\n")
    proc = run_snakemake(tmp_path, "--configfile", str(path), check=False)
    assert proc.returncode != 0
    lines = stderr_lines(proc)
    assert len(lines) == 1 and "models.cake_lmm.predict.newdata" in lines[0] and "'D'" in lines[0], lines


def test_simulated_dataset_grid_must_hold_numbers(tmp_path):
    config = {
        "results_dir": str(tmp_path / "results"),
        "datasets": {
            "sim": {
                "seeds": [1],
                "simulate": {
                    "levels": [{"name": "site", "n": 3}, {"name": "subject", "n": 4}],
                    "repeated": {"name": "visit", "values": [0, 1, 2]},
                    "outcomes": {
                        "y": {
                            "family": "gaussian",
                            "intercept": 10,
                            "coefficients": {"visit": 1.0},
                            "random_sd": {"site": 1.0},
                            "residual_sd": 1.0,
                        }
                    },
                },
            }
        },
        "models": {
            "m": {
                "dataset": "sim",
                "formula": "y ~ visit + (1 | site)",
                "predict": {"grid": {"visit": ["late"], "site": [1]}},
            }
        },
    }
    with pytest.raises(ConfigError, match=r"models.m.predict.grid: column 'visit' must hold numbers"):
        check_config(config)
    config["models"]["m"]["predict"] = {"grid": {"visit": [5], "site": [1, 99]}}
    assert check_config(config).config["models"]["m"]["predict"]["re_form"] == "conditional"
    # population predictions need no grouping column; conditional ones do
    config["models"]["m"]["predict"] = {"grid": {"visit": [5]}, "re_form": "population"}
    check_config(config)
    config["models"]["m"]["predict"] = {"grid": {"visit": [5]}}
    with pytest.raises(ConfigError, match="column 'site' is missing"):
        check_config(config)


def test_job_count_includes_the_answers(tmp_path, monkeypatch):
    """The config check's job count (what it refuses huge configs by) matches
    Snakemake's own: effects and effect_plot per fit, predict_new and prediction_plot,
    emmeans."""
    import yaml
    from conftest import run_snakemake

    config = _config(
        tmp_path, {"grid": {"recipe": ["A"], "temp": [200]}, "re_form": "population"}, {"specs": ["recipe"]}
    )
    config["results_dir"] = "results"
    config["datasets"]["cake"]["path"] = "cake.csv"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = run_snakemake(tmp_path, "--configfile", str(path), "-n")
    # Snakemake's job table: on stdout, or (the rich logger of profiles/default) on
    # stderr with padded rows
    total = int(next(ln.split()[-1] for ln in (proc.stdout + proc.stderr).splitlines() if ln.split()[:1] == ["total"]))
    monkeypatch.chdir(tmp_path)
    # fit, extract, plot; effects, effect_plot; predict_new, prediction_plot; emmeans;
    # manifest; catalog, summary, report_tables (issue 18's HTML tables), all
    assert total == check_config(config).job_count == 3 + 2 + 2 + 1 + 1 + 4


@pytest.mark.parametrize(
    "formula", ["Reaction ~ poly(Days, 2) + (1 | Subject)", "Reaction ~ scale(Days) + I(Days^2) + (1 | Subject)"]
)
def test_new_rows_reuse_the_fits_transforms(formula):
    """A few new rows are coded with the fit's poly coefficients and scale centre, not
    their own: predicting fitted rows gives the fit's own fitted values."""
    frame = pd.read_csv(DATA / "sleepstudy.csv")
    result = fit_model(frame, _spec("m", "d", formula), answers={})
    rows = frame.iloc[[0, 13, 25]].drop(columns="Reaction").reset_index(drop=True)
    parsed = parse(formula)
    pop = predict.predict_new(result, parsed, rows, {"re_form": "population", "interval": "none"})
    cond = predict.predict_new(result, parsed, rows, {"re_form": "conditional", "interval": "none"})
    np.testing.assert_allclose(pop["predicted"], result.fitted_marginal[[0, 13, 25]], rtol=1e-10)
    np.testing.assert_allclose(cond["predicted"], result.fitted[[0, 13, 25]], rtol=1e-8)


def test_answers_on_a_study_model_are_refused_in_one_line(monkeypatch):
    """predict:/emmeans: apply to per-seed fits; on a study model the check says so
    (a ConfigError naming the key, not a crash)."""
    import yaml

    config = yaml.safe_load((REFERENCE.parents[1] / "config" / "config.yaml").read_text())
    config["models"]["bp_lmm_recovery"]["predict"] = {"grid": {"time": [1]}}
    monkeypatch.chdir(REFERENCE.parents[1])
    with pytest.raises(ConfigError, match=r"models\.bp_lmm_recovery\.predict.*applies to per-seed fits"):
        check_config(config)
