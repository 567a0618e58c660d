"""Satterthwaite and Kenward-Roger t tests, type III anova tables: glmm_steps against
lmerTest 3.1-3 and pbkrtest 0.5.2 (fixtures made by tests/reference/inference_reference.R;
R is not needed here)."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glmm_steps import anova, extract, inference, model_matrix
from glmm_steps import formula as formula_mod
from glmm_steps.engines.base import ModelSpec
from glmm_steps.errors import ConfigError
from glmm_steps.fit import fit_model

REF = Path(__file__).parent / "reference"
CASES = pd.read_csv(REF / "inference_cases.csv", keep_default_na=False).set_index("case")
FIXTURES = pd.read_csv(REF / "inference_fixtures.csv")

# The tolerances: df and F 1e-4 relative, p 1e-3 relative. A p-value far in the
# tail moves by |d log p / d t| x (relative error of t): mixedlm's estimates and SEs
# agree with lme4's to about 3e-5 (Penicillin, sleepstudy ML), which at |t| = 28 moves
# p = 1e-6 by 1e-3 relative without any error in the df. Below P_TAIL p is held to
# P_TAIL_RTOL.
DF_RTOL, F_RTOL, P_RTOL = 1e-4, 1e-4, 1e-3
P_TAIL, P_TAIL_RTOL = 1e-4, 1e-2
SE_RTOL = 1e-4


@functools.cache
def _fit(case: str, method: str):
    row = CASES.loc[case]
    factors = tuple(f for f in row["factors"].split(";") if f)
    spec = ModelSpec(
        name=case,
        dataset=row["data"],
        formula=row["formula"],
        family=row["family"],
        reml=row["reml"] != "false",
        inference=method,
    )
    frame = pd.read_csv(REF / "data" / f"{row['data']}.csv")
    result = fit_model(frame, spec, factors=factors)
    assert result.ok and not result.warnings, (case, result.error, result.warnings)
    return result


def _ref(case: str, quantity: str) -> pd.Series:
    rows = FIXTURES[(FIXTURES["case"] == case) & (FIXTURES["quantity"] == quantity)]
    return rows.set_index("term")["value"].astype(float)


def _compare(case: str, quantity: str, py: pd.Series, rtol: float, tail: bool = False) -> None:
    ref = _ref(case, quantity)
    assert len(ref) > 0, f"no fixture {case} {quantity}"
    assert sorted(py.index) == sorted(ref.index), (
        f"{case} {quantity}: terms {sorted(py.index)} vs R {sorted(ref.index)}"
    )
    bad = []
    for term, want in ref.items():
        got = float(py[term])
        tol = P_TAIL_RTOL if tail and want < P_TAIL else rtol
        if not (math.isfinite(got) and abs(got - want) <= tol * abs(want)):
            bad.append(f"{term}: {got!r} vs R {want!r}")
    assert not bad, f"{case} {quantity} (rtol {rtol}): " + "; ".join(bad)


GAUSSIAN = [c for c in CASES.index if CASES.loc[c, "family"] == "gaussian"]
T_CASES = [
    (c, m)
    for c in GAUSSIAN
    for m in ("satterthwaite", "kenward_roger")
    if m == "satterthwaite" or CASES.loc[c, "reml"] == "true"
]


@pytest.mark.parametrize("case,method", T_CASES)
def test_t_tests_match_lmertest(case: str, method: str) -> None:
    res = _fit(case, method)
    table = extract.tidy(res).set_index("term")
    assert (table["test"] == inference_name(method)).all()
    _compare(case, f"{method}_df", table["df"], DF_RTOL)
    _compare(case, f"{method}_se", table["std_error"], SE_RTOL)
    _compare(case, f"{method}_t", table["statistic"], SE_RTOL)
    _compare(case, f"{method}_p", table["p_value"], P_RTOL, tail=True)


def inference_name(method: str) -> str:
    return {"satterthwaite": "Satterthwaite t", "kenward_roger": "Kenward-Roger t"}[method]


ANOVA_CASES = [(c, m) for c, m in T_CASES if len(_ref(c, f"{m}_anova_F"))]


@pytest.mark.parametrize("case,method", ANOVA_CASES)
def test_type3_anova_matches_lmertest(case: str, method: str) -> None:
    table = extract.anova(_fit(case, method)).set_index("term")
    assert (table["test"] == "F").all()
    _compare(case, f"{method}_anova_F", table["statistic"], F_RTOL)
    _compare(case, f"{method}_anova_NumDF", table["num_df"], 0)
    _compare(case, f"{method}_anova_DenDF", table["den_df"], DF_RTOL)
    _compare(case, f"{method}_anova_p", table["p_value"], P_RTOL, tail=True)


def test_cake_anova_tests_terms_not_columns() -> None:
    """The issue's measurement: mixedlm's anova_type3 tests recipe.1 and recipe.2 on
    their own; lmerTest tests the term recipe with NumDF 2 (F = 0.0957)."""
    table = extract.anova(_fit("cake_factorial", "satterthwaite")).set_index("term")
    assert list(table.index) == ["recipe", "temperature", "recipe:temperature"]
    assert table["num_df"].tolist() == [2, 5, 10]


def test_glmm_wald_chisq_per_term() -> None:
    res = _fit("cbpp", "wald")
    table = extract.anova(res).set_index("term")
    assert (table["test"] == "chisq").all() and table["den_df"].isna().all()
    # glmer's Laplace estimates agree with lme4's to about 1e-4 (test_lme4_reference's
    # GLMM tolerances), so a chi-square of 25 does to about 5e-4.
    _compare("cbpp", "wald_anova_Chisq", table["statistic"], 1e-3)
    _compare("cbpp", "wald_anova_Df", table["num_df"], 0)
    _compare("cbpp", "wald_anova_p", table["p_value"], P_RTOL, tail=True)
    fe = extract.tidy(res)
    assert (fe["test"] == "Wald z").all() and fe["df"].isna().all()


def test_t_interval_uses_t_quantiles() -> None:
    fe = extract.tidy(_fit("penicillin", "satterthwaite")).iloc[0]
    from scipy import stats

    q = stats.t.ppf(0.975, fe["df"])
    assert fe["conf_low"] == pytest.approx(fe["estimate"] - q * fe["std_error"], rel=1e-12)
    assert fe["conf_high"] - fe["conf_low"] > 2 * 1.96 * fe["std_error"] * 1.05  # 5.5 df: wider than z


def test_default_inference_follows_r() -> None:
    assert ModelSpec.from_config("m", {"dataset": "d", "formula": "y ~ 1 + (1|g)"}).inference == "satterthwaite"
    assert (
        ModelSpec.from_config("m", {"dataset": "d", "formula": "y ~ 1 + (1|g)", "family": "binomial"}).inference
        == "wald"
    )
    assert (
        ModelSpec.from_config("m", {"dataset": "d", "formula": "y ~ 1 + (1|g)", "engine": "statsmodels"}).inference
        == "wald"
    )


@pytest.mark.parametrize(
    "entry,words",
    [
        ({"family": "binomial", "inference": "satterthwaite"}, "needs a gaussian model"),
        ({"engine": "statsmodels", "inference": "kenward_roger"}, "engine mixedlm only"),
        ({"reml": False, "inference": "kenward_roger"}, "needs a REML fit"),
    ],
)
def test_check_refuses_inference_the_model_cannot_have(entry: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        inference.check("m", entry)
    assert "models.m.inference" in str(info.value)


def test_kenward_roger_falls_back_with_a_warning(monkeypatch) -> None:
    monkeypatch.setattr("glmm_steps.engines.mixedlm_inference.KR_MAX_NOBS", 10)
    row = CASES.loc["pastes_nested"]
    spec = ModelSpec(name="p", dataset="Pastes", formula=row["formula"], inference="kenward_roger")
    res = fit_model(pd.read_csv(REF / "data" / "Pastes.csv"), spec)
    assert res.test == "Satterthwaite t"
    assert any("Satterthwaite df instead" in w for w in res.warnings)
    _compare("pastes_nested", "satterthwaite_df", res.fixef.set_index("term")["df"], DF_RTOL)


def test_type3_terms_come_from_the_model_matrix() -> None:
    """R's assign from the one model-matrix builder reaches the type III contrasts, also
    for a factor() call inside an interaction, and a term marginal to none is tested on
    its own coefficients."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "y": rng.normal(size=60),
            "g": np.repeat([1, 2, 3], 20),
            "x": rng.normal(size=60),
            "h": np.tile(["a", "b"], 30),
        }
    )
    design = model_matrix.build(formula_mod.parse("y ~ factor(g) * x + h + (1 | h)"), frame)
    terms = {t: c for t, c in design.term_columns.items() if t != "(Intercept)"}
    assert terms["factor(g)"] == ["factor(g)2", "factor(g)3"]
    L = anova.type3_contrasts(design.X, design.fixed_names, terms, frame)
    assert {t: L[t].shape[0] for t in L} == {"factor(g)": 2, "x": 1, "h": 1, "factor(g):x": 2}
    plain = model_matrix.build(formula_mod.parse("y ~ I(x^2) + h + (1 | h)"), frame)
    terms = {t: c for t, c in plain.term_columns.items() if t != "(Intercept)"}
    L = anova.type3_contrasts(plain.X, plain.fixed_names, terms, frame)
    np.testing.assert_array_equal(L["I(x^2)"], np.eye(3)[[1]])


