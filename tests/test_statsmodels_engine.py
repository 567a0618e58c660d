"""The statsmodels engine: formula translation, the optimizer strategy, the Bayesian GLMMs.

Its estimates are checked against lme4 in test_lme4_reference.py (every gaussian panel
case); here: what it refuses and why, that it reaches lme4's optimum where statsmodels'
own default fit() does not, and that its random effects and predictions agree with
the mixedlm engine's.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glmm_steps import extract
from glmm_steps.engines import statsmodels_engine as sme
from glmm_steps.engines.base import ModelSpec
from glmm_steps.errors import GlmmError
from glmm_steps.fit import fit_model
from glmm_steps.formula import parse

REF = Path(__file__).parent / "reference"
BP = "bp ~ time + (1 | hospital_id) + (1 | patient_id)"


def _lme4(case: str, quantity: str) -> float:
    f = pd.read_csv(REF / "lme4_fixtures.csv", keep_default_na=False)
    return float(f[(f["case"] == case) & (f["quantity"] == quantity)]["value"].item())


# ---- layout: what MixedLM can express ------------------------------------------------


def _nest(pairs: set[tuple[str, str]]):
    """contains(outer, inner) from a set of (outer, inner) pairs."""
    return lambda outer, inner: (outer, inner) in pairs


@pytest.mark.parametrize(
    "formula, pairs, groups, re_term",
    [
        ("y ~ x + (1 + x | g)", set(), "g", 0),
        ("y ~ x + (1 + x || g)", set(), "g", None),  # every column a variance component
        ("y ~ x + (1 | g) + (0 + x | g)", set(), "g", 0),
        ("y ~ 1 + (1 | a) + (1 | b)", {("a", "b")}, "a", 0),  # b nested in a
        ("y ~ 1 + (1 | a/b)", {("a", "b:a")}, "a", 0),
        ("y ~ 1 + (1 | a) + (1 | b)", set(), None, None),  # crossed: one group of all rows
        ("y ~ x + (1 + x | a) + (1 | b)", {("a", "b")}, "a", 0),
    ],
)
def test_layout(formula, pairs, groups, re_term):
    lay = sme.layout(parse(formula), "gaussian", _nest(pairs))
    assert (lay.groups, lay.re_term) == (groups, re_term)


@pytest.mark.parametrize(
    "formula, family, needle",
    [
        # correlated slopes on a factor that does not contain the other one
        ("y ~ x + (1 + x | b) + (1 | a)", "gaussian", r"cannot fit \(1 \+ x \| b\): .*'a' is not"),
        ("y ~ x + (1 + x | a) + (1 + z | b)", "gaussian", r"cannot fit \(1 \+ z \| b\) beside \(1 \+ x \| a\)"),
        ("y ~ x + (1 + x | g)", "binomial", r"cannot fit \(1 \+ x \| g\): its Bayesian GLMMs"),
        ("y ~ x + offset(log(e)) + (1 | g)", "poisson", "cannot fit offset"),
        ("cbind(s, f) ~ x + (1 | g)", "binomial", "cannot fit a cbind"),
    ],
)
def test_layout_refuses_naming_the_term(formula, family, needle):
    with pytest.raises(GlmmError, match=needle):
        sme.layout(parse(formula), family, _nest({("a", "b")}))


def test_nesting_from_data():
    frame = pd.DataFrame({"a": [1, 1, 2, 2], "b": [1, 2, 3, 4], "c": [1, 2, 1, 2]})
    f = parse("y ~ 1 + (1 | a) + (1 | b) + (1 | c)")
    contains = sme.containment(frame, f)
    assert contains("a", "b") and not contains("b", "a") and not contains("a", "c")


# ---- the optimum ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bp_fits(bp_data):
    spec = ModelSpec("bp_lmm", "bp_study", BP)
    return fit_model(bp_data, spec), fit_model(bp_data, ModelSpec("bp_lmm", "bp_study", BP, engine="statsmodels"))


def test_reaches_lme4_where_the_default_fit_does_not(bp_data, bp_fits):
    """The issue's measurement on the reference study (seed 123): statsmodels'
    default fit() stops short of lme4's REML optimum; the engine reaches it."""
    import statsmodels.formula.api as smf

    lme4 = _lme4("bp_lmm_reml", "logLik")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = smf.mixedlm(
            "bp ~ time", bp_data, groups="hospital_id", re_formula="1", vc_formula={"patient_id": "0 + C(patient_id)"}
        ).fit(reml=True)
    assert default.llf < lme4 - 1.0  # measured: -1545.92 vs -1543.35
    res = bp_fits[1]
    assert abs(res.loglik - lme4) / res.nobs < 1e-9
    assert res.converged and res.details["gradient_max_abs"] < sme.GRADIENT_TOL
    tried = [a["method"] for a in res.details["optimizers"]]
    assert tried[: len(sme.OPTIMIZERS)] == list(sme.OPTIMIZERS)
    # every attempt is on record with its own logLik, the worse ones included
    lls = [a["logLik"] for a in res.details["optimizers"] if a["logLik"] is not None]
    assert max(lls) == pytest.approx(res.loglik, abs=1e-9) and min(lls) < res.loglik - 0.1


