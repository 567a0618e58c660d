"""Compare glmm_steps fits, with every engine that supports a case, to stored lme4 fits.

The fixtures were made by ``Rscript tests/reference/lme4_reference.R`` (see
tests/reference/README.md); this test does not need R. It is data-driven: one
case per row of tests/reference/lme4_cases.csv, each checked for fixed effects,
standard errors, variance components, correlations, residual sd, logLik,
deviance, AIC/BIC, nobs and levels per grouping factor, once per engine: mixedlm
fits every case, statsmodels the gaussian ones (its binomial/Poisson fits are
Bayesian approximations, not maximum likelihood, so lme4 is no reference for them).

Group names: glmm_steps names grouping factors as lme4 does (the column name, e.g.
``Subject``; ``cask:batch`` for the inner factor of ``batch/cask``; an uncorrelated
``(1 + Days || Subject)`` is one group ``Subject``, which the R script takes from
lme4's ``cnms`` rather than VarCorr's ``Subject.1``). Only the order differs: lme4
sorts random-effect terms by decreasing number of levels, glmm_steps keeps formula
order. Rows are matched by (group, term), never by position.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glmm_steps.engines.base import FitResult, ModelSpec
from glmm_steps.fit import fit_model

REF = Path(__file__).parent / "reference"
CASES = pd.read_csv(REF / "lme4_cases.csv", keep_default_na=False)
FIXTURES = pd.read_csv(REF / "lme4_fixtures.csv", keep_default_na=False)

# ---- tolerances -------------------------------------------------------------
# Two optimizers stopped at their own convergence criteria agree to roughly the
# square root of the objective's tolerance, so estimates are compared at 1e-4
# relative; a combined rule |py - r| <= rtol * |r| + atol keeps values near 0
# from demanding impossible relative precision.
FIXEF_RTOL, FIXEF_ATOL = 1e-4, 1e-6
# Standard errors are second derivatives at the optimum and move more with small
# differences in the estimates: 1e-3 relative.
SE_RTOL, SE_ATOL = 1e-3, 1e-8
# Variance components (diagonal of VarCorr): 1e-4 relative. The absolute part
# only matters for a variance that is (near) zero, e.g. a singular fit, where a
# relative comparison is meaningless; 1e-6 is negligible next to every nonzero
# variance in these cases (the smallest is ~0.1).
VAR_RTOL, VAR_ATOL = 1e-4, 1e-6
# Correlations are bounded in [-1, 1], so an absolute 1e-4 is the estimates' 1e-4
# relative at their own scale (a relative rule would demand too much near 0). Observed:
# every correlation within 3.3e-5 except where lme4's default tolPwrss leaves it off
# (slopes_binomial_laplace, 3.9e-4; listed below).
COR_ATOL = 1e-4
# Residual sd (gaussian): sqrt of a variance, so 1e-4 relative is generous.
SIGMA_RTOL = 1e-4
# logLik is a sum over observations: |logLik_py - logLik_r| / nobs <= 1e-6.
LOGLIK_PER_OBS = 1e-6
# Deviance / REMLcrit / AIC / BIC are -2 logLik plus constants: twice that.
CRIT_PER_OBS = 2e-6
# A GLMM's deviance() is the sum of squared conditional deviance residuals, a function
# of the estimates that is not stationary at the optimum (unlike logLik), so it moves
# at first order with them: compared like an estimate, 1e-4 relative.
GLMM_DEVIANCE_RTOL = 1e-4

# ---- known, explained disagreements -----------------------------------------
# Each entry is an (engine, case, check) that fails against lme4 at the tolerances
# above for a reason measured and documented in tests/reference/README.md. They
# are strict xfails: if the engine (or the fixtures) change so that they pass, the
# suite says so.
_GLMM_DEFAULT = (
    "cbpp_laplace",
    "bp_hypertension_laplace",
    "bp_adverse_laplace",
    "cbpp_agq9",
    "cbpp_poisson_offset",
    "slopes_binomial_laplace",
    "slopes_poisson_laplace",
)
_GLMM_ALL = _GLMM_DEFAULT + tuple(f"{c}_tolpwrss" for c in _GLMM_DEFAULT)
_AGQ = ("cbpp_agq9", "cbpp_agq9_tolpwrss")
_STALE_LDL2 = (
    "with lme4's default glmerControl(tolPwrss=1e-7) its Laplace log-determinant (ldL2) "
    "exceeds log det at the reported conditional modes by 6e-4..8e-4, so lme4 optimizes "
    "a slightly different objective; refit with tolPwrss=1e-10 (case *_tolpwrss) lme4 "
    "agrees with the engine"
)
_HESSIAN_SE = (
    "lme4's GLMM vcov() inverts the finite-difference Hessian over (theta, beta); the "
    "engine reports the RX-based vcov (lme4's vcov(use.hessian=FALSE)), checked as se_rx"
)
# On the Poisson random-slope cases lme4 stops 2e-5..1.4e-4 (relative) from the exact
# Laplace optimum, even with tolPwrss=1e-10: right at the 1e-4 tolerance, so a pass or a
# fail against lme4 there says nothing about the engine. Their estimates are judged by
# tests/test_exact_laplace.py instead, which asserts the measured claim (the engine is at
# the exact optimum, lme4 measurably further away) with a stated margin.
JUDGED_BY_EXACT_LAPLACE = {
    (c, q)
    for c in ("slopes_poisson_laplace", "slopes_poisson_laplace_tolpwrss")
    for q in ("fixef", "variance", "correlation")
}
_AGQ_SCALE = (
    "with nAGQ > 1 lme4's logLik leaves out the saturated log-likelihood (lme4 issue "
    "#161): -50.005 vs the engine's -91.983 on cbpp, a gap of exactly the fixture "
    "saturated_logLik (-41.978); checked on the full scale as loglik_full"
)
_KNOWN_MIXEDLM: dict[tuple[str, str], str] = {
    # Estimates of cbpp_agq9 agree with default controls (the stale ldL2 is a
    # Laplace-only effect), so only the Laplace cases are listed.
    **{(c, "fixef"): _STALE_LDL2 for c in _GLMM_DEFAULT if c not in ("cbpp_agq9", "slopes_poisson_laplace")},
    **{(c, "variance"): _STALE_LDL2 for c in _GLMM_DEFAULT if c not in ("cbpp_agq9", "slopes_poisson_laplace")},
    # The binomial slope case's correlation is off like its fixed effects and variances
    # (3.9e-4 with default controls, 3.1e-6 with tolPwrss=1e-10).
    ("slopes_binomial_laplace", "correlation"): _STALE_LDL2,
    # cbpp has only 56 rows, so the ~2.8e-4..4.6e-4 logLik shift exceeds 1e-6 per row.
    **{(c, q): _STALE_LDL2 for c in ("cbpp_laplace", "cbpp_poisson_offset") for q in ("loglik", "aic_bic")},
    **{(c, "se"): _HESSIAN_SE for c in _GLMM_ALL},
    **{(c, q): _AGQ_SCALE for c in _AGQ for q in ("loglik", "aic_bic")},
}
KNOWN_DISAGREEMENTS: dict[tuple[str, str, str], str] = {
    ("mixedlm", c, q): why for (c, q), why in _KNOWN_MIXEDLM.items()
}

CHECKS = (
    "fit_ok",
    "fixef",
    "se",
    "se_rx",
    "variance",
    "correlation",
    "sigma",
    "loglik",
    "loglik_full",
    "deviance",
    "aic_bic",
    "nobs",
    "ngroups",
)
# statsmodels fits gaussian cases only (see the module docstring).
ENGINES = {"mixedlm": ("gaussian", "binomial", "poisson"), "statsmodels": ("gaussian",)}


def _close(py: float, r: float, rtol: float, atol: float) -> bool:
    return math.isfinite(py) and abs(py - r) <= rtol * abs(r) + atol


def _rel(py: float, r: float) -> float:
    return abs(py - r) / abs(r) if r != 0 else abs(py - r)


def _case(name: str) -> pd.Series:
    return CASES.set_index("case").loc[name]


@functools.cache
def _fit(name: str, engine: str) -> FitResult:
    row = _case(name)
    frame = pd.read_csv(REF / "data" / f"{row['data']}.csv")
    # Columns that are factors in R but look numeric in the CSV (cbpp's period): the
    # same `factors` a dataset declares in the config.
    factors = tuple(filter(None, str(row["factors"]).split(";")))
    spec = ModelSpec(
        name=name,
        dataset=str(row["data"]),
        formula=str(row["formula"]),
        family=str(row["family"]),
        reml=str(row["reml"]).upper() == "TRUE",
        nagq=int(row["nagq"]),
        engine=engine,
    )
    return fit_model(frame, spec, factors=factors)


def _ref(name: str, quantity: str) -> pd.DataFrame:
    sub = FIXTURES[(FIXTURES["case"] == name) & (FIXTURES["quantity"] == quantity)]
    return sub.assign(value=sub["value"].astype(float))


def _ref_scalar(name: str, quantity: str) -> float:
    sub = _ref(name, quantity)
    assert len(sub) == 1, f"{name}: expected one {quantity} fixture, found {len(sub)}"
    return float(sub["value"].iloc[0])


def _compare_terms(name: str, quantity: str, py: pd.Series, rtol: float, atol: float) -> None:
    """Compare lme4's per-term ``quantity`` with ``py`` (indexed by term)."""
    ref = _ref(name, quantity)
    assert len(ref), f"{name}: no {quantity} fixtures"
    assert sorted(py.index) == sorted(ref["term"]), f"{name}: terms {list(py.index)} vs lme4 {list(ref['term'])}"
    bad = []
    for term, r in zip(ref["term"], ref["value"]):
        p = float(py[term])
        if not _close(p, r, rtol, atol):
            bad.append(f"{term}: py={p:.10g} lme4={r:.10g} rel={_rel(p, r):.3g}")
    assert not bad, f"{name} {quantity} (rtol={rtol}, atol={atol}): " + "; ".join(bad)