def test_richardson_derivatives_are_accurate() -> None:
    f = lambda x: float(np.exp(x[0]) * np.sin(x[1]) + x[0] ** 2 * x[1])  # noqa: E731
    x = np.array([0.3, 1.2])
    want = np.array(
        [
            [np.exp(0.3) * np.sin(1.2) + 2 * 1.2, np.exp(0.3) * np.cos(1.2) + 0.6],
            [np.exp(0.3) * np.cos(1.2) + 0.6, -np.exp(0.3) * np.sin(1.2)],
        ]
    )
    each = lambda points: np.array([f(v) for v in points])  # noqa: E731 (the functions take all points at once)
    np.testing.assert_allclose(inference.hessian(each, x), want, rtol=1e-7)
    np.testing.assert_allclose(
        inference.jacobian(lambda points: each(points)[:, None], x)[:, 0],
        [np.exp(0.3) * np.sin(1.2) + 0.72, np.exp(0.3) * np.cos(1.2) + 0.09],
        rtol=1e-8,
    )


@pytest.mark.slow
def test_satterthwaite_keeps_type_one_error_with_few_clusters() -> None:
    """5 hospitals: the intercept's test has about 4 df. Over 300 simulated studies the
    Satterthwaite t test of H0: intercept = its true value rejects at about alpha = 0.05
    (within 2.6 Monte-Carlo SEs) where the z test rejects at about P(|t_4| > 1.96) =
    0.12. Both tests are read off the same fits (one tidy table with df; the z test is
    estimate / SE against the normal)."""
    from glmm_steps.batch import run_batch
    from glmm_steps.simulate import design_from_config

    design = design_from_config(
        {
            "levels": [{"name": "hospital_id", "n": 5}, {"name": "patient_id", "n": 4}],
            "repeated": {"name": "time", "values": [1, 2, 3]},
            "outcomes": {
                "bp": {
                    "family": "gaussian",
                    "intercept": 120.0,
                    "coefficients": {"time": 0.5},
                    "random_sd": {"hospital_id": 4.0, "patient_id": 1.0},
                    "residual_sd": 2.0,
                }
            },
        }
    )
    spec = ModelSpec.from_config("few", {"dataset": "d", "formula": "bp ~ time + (1 | hospital_id) + (1 | patient_id)"})
    assert spec.inference == "satterthwaite"
    n = 300
    estimates, fits = run_batch(design, spec, "base", [(i, 5000 + i) for i in range(n)])
    assert (fits["status"] != "failed").all()
    rows = estimates[estimates["term"] == "(Intercept)"]
    t = (rows["estimate"] - 120.0) / rows["std_error"]
    from scipy import stats

    reject_t = float(np.mean(np.abs(t) > stats.t.ppf(0.975, rows["df"])))
    reject_z = float(np.mean(np.abs(t) > stats.norm.ppf(0.975)))
    mcse = math.sqrt(0.05 * 0.95 / n)
    print(
        f"type I error at alpha 0.05 over {n} replicates: Satterthwaite t {reject_t:.3f}, z {reject_z:.3f} "
        f"(MC SE {mcse:.3f})"
    )
    assert abs(reject_t - 0.05) <= 2.6 * mcse
    assert reject_z - 0.05 > 3 * mcse


