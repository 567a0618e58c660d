"""Power-study designs (glmm_steps/designs.py): what each element puts in the rows,
the checks before any job, and simulated power against the design-effect formula."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from glmm_steps import batch, recovery, study
from glmm_steps.config import check_config
from glmm_steps.engines.base import ModelSpec
from glmm_steps.errors import ConfigError
from glmm_steps.simulate import design_from_config, simulate

BASE = {
    "levels": [{"name": "hospital", "n": 6}, {"name": "patient", "n": 4}],
    "repeated": {"name": "time", "values": [0, 1, 2, 3]},
    "outcomes": {
        "y": {
            "family": "gaussian",
            "intercept": 10,
            "coefficients": {"time": 0.5},
            "random_sd": {"hospital": 1.0, "patient": 1.0},
            "residual_sd": 1.0,
        }
    },
}


def _design(**keys):
    spec = copy.deepcopy(BASE)
    outcome = keys.pop("outcome", {})
    spec.update(keys)
    spec["outcomes"]["y"].update(outcome)
    return spec


def _error(spec, formula="y ~ time + (1 | hospital) + (1 | patient)") -> str:
    config = {
        "datasets": {"d": {"seeds": [1], "simulate": spec}},
        "models": {"m": {"dataset": "d", "formula": formula}},
    }
    with pytest.raises(ConfigError) as info:
        check_config(config)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_arms_follow_the_allocation_ratio_at_their_level():
    spec = _design(
        levels=[{"name": "hospital", "n": 9}, {"name": "patient", "n": 2}],
        arms={"name": "arm", "level": "hospital", "labels": ["control", "low", "high"], "ratio": [1, 1, 1]},
    )
    data, _ = simulate(design_from_config(spec), 1)
    per_hospital = data.groupby("hospital")["arm"].agg(["nunique", "first"])
    assert (per_hospital["nunique"] == 1).all()  # cluster-randomised: one arm per hospital
    assert per_hospital["first"].value_counts().to_dict() == {"control": 3, "low": 3, "high": 3}
    spec["arms"] = {"name": "arm", "level": "hospital", "labels": ["a", "b"], "ratio": [2, 1]}
    data, _ = simulate(design_from_config(spec), 1)
    assert data.groupby("hospital")["arm"].first().value_counts().to_dict() == {"a": 6, "b": 3}
    # a crossover: arms change from visit to visit within each patient
    spec["arms"] = {"name": "arm", "level": "time", "labels": ["a", "b"]}
    data, _ = simulate(design_from_config(spec), 1)
    assert (data.groupby("patient")["arm"].nunique() == 2).all()


def test_unbalanced_sizes_from_a_list_or_a_distribution():
    data, truth = simulate(
        design_from_config(_design(levels=[{"name": "hospital", "n": 4}, {"name": "patient", "n": [2, 5]}])), 1
    )
    assert data.groupby("hospital")["patient"].nunique().tolist() == [2, 5, 2, 5]
    assert truth["levels"] == {"hospital": 4, "patient": 14} and truth["nrows"] == 14 * 4
    spec = _design(
        levels=[
            {"name": "hospital", "n": 400},
            {"name": "patient", "n": {"distribution": "poisson", "mean": 6, "min": 2}},
        ]
    )
    sizes = simulate(design_from_config(spec), 1)[0].groupby("hospital")["patient"].nunique()
    assert sizes.min() >= 2 and abs(sizes.mean() - 6) < 4 * math.sqrt(6 / 400) + 0.1  # min=2 lifts it a little
    assert sizes.nunique() > 4
    # the design, not the replicate, draws them
    assert simulate(design_from_config(spec), 2)[0]["patient"].equals(
        simulate(design_from_config(spec), 1)[0]["patient"]
    )


def test_covariates_at_a_level_follow_their_distribution():
    spec = _design(
        levels=[{"name": "hospital", "n": 50}, {"name": "patient", "n": 40}],
        covariates={
            "age": {"level": "patient", "distribution": "normal", "mean": 50, "sd": 10},
            "smoker": {"level": "patient", "distribution": "binary", "p": 0.3},
            "dose": {"level": "time", "distribution": "normal"},
        },
    )
    data, _ = simulate(design_from_config(spec), 1)
    patients = data.groupby("patient")[["age", "smoker"]].agg(["nunique", "first"])
    assert (patients[("age", "nunique")] == 1).all() and (patients[("smoker", "nunique")] == 1).all()
    n = len(patients)
    assert abs(patients[("age", "first")].mean() - 50) < 4 * 10 / math.sqrt(n)
    assert abs(patients[("age", "first")].std() - 10) < 4 * 10 / math.sqrt(2 * n)
    assert abs(patients[("smoker", "first")].mean() - 0.3) < 4 * math.sqrt(0.21 / n)
    assert data.groupby("patient")["dose"].nunique().eq(4).all()  # per row


def test_dropout_is_monotone_and_mcar_removes_rows_at_its_rate():
    levels = [{"name": "hospital", "n": 40}, {"name": "patient", "n": 50}]
    data, truth = simulate(design_from_config(_design(levels=levels, missing={"dropout": 0.2})), 3)
    seen = data.groupby("patient")["time"].agg(["count", "max"])
    assert (seen["max"] == seen["count"] - 1).all()  # visits 0..k: nothing after a dropout
    n = 2000
    for k in range(4):
        share = (seen["count"] > k).mean()
        assert abs(share - 0.8**k) < 4 * math.sqrt(0.8**k * (1 - 0.8**k) / n) + 1e-12, k
    assert truth["nrows"] == len(data)
    data, _ = simulate(design_from_config(_design(levels=levels, missing={"mcar": 0.1})), 3)
    assert abs(1 - len(data) / 8000 - 0.1) < 4 * math.sqrt(0.09 / 8000)
    assert not design_from_config(_design(missing={"mcar": 0.1})).fixed_rows


def test_new_design_keys_are_checked_before_any_job():
    arms = {"name": "arm", "level": "hospital", "labels": ["control", "treated"]}
    assert "must sort first" in _error(_design(arms={**arms, "labels": ["placebo", "drug"]}))
    assert "unknown level 'ward'" in _error(_design(arms={**arms, "level": "ward"}))
    assert "1 ratios for 2 labels" in _error(_design(arms={**arms, "ratio": [1]}))
    assert "arm_effects.active" in _error(_design(arms=arms, outcome={"arm_effects": {"active": 1}}))
    assert "has no arms" in _error(_design(outcome={"arm_by_time": {"treated": 1}}))
    assert "random_slopes.patient.term" in _error(
        _design(outcome={"random_slopes": {"patient": {"term": "dose", "sd": 1}}})
    )
    assert "random_slopes.ward" in _error(_design(outcome={"random_slopes": {"ward": {"term": "time", "sd": 1}}}))
    assert "coefficients.age" in _error(_design(outcome={"coefficients": {"age": 1}}))
    assert "random_sd.rater" in _error(_design(outcome={"random_sd": {"rater": 1}}))
    assert "repeat" in _error(_design(crossed=[{"name": "patient", "n": 3}]))
    assert "missing" in _error(_design(missing={"dropout": 1.5}))
    assert "covariates.age.level" in _error(_design(covariates={"age": {"level": "ward", "distribution": "normal"}}))


def test_designs_without_missing_data_refit_and_match_full_fits():
    spec = _design(
        arms={"name": "arm", "level": "hospital", "labels": ["control", "treated"]},
        covariates={"age": {"level": "patient", "distribution": "normal"}},
        outcome={
            "arm_effects": {"treated": 1.0},
            "coefficients": {"time": 0.5, "age": 0.3},
            "random_slopes": {"patient": {"term": "time", "sd": 0.3, "cor": 0.5}},
        },
    )
    design = design_from_config(spec)
    model = ModelSpec.from_config(
        "m",
        {
            "dataset": "d",
            "formula": "y ~ time * arm + age + (1 | hospital) + (1 + time | patient)",
            "residuals": {"nsim": 0},
        },
    )
    assert batch.refittable(design, model)
    replicates = [(i, study.replicate_seed(5, i)) for i in range(4)]
    fast, fast_fits = batch.run_batch(design, model, "base", replicates)
    full, full_fits = batch.run_batch(design, model, "base", replicates, refit=False)
    pd.testing.assert_frame_equal(fast_fits, full_fits)
    pd.testing.assert_frame_equal(fast, full, rtol=1e-8)
    truth = fast[fast["replicate"] == 0].set_index("term")["true_value"]
    assert truth["armtreated"] == 1.0 and truth["time:armtreated"] == 0.0 and truth["age"] == 0.3
    assert truth["sd__time"] == 0.3 and truth["cor__(Intercept).time"] == 0.5


@pytest.mark.parametrize(
    ("keys", "formula"),
    [
        ({}, "y ~ time + (1 | hospital) + (1 | patient)"),
        (
            {"outcome": {"random_slopes": {"patient": {"term": "time", "sd": 0.3, "cor": 0.5}}}},
            "y ~ time + (1 | hospital) + (1 + time | patient)",
        ),
        (
            {"outcome": {"random_slopes": {"patient": {"term": "time", "sd": 0.3, "cor": 0.0}}}},
            "y ~ time + (1 | hospital) + (1 + time || patient)",
        ),
        (
            {
                "crossed": [{"name": "rater", "n": 3}],
                "outcome": {"random_sd": {"hospital": 0.2, "patient": 1.0, "rater": 0.5}},
            },
            "y ~ time + (1 | hospital) + (1 | patient) + (1 | rater)",
        ),
    ],
    ids=["intercepts", "correlated-slope", "uncorrelated-slope", "crossed"],
)
def test_study_fits_start_at_the_truth_and_reach_the_default_starts_optimum(keys, formula):
    """A study's gaussian fits start the optimizer at the true covariances (as simr's
    refits start at the model's parameters): theta is the Cholesky factor of the true
    covariance relative to the residual variance, in mixedlm's order. The optimum is
    the one a fit from mixedlm's default start reaches."""
    from mixedlm.estimation.reml import _build_lambda_blocks

    from glmm_steps.fit import fit_model

    design = design_from_config(_design(**copy.deepcopy(keys)))
    model = ModelSpec.from_config("m", {"dataset": "d", "formula": formula, "residuals": {"nsim": 0}})
    refits = batch._Refits(design, model, ())
    refits(study.replicate_seed(9, 0))
    refitter, outcome = refits.refit, refits.truth["outcomes"]["y"]
    structures = refitter.model.matrices.random_structures
    for struct, block in zip(structures, _build_lambda_blocks(refitter.start, structures)):
        group = refitter.group_names[struct.grouping_factor]
        terms = [refitter.column_names.get(t, t) for t in struct.term_names]
        sd = np.array([batch._sd_truth(group, t, outcome, design) for t in terms])
        cov = np.diag(sd**2)
        if len(terms) == 2 and struct.correlated:
            cov[0, 1] = cov[1, 0] = 0.5 * sd[0] * sd[1]
        np.testing.assert_allclose(block @ block.T, cov / outcome["residual_sd"] ** 2, rtol=1e-12)
    for i in range(6):
        seed = study.replicate_seed(9, i)
        _, _, from_truth = batch.fit_replicate(design, model, seed)
        default = fit_model(simulate(design, seed)[0], model, random_effects=False)
        assert from_truth.ok and default.ok and from_truth.singular == default.singular
        assert abs(from_truth.loglik - default.loglik) < 1e-6
        np.testing.assert_allclose(from_truth.fixef["estimate"], default.fixef["estimate"], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(from_truth.varcorr["sd"], default.varcorr["sd"], rtol=1e-3, atol=1e-5)


def test_a_study_fit_without_a_true_covariance_takes_the_default_start():
    """A group the design does not draw as one (hospital:patient), or a negative
    binomial model (its own theta search), has no true covariance to start from; a
    binomial model's is on glmer's scale, not relative to a residual variance."""
    design = design_from_config(_design())
    truth = simulate(design, 1)[1]
    nested = ModelSpec.from_config(
        "m", {"dataset": "d", "formula": "y ~ time + (1 | hospital:patient)", "residuals": {"nsim": 0}}
    )
    refits = batch._Refits(design, nested, ())
    refits(study.replicate_seed(9, 0))
    assert refits.refit.start is None
    start = batch.true_covariance(nested, truth, design)
    assert start("hospital:patient", ["(Intercept)"]) is None
    np.testing.assert_allclose(start("hospital", ["(Intercept)"]), [[1.0]])
    design = design_from_config(_design(outcome={"random_sd": {"hospital": 0.5, "patient": 1.0}, "residual_sd": 2.0}))
    truth = simulate(design, 1)[1]
    gaussian = ModelSpec.from_config("m", {"dataset": "d", "formula": "y ~ (1 | hospital)"})
    np.testing.assert_allclose(batch.true_covariance(gaussian, truth, design)("hospital", ["(Intercept)"]), [[1 / 16]])
    binomial = ModelSpec.from_config("m", {"dataset": "d", "family": "binomial", "formula": "y ~ (1 | hospital)"})
    np.testing.assert_allclose(batch.true_covariance(binomial, truth, design)("hospital", ["(Intercept)"]), [[0.25]])
    nb = ModelSpec.from_config("m", {"dataset": "d", "family": "negative_binomial", "formula": "y ~ (1 | hospital)"})
    assert batch.true_covariance(nb, truth, design) is None


@pytest.mark.parametrize("test", ["wald", "satterthwaite", "kenward_roger"])
def test_refit_path_gives_the_study_test_of_a_full_fit(test):
    """`test:` (issue 14) chooses the fixed effects' test; the refit path computes
    Satterthwaite and Kenward-Roger df from the refitted lmer, equal to a full fit's."""
    design = design_from_config(_design(outcome={"coefficients": {"time": 0.5}}))
    model = ModelSpec.from_config(
        "m",
        {
            "dataset": "d",
            "formula": "y ~ time + (1 | hospital) + (1 | patient)",
            "test": test,
            "residuals": {"nsim": 0},
        },
    )
    assert batch.refittable(design, model)
    replicates = [(i, study.replicate_seed(7, i)) for i in range(3)]
    fast, _ = batch.run_batch(design, model, "base", replicates)
    full, _ = batch.run_batch(design, model, "base", replicates, refit=False)
    pd.testing.assert_frame_equal(fast, full, rtol=1e-8)
    fixed = fast[fast["effect"] == "fixed"]
    assert (
        fixed["test"]
        == {"wald": "Wald z", "satterthwaite": "Satterthwaite t", "kenward_roger": "Kenward-Roger t"}[test]
    ).all()
    assert fixed["df"].isna().all() == (test == "wald")


@pytest.mark.parametrize(
    ("family", "intercept", "replicates"),
    [("binomial", -0.5, 4), ("poisson", 0.5, 3), ("binomial", -6.0, 4)],
    ids=["binomial", "poisson", "rare-binary"],
)
def test_glmm_refits_equal_full_fits(family, intercept, replicates):
    """A binomial or Poisson study refits one glmer template (issue 17): each replicate's
    estimates, Wald standard errors, logLik, status and warnings are those of a full fit
    of the same replicate. A rare outcome's replicates with no event at all (the last
    two of the third case) are fitted in full and fail with the data check's message."""
    design = design_from_config(_design(outcome={"family": family, "intercept": intercept, "residual_sd": None}))
    model = ModelSpec.from_config(
        "m",
        {
            "dataset": "d",
            "formula": "y ~ time + (1 | hospital) + (1 | patient)",
            "family": family,
            "residuals": {"nsim": 0},
        },
    )
    assert batch.refittable(design, model)
    replicates = [(i, study.replicate_seed(5, i)) for i in range(replicates)]
    fast, fast_fits = batch.run_batch(design, model, "base", replicates)
    full, full_fits = batch.run_batch(design, model, "base", replicates, refit=False)
    pd.testing.assert_frame_equal(fast_fits, full_fits)
    pd.testing.assert_frame_equal(fast, full, rtol=1e-8)
    assert (full_fits["status"] != "failed").sum() >= 2  # the refit path had replicates to fit
    fixed = fast[fast["effect"] == "fixed"]
    assert (fixed["test"] == "Wald z").all() and fixed["std_error"].notna().all()
    if intercept < -5:
        assert full_fits["error"].str.contains("has the same value (0) on every row", regex=False).sum() == 2


def test_glmm_study_fits_start_at_the_truth_and_redo_a_fit_whose_pirls_fails_from_there():
    """A binomial or Poisson study's fits start their joint optimization at the true
    variances without glmer's nAGQ = 0 first stage, as lme4's refit of a GLMM starts
    at the model's parameters, and reach the optimum of a fit from mixedlm's default
    start. From those variances the inner PIRLS solver fails on replicate 10 of this
    Poisson design (a logLik of -5e15 where the default start's fit has -324): that fit
    is redone from the default start, by the refit path as by the full one, and so
    gets its numbers and its warning (PIRLS did not converge there either)."""
    from mixedlm.models.glmer_fit import GlmerMod

    from glmm_steps.engines import mixedlm_engine
    from glmm_steps.fit import fit_model
    from glmm_steps.formula import parse
    from glmm_steps.model_matrix import build

    design = design_from_config(_design(outcome={"family": "poisson", "intercept": 0.5, "residual_sd": None}))
    model = ModelSpec.from_config(
        "m",
        {
            "dataset": "d",
            "family": "poisson",
            "formula": "y ~ time + (1 | hospital) + (1 | patient)",
            "residuals": {"nsim": 0},
        },
    )
    seeds = [study.replicate_seed(4, i) for i in (0, 10)]
    data, truth = simulate(design, seeds[1])
    formula = parse(model.formula)
    text, frame, columns, groups = mixedlm_engine.engine_inputs(formula, build(formula, data), data)
    glmer = GlmerMod(text, frame, family=mixedlm_engine._family("poisson", "log"))
    theta = mixedlm_engine.start_theta(
        glmer.matrices.random_structures, groups, columns, batch.true_covariance(model, truth, design)
    )
    np.testing.assert_allclose(theta, [1.0, 1.0])
    glmer.control = mixedlm_engine.glmer_control(started=True)
    with pytest.warns(UserWarning, match="inner PIRLS solver did not converge"):
        assert not glmer.fit(start=theta).pirls_converged
    for seed in seeds:
        _, _, from_truth = batch.fit_replicate(design, model, seed)
        default = fit_model(simulate(design, seed)[0], model, random_effects=False)
        assert from_truth.ok and from_truth.warnings == default.warnings
        assert abs(from_truth.loglik - default.loglik) < 1e-6
        np.testing.assert_allclose(from_truth.fixef["estimate"], default.fixef["estimate"], rtol=1e-5)
        np.testing.assert_allclose(from_truth.varcorr["sd"], default.varcorr["sd"], rtol=1e-4)
    replicates = list(enumerate(seeds))
    fast, fast_fits = batch.run_batch(design, model, "base", replicates)
    full, full_fits = batch.run_batch(design, model, "base", replicates, refit=False)
    pd.testing.assert_frame_equal(fast_fits, full_fits)
    pd.testing.assert_frame_equal(fast, full, rtol=1e-8)


def test_a_fit_from_a_start_that_does_not_converge_is_redone_from_the_default_start():
    """from_start keeps a fit from the given theta only where its optimizer (and a
    GLMM's PIRLS) converged, with that fit's warnings; otherwise the default start's
    fit, without the discarded one's warnings."""
    import warnings
    from types import SimpleNamespace

    from glmm_steps.engines.mixedlm_engine import from_start

    def fit_with(converged_from_theta: bool, pirls: bool = True):
        def fit(theta):
            warnings.warn(f"from {'the start' if theta is not None else 'the default'}")
            ok = converged_from_theta if theta is not None else False
            return SimpleNamespace(theta=theta, converged=ok, pirls_converged=pirls or theta is None)

        return fit

    theta = np.array([0.4, 0.2])
    cases = [(True, True, "the start"), (False, True, "the default"), (True, False, "the default")]
    for converged, pirls, expected in cases:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = from_start(fit_with(converged, pirls), theta, lambda r: r)
        assert [str(w.message) for w in caught] == [f"from {expected}"]
        assert (result.theta is None) == (expected == "the default")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert from_start(fit_with(True), None, lambda r: r).theta is None
    assert [str(w.message) for w in caught] == ["from the default"]


def test_glmm_lrt_refits_equal_full_fits():
    """`test: lrt` of a binomial study model: both models refit their templates, with the
    likelihood-ratio rows of full fits."""
    design = design_from_config(_design(outcome={"family": "binomial", "intercept": -0.5, "residual_sd": None}))
    entry = {"dataset": "d", "family": "binomial", "residuals": {"nsim": 0}}
    model = ModelSpec.from_config("m", {**entry, "formula": "y ~ time + (1 | hospital) + (1 | patient)", "test": "lrt"})
    null = ModelSpec.from_config("m0", {**entry, "formula": "y ~ 1 + (1 | hospital) + (1 | patient)"})
    assert batch.refittable(design, batch.ml_spec(model)) and batch.refittable(design, batch.ml_spec(null))
    replicates = [(i, study.replicate_seed(5, i)) for i in range(2)]
    fast, fast_fits = batch.run_batch(design, model, "base", replicates, compare_with=null)
    full, full_fits = batch.run_batch(design, model, "base", replicates, compare_with=null, refit=False)
    pd.testing.assert_frame_equal(fast_fits, full_fits)
    pd.testing.assert_frame_equal(fast, full, rtol=1e-8)
    assert (fast["effect"] == "lrt").sum() == 2


@pytest.mark.slow
def test_power_matches_the_design_effect_formula():
    """A cluster-randomised trial (arms per hospital, m patients each, random hospital
    intercept, ICC rho): the Wald test's power is Phi(delta / se - z) + Phi(-delta / se - z)
    with se^2 = sigma^2 (1 + (m - 1) rho) (1 / (n1 m) + 1 / (n0 m)). Simulated power
    must be within 3 Monte-Carlo SEs of it at three sizes."""
    m, icc, delta, n = 5, 0.1, 0.5, 300
    z = norm.ppf(0.975)
    for hospitals in (20, 40, 60):
        spec = {
            "levels": [{"name": "hospital", "n": hospitals}, {"name": "patient", "n": m}],
            "repeated": {"name": "visit", "values": [1]},
            "arms": {"name": "arm", "level": "hospital", "labels": ["control", "treated"]},
            "outcomes": {
                "y": {
                    "family": "gaussian",
                    "intercept": 0,
                    "arm_effects": {"treated": delta},
                    "random_sd": {"hospital": math.sqrt(icc)},
                    "residual_sd": math.sqrt(1 - icc),
                }
            },
        }
        model = ModelSpec.from_config("m", {"dataset": "d", "formula": "y ~ arm + (1 | hospital)"})
        replicates = list(enumerate(study.replicate_seeds(11, n)))
        estimates, fits = batch.run_batch(design_from_config(spec), model, "base", replicates)
        row = recovery.summarise(estimates, fits, 0.05, ["armtreated"]).set_index("term").loc["armtreated"]
        se = math.sqrt((1 + (m - 1) * icc) * 2 / (hospitals / 2 * m))
        theory = norm.cdf(delta / se - z) + norm.cdf(-delta / se - z)
        assert 0.3 < theory < 0.97
        assert abs(row["power"] - theory) < 3 * math.sqrt(theory * (1 - theory) / n), (hospitals, row["power"], theory)


def test_power_table_gives_the_smallest_size_reaching_the_target():
    from glmm_steps import power

    table = pd.DataFrame(
        {
            "model": "m",
            "design": ["n=5", "n=10", "n=20"] * 2,
            "levels.h.n": [5, 10, 20] * 2,
            "effect": "fixed",
            "term": ["x"] * 3 + ["z"] * 3,
            "n_replicates": 200,
            "power": [0.5, 0.81, 0.95, 0.1, 0.2, 0.3],
            "power_mcse": 0.02,
        }
    )
    out = power.power_table(table, ["levels.h.n"], 0.8)
    x = out[out["term"] == "x"]
    assert list(x["reaches_target"]) == [False, True, True]
    assert x["smallest_size"].iloc[0] == 10
    # 0.81 of 200 is not surely above 0.8; 0.95 is
    assert x["power_low"].iloc[1] < 0.8 < x["power_high"].iloc[1] and x["smallest_size_sure"].iloc[0] == 20
    assert out[out["term"] == "z"]["smallest_size"].isna().all()
    low, high = power.wilson(0, 50)
    assert low == 0 and 0.05 < high < 0.1  # Wilson: a non-degenerate interval at power 0
    lines = power.summary_lines(out)
    assert lines[0].startswith("m x: levels.h.n = 10 reaches power 0.8 (power 0.810")
    assert "no swept levels.h.n reaches" in lines[1]


def test_target_power_needs_one_swept_size():
    config = {
        "datasets": {"d": {"replicates": 5, "base_seed": 1, "simulate": copy.deepcopy(BASE)}},
        "models": {"m": {"dataset": "d", "formula": "y ~ time + (1 | hospital) + (1 | patient)", "target_power": 0.8}},
    }
    with pytest.raises(ConfigError, match="needs one swept size key"):
        check_config(config)
    config["datasets"]["d"]["sweep"] = {"levels.hospital.n": [4, 8]}
    check_config(config)


def test_from_model_designs_are_checked_before_any_job(root, monkeypatch):
    monkeypatch.chdir(root)
    sleep = {"path": "tests/reference/data/sleepstudy.csv"}
    pilot = {"dataset": "sleep", "formula": "Reaction ~ Days + (Days | Subject)"}

    def error(simulate, models=None, **dataset):
        config = {
            "datasets": {"sleep": sleep, "power": {"replicates": 5, "base_seed": 1, "simulate": simulate, **dataset}},
            "models": models or {"pilot": pilot},
        }
        with pytest.raises(ConfigError) as info:
            check_config(config)
        return str(info.value)

    assert "no model named 'pliot'" in error({"from_model": "pliot"})
    assert "fixed_effects.Hours" in error({"from_model": "pilot", "fixed_effects": {"Hours": 1}})
    assert "extend.Hours" in error({"from_model": "pilot", "extend": {"Hours": 3}})
    assert "extend.Days" in error({"from_model": "pilot", "extend": {"Days": 3}})
    assert "not supported" in error(
        {"from_model": "pilot"}, {"pilot": {**pilot, "formula": "Reaction ~ Days + (1 | Subject:Days)"}}
    )
    assert "from_model" in error({"from_model": "pilot", "levels": []})
    config = {
        "datasets": {"sleep": sleep, "power": {"seeds": [1], "simulate": {"from_model": "pilot"}}},
        "models": {"pilot": pilot},
    }
    with pytest.raises(ConfigError, match="studies"):
        check_config(config)
    # the pilot's units and days become the design; a sweep applies on top of it
    config["datasets"]["power"] = {
        "replicates": 5,
        "base_seed": 1,
        "simulate": {"from_model": "pilot"},
        "sweep": {"levels.Subject.n": [10, 20]},
    }
    plan = check_config(config)
    made = plan.config["datasets"]["power"]["simulate"]
    assert made["levels"] == [{"name": "Subject", "n": 18}] and made["repeated"]["values"] == list(range(10))
    assert [p.spec["levels"][0]["n"] for p in plan.study_designs["power"].values()] == [10, 20]


def _cluster_trial(effect: float, hospitals: int = 30) -> dict:
    return {
        "levels": [{"name": "hospital", "n": hospitals}, {"name": "patient", "n": 5}],
        "repeated": {"name": "visit", "values": [1]},
        "arms": {"name": "arm", "level": "hospital", "labels": ["control", "treated"]},
        "outcomes": {
            "y": {
                "family": "gaussian",
                "intercept": 0,
                "arm_effects": {"treated": effect},
                "random_sd": {"hospital": 0.3},
                "residual_sd": 0.95,
            }
        },
    }


def test_lrt_statistic_is_compares_anova_on_the_same_replicate():
    """The batch's LRT row equals the likelihood-ratio table of glmm_steps.compare (the
    anova() port checked against lme4) for the same replicate, refit path or not."""
    from glmm_steps import compare
    from glmm_steps.fit import fit_model

    design = design_from_config(_cluster_trial(0.5))
    full = ModelSpec.from_config("full", {"dataset": "d", "formula": "y ~ arm + (1 | hospital)", "reml": False})
    null = ModelSpec.from_config("null", {"dataset": "d", "formula": "y ~ 1 + (1 | hospital)", "reml": False})
    seed = study.replicate_seed(9, 0)
    rows, _ = batch.run_batch(design, full, "base", [(0, seed)], compare_with=null)
    test = rows[rows["effect"] == "lrt"].iloc[0]
    assert test["term"] == "vs null" and test["df"] == 1
    data, _ = simulate(design, seed)
    table, _ = compare.compare([fit_model(data, full), fit_model(data, null)])
    row = table.dropna(subset=["chisq"]).iloc[0]
    assert row["df"] == 1
    assert test["statistic"] == pytest.approx(row["chisq"], rel=1e-8)
    assert test["p_value"] == pytest.approx(row["p_value"], rel=1e-8)
    slow, _ = batch.run_batch(design, full, "base", [(0, seed)], compare_with=null, refit=False)
    assert slow[slow["effect"] == "lrt"]["p_value"].iloc[0] == pytest.approx(test["p_value"], rel=1e-10)


def test_lrt_power_rejects_at_alpha_under_the_null_and_detects_an_effect():
    # test: wald, so the fixed effect's power is the Wald z test's, the LRT's asymptotic twin
    full = ModelSpec.from_config(
        "full", {"dataset": "d", "formula": "y ~ arm + (1 | hospital)", "reml": False, "test": "wald"}
    )
    null = ModelSpec.from_config("null", {"dataset": "d", "formula": "y ~ 1 + (1 | hospital)", "reml": False})
    n = 200
    replicates = list(enumerate(study.replicate_seeds(21, n)))
    powers = {}
    for effect in (0.0, 0.6):
        rows, fits = batch.run_batch(
            design_from_config(_cluster_trial(effect)), full, "base", replicates, compare_with=null
        )
        table = recovery.summarise(rows, fits, 0.05, ["armtreated"]).set_index("term")
        powers[effect] = table.loc["vs null", "power"], table.loc["armtreated", "power"]
    # size: within 3 MCSE of 0.05 (ML's LRT is slightly liberal with 30 clusters)
    assert abs(powers[0.0][0] - 0.05) < 3 * math.sqrt(0.05 * 0.95 / n)
    # the LRT and the Wald test of the same effect agree closely on power
    assert powers[0.6][0] > 0.7 and abs(powers[0.6][0] - powers[0.6][1]) < 0.05


def test_lrt_study_test_is_checked():
    """test: lrt (issue 14's study test key) needs one model in compare_with; REML
    models are allowed (the batch refits them by ML, as anova() does)."""
    spec = _cluster_trial(0.5)
    models = {
        "full": {
            "dataset": "d",
            "formula": "y ~ arm + (1 | hospital)",
            "reml": False,
            "test": "lrt",
            "compare_with": ["null"],
        },
        "null": {"dataset": "d", "formula": "y ~ 1 + (1 | hospital)", "reml": False},
    }

    def check(**changes):
        config = {
            "datasets": {"d": {"replicates": 5, "base_seed": 1, "simulate": spec}},
            "models": copy.deepcopy(models),
        }
        for model, entry in changes.items():
            config["models"][model].update(entry)
        return check_config(config)

    check()
    check(full={"reml": True}, null={"reml": True})
    with pytest.raises(ConfigError, match="exactly one model"):
        check(full={"compare_with": []})
    with pytest.raises(ConfigError, match="applies to per-seed fits only"):
        check(full={"test": "wald"})
    with pytest.raises(ConfigError, match="power_test"):
        check(full={"test": "lrt", "power_test": "lrt"})  # one study test key: `test`


def test_a_per_seed_replicate_fits_the_same_from_its_file(tmp_path):
    """A designed replicate written by the simulate step and read back by the fit step
    (arm labels as text, crossed ids, covariates, missing rows) fits as in memory, with
    the reference arm first."""
    from glmm_steps.fit import fit_file, fit_model
    from glmm_steps.simulate import simulate_to_files

    spec = _design(
        crossed=[{"name": "rater", "n": 3}],
        arms={"name": "arm", "level": "patient", "labels": ["a_placebo", "b_drug"]},
        covariates={"age": {"level": "patient", "distribution": "normal", "mean": 50, "sd": 10}},
        missing={"mcar": 0.1},
        outcome={
            "arm_effects": {"b_drug": 2.0},
            "coefficients": {"time": 0.5, "age": 0.1},
            "random_sd": {"hospital": 1.0, "patient": 1.0, "rater": 0.5},
        },
    )
    simulate_to_files(spec, 4, str(tmp_path / "data.csv"), str(tmp_path / "truth.json"))
    model = ModelSpec.from_config(
        "m", {"dataset": "d", "formula": "y ~ time + arm + age + (1 | hospital) + (1 | patient) + (1 | rater)"}
    )
    from_file = fit_file(tmp_path / "data.csv", model)
    in_memory = fit_model(simulate(design_from_config(spec), 4)[0], model)
    assert from_file.ok and list(from_file.fixef["term"]) == ["(Intercept)", "time", "armb_drug", "age"]
    np.testing.assert_allclose(from_file.fixef["estimate"], in_memory.fixef["estimate"], rtol=1e-6)
    assert from_file.nobs < 6 * 4 * 3 * 4


def test_a_poisson_log_mean_from_arms_or_slopes_is_bounded_before_any_job():
    spec = _design(
        arms={"name": "arm", "level": "hospital", "labels": ["control", "treated"]},
        outcome={"family": "poisson", "intercept": 0, "residual_sd": None, "arm_by_time": {"treated": 300.0}},
    )
    del spec["outcomes"]["y"]["residual_sd"]
    assert "log-mean reaches 9" in _error(spec, "y ~ time * arm + (1 | hospital) + (1 | patient)")
    spec["outcomes"]["y"]["arm_by_time"] = {"treated": 0.1}
    spec["outcomes"]["y"]["random_slopes"] = {"patient": {"term": "time", "sd": 50.0}}
    assert "log-mean reaches" in _error(spec, "y ~ time * arm + (1 | hospital) + (1 | patient)")
    spec["outcomes"]["y"]["random_slopes"] = {"patient": {"term": "time", "sd": 0.1}}
    check_config(
        {
            "datasets": {"d": {"seeds": [1], "simulate": spec}},
            "models": {
                "m": {"dataset": "d", "formula": "y ~ time * arm + (1 | hospital) + (1 | patient)", "family": "poisson"}
            },
        }
    )