def _params():
    for name, family, nagq in zip(CASES["case"], CASES["family"], CASES["nagq"]):
        for engine, families in ENGINES.items():
            if family not in families:
                continue
            for check in CHECKS:
                if (check == "se_rx" and family == "gaussian") or (check == "loglik_full" and nagq == 1):
                    continue
                if engine == "mixedlm" and (name, check) in JUDGED_BY_EXACT_LAPLACE:
                    continue
                reason = KNOWN_DISAGREEMENTS.get((engine, name, check))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                yield pytest.param(name, engine, check, marks=marks, id=f"{name}-{engine}-{check}")


@pytest.mark.parametrize(("name", "engine", "check"), list(_params()))
def test_lme4_reference(name: str, engine: str, check: str) -> None:
    res = _fit(name, engine)
    if check == "fit_ok":
        assert res.ok, f"{name}: fit failed: {res.error}"
        assert res.converged, f"{name}: not converged: {res.warnings}"
        return
    assert res.ok, f"{name}: fit failed: {res.error}"
    fixef = res.fixef.set_index("term")
    vc = res.varcorr
    if check == "fixef":
        _compare_terms(name, "fixef", fixef["estimate"], FIXEF_RTOL, FIXEF_ATOL)
    elif check == "se":
        _compare_terms(name, "se", fixef["std_error"], SE_RTOL, SE_ATOL)
    elif check == "se_rx":
        _compare_terms(name, "se_rx", fixef["std_error"], SE_RTOL, SE_ATOL)
    elif check == "variance":
        ref = _ref(name, "variance")
        var_rows = vc[(vc["group"] != "Residual") & ~vc["term"].str.startswith("cor(")]
        py = {(g, t): v for g, t, v in zip(var_rows["group"], var_rows["term"], var_rows["variance"])}
        want = list(zip(ref["group"], ref["term"]))
        assert sorted(py) == sorted(want), f"{name}: variance rows {sorted(py)} vs lme4 {sorted(want)}"
        bad = [
            f"{g}/{t}: py={py[(g, t)]:.10g} lme4={r:.10g} rel={_rel(py[(g, t)], r):.3g}"
            for (g, t), r in zip(want, ref["value"])
            if not _close(py[(g, t)], r, VAR_RTOL, VAR_ATOL)
        ]
        assert not bad, f"{name} variance (rtol={VAR_RTOL}, atol={VAR_ATOL}): " + "; ".join(bad)
    elif check == "correlation":
        ref = _ref(name, "correlation")
        cor_rows = vc[vc["term"].str.startswith("cor(")]
        py = {(g, t): c for g, t, c in zip(cor_rows["group"], cor_rows["term"], cor_rows["correlation"])}
        want = list(zip(ref["group"], ref["term"]))
        assert sorted(py) == sorted(want), f"{name}: correlation rows {sorted(py)} vs lme4 {sorted(want)}"
        bad = [
            f"{g}/{t}: py={py[(g, t)]:.10g} lme4={r:.10g}"
            for (g, t), r in zip(want, ref["value"])
            if not _close(py[(g, t)], r, 0.0, COR_ATOL)
        ]
        assert not bad, f"{name} correlation (atol={COR_ATOL}): " + "; ".join(bad)
    elif check == "sigma":
        resid = vc[vc["group"] == "Residual"]
        if res.spec.family != "gaussian":
            assert resid.empty, f"{name}: a {res.spec.family} fit has no residual variance"
            return
        assert len(resid) == 1, f"{name}: expected one Residual row"
        p, r = float(resid["sd"].iloc[0]), _ref_scalar(name, "sigma")
        assert _close(p, r, SIGMA_RTOL, 0.0), f"{name} sigma: py={p:.10g} lme4={r:.10g} rel={_rel(p, r):.3g}"
    elif check in ("loglik", "loglik_full"):
        r = _ref_scalar(name, "logLik")
        if check == "loglik_full":
            r += _ref_scalar(name, "saturated_logLik")
        per_obs = abs(res.loglik - r) / res.nobs
        assert per_obs <= LOGLIK_PER_OBS, f"{name} logLik: py={res.loglik:.12g} lme4={r:.12g} |diff|/nobs={per_obs:.3g}"
    elif check == "deviance":
        # lme4 reports REMLcrit for REML fits (deviance() is then not the criterion).
        quantity = "REMLcrit" if res.spec.family == "gaussian" and res.spec.reml else "deviance"
        r = _ref_scalar(name, quantity)
        if res.spec.family != "gaussian":
            assert _close(res.deviance, r, GLMM_DEVIANCE_RTOL, 0.0), (
                f"{name} deviance: py={res.deviance:.12g} lme4={r:.12g} rel={_rel(res.deviance, r):.3g}"
            )
            return
        per_obs = abs(res.deviance - r) / res.nobs
        assert per_obs <= CRIT_PER_OBS, (
            f"{name} {quantity}: py={res.deviance:.12g} lme4={r:.12g} |diff|/nobs={per_obs:.3g}"
        )
    elif check == "aic_bic":
        for quantity, p in (("AIC", res.aic), ("BIC", res.bic)):
            r = _ref_scalar(name, quantity)
            per_obs = abs(p - r) / res.nobs
            assert per_obs <= CRIT_PER_OBS, f"{name} {quantity}: py={p:.12g} lme4={r:.12g} |diff|/nobs={per_obs:.3g}"
    elif check == "nobs":
        assert res.nobs == int(_ref_scalar(name, "nobs"))
    elif check == "ngroups":
        ref = _ref(name, "ngroups")
        assert res.ngroups == {g: int(v) for g, v in zip(ref["group"], ref["value"])}
    else:  # pragma: no cover
        raise AssertionError(check)


