"""Profile confidence intervals against lme4's confint(method = "profile") for every
parameter (fixed effects, random-effect SDs and correlations, residual SD), LMMs and
a GLMM; fixtures from tests/reference/inference_reference.R."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glmm_steps import extract, profile
from glmm_steps.engines.base import ModelSpec
from glmm_steps.errors import ConfigError
from glmm_steps.fit import fit_model

REF = Path(__file__).parent / "reference"
CASES = pd.read_csv(REF / "inference_cases.csv", keep_default_na=False).set_index("case")
FIXTURES = pd.read_csv(REF / "inference_fixtures.csv")
# The tolerance. lme4 interpolates its profile with a spline; the limits here are
# the exact roots, which lme4's agree with to about 5e-5 on these cases.
PROFILE_RTOL = 1e-3


@functools.cache
def _fit(case: str):
    row = CASES.loc[case]
    factors = tuple(f for f in row["factors"].split(";") if f)
    spec = ModelSpec(
        name=case,
        dataset=row["data"],
        formula=row["formula"],
        family=row["family"],
        reml=row["reml"] != "false",
        inference="wald",
        intervals="profile",
    )
    result = fit_model(pd.read_csv(REF / "data" / f"{row['data']}.csv"), spec, factors=factors)
    assert result.ok and not result.warnings, (case, result.error, result.warnings)
    return result


def _lme4_name(group: str, term: str) -> str:
    """lme4's confint(oldNames = FALSE) name of a variance_components row."""
    if group == "Residual":
        return "sigma"
    if term.startswith("cor("):
        a, b = term[4:-1].split(",")
        return f"cor_{b}.{a}|{group}"
    return f"sd_{term}|{group}"


def _ref(case: str) -> pd.DataFrame:
    rows = FIXTURES[FIXTURES["case"] == case]
    low = rows[rows["quantity"] == "profile_low"].set_index("term")["value"].astype(float)
    high = rows[rows["quantity"] == "profile_high"].set_index("term")["value"].astype(float)
    return pd.DataFrame({"low": low, "high": high})


def _close(got: float, want: float) -> bool:
    # An SD's lower limit of exactly 0 (Pastes' batch) has no relative scale.
    return abs(got - want) <= PROFILE_RTOL * abs(want) + (1e-6 if want == 0 else 0)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["sleep_slopes", "penicillin", "pastes_nested", "cake_numeric", "cbpp"])
def test_profile_limits_match_lme4(case: str) -> None:
    res = _fit(case)
    ref = _ref(case)
    vc = extract.variance_components(res)
    fe = extract.tidy(res)
    got = {_lme4_name(g, t): (lo, hi) for g, t, lo, hi in zip(vc["group"], vc["term"], vc["conf_low"], vc["conf_high"])}
    got |= {t: (lo, hi) for t, lo, hi in zip(fe["term"], fe["conf_low"], fe["conf_high"])}
    assert sorted(got) == sorted(ref.index), f"{case}: parameters {sorted(got)} vs lme4 {sorted(ref.index)}"
    bad = [
        f"{name}: ({got[name][0]:.7g}, {got[name][1]:.7g}) vs lme4 ({r.low:.7g}, {r.high:.7g})"
        for name, r in ref.iterrows()
        if not (_close(got[name][0], r.low) and _close(got[name][1], r.high))
    ]
    assert not bad, f"{case} (rtol {PROFILE_RTOL}): " + "; ".join(bad)
    assert (fe["interval"] == "profile").all()


def test_profile_interval_of_a_quadratic_deviance_is_the_wald_interval() -> None:
    """On an exactly quadratic deviance (a normal likelihood) with a correlated nuisance
    parameter, the profile limits are estimate +/- 1.96 x the marginal SE."""
    cov = np.array([[4.0, 1.5], [1.5, 1.0]])
    prec = np.linalg.inv(cov)
    est = np.array([1.0, -2.0])

    def deviance(par):
        d = par - est
        return float(d @ prec @ d)

    low, high = profile.profile_limits(
        deviance, est, 0, np.array([-np.inf, -np.inf]), np.array([np.inf, np.inf]), np.array([1.0, 1.0])
    )
    assert low == pytest.approx(1.0 - 1.959963985 * 2.0, rel=1e-6)
    assert high == pytest.approx(1.0 + 1.959963985 * 2.0, rel=1e-6)
    # a bound the profile does not reach is the limit, as lme4 reports an SD's 0
    low, _ = profile.profile_limits(
        deviance, est, 0, np.array([0.5, -np.inf]), np.array([np.inf, np.inf]), np.array([1.0, 1.0])
    )
    assert low == 0.5


def test_profile_refused_for_statsmodels() -> None:
    with pytest.raises(ConfigError, match="models.m.intervals"):
        profile.check("m", {"engine": "statsmodels", "intervals": "profile"})


@pytest.mark.slow
def test_study_with_profile_intervals_has_variance_component_coverage() -> None:
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
                    "coefficients": {"time": 0.5},
                    "random_sd": {"hospital_id": 2.0, "patient_id": 1.0},
                    "residual_sd": 2.0,
                }
            },
        }
    )
    spec = ModelSpec.from_config(
        "s", {"dataset": "d", "formula": "bp ~ time + (1 | hospital_id) + (1 | patient_id)", "intervals": "profile"}
    )
    estimates, fits = run_batch(design, spec, "base", [(i, 300 + i) for i in range(4)])
    sds = estimates[estimates["effect"] == "ran_pars"]
    assert sds["conf_low"].notna().all() and (sds["conf_low"] <= sds["estimate"]).all()
    assert (sds["estimate"] <= sds["conf_high"]).all()
    table = recovery.summarise(estimates, fits)
    assert table[table["effect"] == "ran_pars"]["coverage"].notna().all()