def test_study_test_key_sets_the_power_test() -> None:
    spec = ModelSpec.from_config("s", {"dataset": "d", "formula": "y ~ x + (1|g)", "test": "kenward_roger"})
    assert spec.inference == "kenward_roger"
    with pytest.raises(ConfigError, match="models.s.test"):
        inference.check("s", {"test": "wald", "inference": "satterthwaite"})
    with pytest.raises(ConfigError, match="models.s.test: kenward_roger needs a REML fit"):
        inference.check("s", {"test": "kenward_roger", "reml": False})


def test_study_lrt_test_gives_a_power_row() -> None:
    """test: lrt against compare_with: each replicate gets a likelihood-ratio row
    (REML refitted by ML, as lme4's anova()), and the recovery table its power."""
    from glmm_steps import recovery
    from glmm_steps.batch import run_batch
    from glmm_steps.simulate import design_from_config

    design = design_from_config(
        {
            "levels": [{"name": "hospital_id", "n": 6}, {"name": "patient_id", "n": 4}],
            "repeated": {"name": "time", "values": [1, 2, 3]},
            "outcomes": {
                "bp": {
                    "family": "gaussian",
                    "intercept": 120.0,
                    "coefficients": {"time": 2.0},
                    "random_sd": {"hospital_id": 2.0, "patient_id": 1.0},
                    "residual_sd": 2.0,
                }
            },
        }
    )
    full = ModelSpec.from_config(
        "full",
        {
            "dataset": "d",
            "formula": "bp ~ time + (1 | hospital_id) + (1 | patient_id)",
            "test": "lrt",
            "compare_with": ["null"],
        },
    )
    null = ModelSpec.from_config("null", {"dataset": "d", "formula": "bp ~ 1 + (1 | hospital_id) + (1 | patient_id)"})
    estimates, fits = run_batch(design, full, "base", [(i, 100 + i) for i in range(8)], compare_with=null)
    lrt = estimates[estimates["effect"] == "lrt"]
    assert len(lrt) == 8 and (lrt["term"] == "vs null").all() and (lrt["df"] == 1).all()
    assert (lrt["p_value"] < 1e-4).all()  # a slope of 2 per visit against a residual SD of 2
    table = recovery.summarise(estimates, fits, 0.05, ["time"])
    row = table[table["effect"] == "lrt"].iloc[0]
    assert row["power"] == 1.0 and row["n_estimated"] == 8


def test_study_lrt_config_checks(root) -> None:
    import yaml

    from glmm_steps.config import check_config

    cfg = yaml.safe_load((root / "config" / "config.yaml").read_text())
    cfg["models"]["bp_null_recovery"] = {
        "dataset": "bp_recovery",
        "formula": "bp ~ 1 + (1 | hospital_id) + (1 | patient_id)",
    }
    cfg["models"]["bp_lmm_recovery"] |= {"test": "lrt", "compare_with": ["bp_null_recovery"]}
    check_config(cfg)
    cfg["models"]["bp_lmm_recovery"]["compare_with"] = []
    with pytest.raises(ConfigError, match="test: lrt needs exactly one model"):
        check_config(cfg)