def test_every_fixture_quantity_is_checked() -> None:
    """Guard against a fixture kind the test silently ignores."""
    known = {
        "fixef",
        "se",
        "se_rx",
        "variance",
        "correlation",
        "sigma",
        "logLik",
        "saturated_logLik",
        "REMLcrit",
        "deviance",
        "AIC",
        "BIC",
        "nobs",
        "ngroups",
    }
    assert set(FIXTURES["quantity"]) <= known
    assert set(FIXTURES["case"]) == set(CASES["case"])
    assert np.isfinite(FIXTURES["value"].astype(float)).all()


# Quantities that are counts: R prints them as integers under %.17g.
_COUNTS = {"nobs", "ngroups", "npar", "Df"}
# A computed double whose %.17g form ends in k zeros (which %g strips) is printed with
# 17 - k significant digits, with probability 10**-k. Requiring 13 digits catches a
# value rounded to 12 digits or fewer (as one slopes_* value once was) and, on the
# ~400 values, raises a false alarm on a regeneration with probability about 0.4%;
# if it ever does, the message shows the value, and rerunning R shows whether it is real.
_MIN_DIGITS = 13


def _significant_digits(text: str) -> int:
    mantissa = text.lstrip("-").split("e")[0]
    digits = mantissa.replace(".", "").lstrip("0")
    return len(digits if "." in mantissa else digits.rstrip("0"))