def test_random_effects_and_predictions_match_mixedlm(bp_fits):
    mix, sm = bp_fits
    assert sm.ngroups == mix.ngroups
    a = mix.ranef.set_index(["group", "level", "term"]).sort_index()
    b = sm.ranef.set_index(["group", "level", "term"]).sort_index()
    assert a.index.equals(b.index)
    np.testing.assert_allclose(b["estimate"], a["estimate"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b["cond_sd"], a["cond_sd"], rtol=1e-3)
    np.testing.assert_allclose(sm.fitted, mix.fitted, rtol=1e-6)
    np.testing.assert_allclose(sm.fitted_marginal, mix.fitted_marginal, rtol=1e-7)
    assert sm.npar == mix.npar == 5


def test_crossed_fit_uses_one_group_and_lme4_names():
    data = pd.read_csv(REF / "data" / "Pastes.csv")
    res = fit_model(data, ModelSpec("p", "Pastes", "strength ~ 1 + (1 | batch/cask)", engine="statsmodels"))
    assert res.details["groups"] == "batch"  # nested: cask:batch within batch
    assert set(res.varcorr["group"]) == {"batch", "cask:batch", "Residual"}
    data = pd.read_csv(REF / "data" / "Penicillin.csv")
    res = fit_model(
        data,
        ModelSpec("p", "Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", engine="statsmodels", reml=False),
    )
    assert res.details["groups"].startswith("(one group")
    assert res.ngroups == {"plate": 24, "sample": 6}


def test_gaussian_offset_is_subtracted(bp_data):
    data = bp_data.assign(base=100.0)
    spec = ModelSpec("m", "d", "bp ~ time + offset(base) + (1 | hospital_id) + (1 | patient_id)")
    mix, sm = fit_model(data, spec), fit_model(data, ModelSpec(**{**spec.__dict__, "engine": "statsmodels"}))
    assert sm.fixef["estimate"].iloc[0] == pytest.approx(mix.fixef["estimate"].iloc[0], rel=1e-6)
    assert sm.fixef["estimate"].iloc[0] == pytest.approx(118.9145927 - 100, rel=1e-6)
    np.testing.assert_allclose(sm.fitted, mix.fitted, rtol=1e-6)


# ---- binomial / Poisson: variational Bayes, labelled ---------------------------------


def test_variational_glmm_is_labelled_and_reproducible():
    cbpp = pd.read_csv(REF / "data" / "cbpp.csv")
    spec = ModelSpec(
        "cbpp", "cbpp", "incidence ~ period + (1 | herd)", "poisson", engine="statsmodels", approximation="variational"
    )
    res = fit_model(cbpp, spec, factors=("period",))
    again = fit_model(cbpp, spec, factors=("period",))
    pd.testing.assert_frame_equal(res.fixef, again.fixef)  # fixed seed
    assert res.ok and res.converged
    stats = extract.glance(res)
    assert stats["logLik"] is None and stats["AIC"] is None and stats["maximum_likelihood"] is False
    assert "not maximum likelihood" in stats["method"]
    assert stats["engine_details"]["prior"]["fixed_effects"] == "normal(0, 2)"
    for table in (extract.tidy(res), extract.variance_components(res), extract.random_effects(res)):
        assert (table["method"] == "variational Bayes (not maximum likelihood)").all()
    assert extract.tidy(res)["p_value"].isna().all()  # no likelihood, no Wald test
    # near the Laplace ML fit, not equal to it (measured: herd variance 0.305 vs 0.250)
    ml = fit_model(cbpp, ModelSpec("cbpp", "cbpp", spec.formula, "poisson"), factors=("period",))
    assert list(res.fixef["term"]) == list(ml.fixef["term"])
    assert res.fixef["estimate"].to_numpy() == pytest.approx(ml.fixef["estimate"].to_numpy(), abs=0.1)
    assert res.varcorr["variance"].item() != pytest.approx(ml.varcorr["variance"].item(), rel=0.01)
    assert (res.fitted > 0).all() and len(res.ranef) == 15


def test_glmm_without_approximation_is_refused(bp_data):
    spec = ModelSpec("h", "bp_study", "hypertension ~ time + (1 | hospital_id)", "binomial", engine="statsmodels")
    with pytest.raises(GlmmError, match="approximation: variational"):
        fit_model(bp_data, spec)