@pytest.mark.parametrize("table", ["lme4_fixtures.csv", "lme4_anova.csv"])
def test_every_fixture_value_is_the_scripts_full_precision_output(table: str) -> None:
    """Each value is exactly what lme4_reference.R's ``sprintf("%.17g", x)`` prints (not
    write.csv's 15 digits, not rounded by hand): it round-trips through %.17g, counts
    are integers, and every other value has at least ``_MIN_DIGITS`` significant digits."""
    values = pd.read_csv(REF / table, keep_default_na=False, dtype=str)
    bad = []
    for row in values.itertuples(index=False):
        text = row.value
        x = float(text)
        where = f"{'/'.join(str(v) for v in row[:-1])}={text}"
        # the R script's own format, spelled as R's sprintf spells it
        if "%.17g" % x != text:  # noqa: UP031
            bad.append(f"{where} (%.17g prints {'%.17g' % x})")  # noqa: UP031
        elif row.quantity in _COUNTS:
            if not x.is_integer():
                bad.append(f"{where} (a count that is not an integer)")
        elif x != 0 and _significant_digits(text) < _MIN_DIGITS:  # 0: a singular fit's variance
            bad.append(f"{where} ({_significant_digits(text)} significant digits)")
    assert not bad, f"{table}: values not written by the script's %.17g: " + "; ".join(bad)


def test_cases_left_to_the_exact_laplace_test_are_judged_there() -> None:
    """The estimates not compared with lme4 here (JUDGED_BY_EXACT_LAPLACE) are each
    asserted by tests/test_exact_laplace.py, which compares fixed effects, variances and
    the correlation with the exact optimum."""
    from test_exact_laplace import test_engine_is_closer_than_lme4_to_the_exact_laplace_optimum as judged

    cases = {c for m in judged.pytestmark if m.name == "parametrize" for c in m.args[1]}
    assert {c for c, _ in JUDGED_BY_EXACT_LAPLACE} == cases
    assert {q for _, q in JUDGED_BY_EXACT_LAPLACE} == {"fixef", "variance", "correlation"}
