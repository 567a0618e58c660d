"""The formula language against lme4: every transform, term form and contrast of the
formula section of the README, fitted in R by tests/reference/formula_reference.R on
real data (lme4, nlme, mlmRev) and compared here, without R, for every engine that
fits the case: fixed effects by name, standard errors, variance components,
correlations, residual SD, logLik and nobs, at the tolerances of
tests/test_lme4_reference.py. Also R's poly() and scale() numbers, and R's sort order
of text (the order factor levels take)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_lme4_reference import (
    COR_ATOL,
    FIXEF_ATOL,
    FIXEF_RTOL,
    LOGLIK_PER_OBS,
    SE_ATOL,
    SE_RTOL,
    SIGMA_RTOL,
    VAR_ATOL,
    VAR_RTOL,
    _close,
    _rel,
)

from glmm_steps.engines.base import FitResult, ModelSpec
from glmm_steps.errors import GlmmError
from glmm_steps.fit import fit_model
from glmm_steps.formula import parse
from glmm_steps.model_matrix import build, r_sort_key

REF = Path(__file__).parent / "reference"
CASES = pd.read_csv(REF / "formula_cases.csv", keep_default_na=False)
FIXTURES = pd.read_csv(REF / "formula_fixtures.csv", keep_default_na=False)
CHECKS = ("fixef", "se", "variance", "correlation", "sigma", "loglik", "nobs")
ENGINES = {"mixedlm": ("gaussian", "binomial"), "statsmodels": ("gaussian",)}
# Cases statsmodels' MixedLM cannot express (checked to be refused in one line).
STATSMODELS_REFUSES = set()
# lme4 warns it stopped short on contra_quad (max|grad| = 0.0039 > 0.002: the age^2
# column is on a scale 1000 times age's); the engine still agrees at the tolerances.
# Where a random-effect variance differs by 1.2e-4..1.3e-4 relative (tolerance 1e-4),
# the engines' optimum has the higher log-likelihood (measured: contra_quad -1186.364291
# vs lme4 -1186.364353; contra_interaction -1206.387056 vs -1206.387102; exam_minus REML
# -4666.3679561 vs -4666.3679563, both engines agreeing to 1e-11): lme4 stopped short.
_SHORT = "lme4's optimizer stops short here: the engine's logLik is higher (see the comment above)"
KNOWN: dict[tuple[str, str, str], str] = {
    ("mixedlm", "contra_quad", "variance"): _SHORT,
    ("mixedlm", "contra_interaction", "variance"): _SHORT,
    ("mixedlm", "exam_minus", "variance"): _SHORT,
    ("statsmodels", "exam_minus", "variance"): _SHORT,
}


def _ref(case: str, quantity: str) -> pd.DataFrame:
    sub = FIXTURES[(FIXTURES["case"] == case) & (FIXTURES["quantity"] == quantity)]
    return sub.assign(value=sub["value"].astype(float))


@functools.cache
def _fit(case: str, engine: str) -> FitResult:
    row = CASES.set_index("case").loc[case]
    frame = pd.read_csv(REF / "data" / f"{row['data']}.csv")
    spec = ModelSpec(
        name=case,
        dataset=row["data"],
        formula=row["formula"],
        family=row["family"],
        reml=str(row["reml"]).upper() == "TRUE",
        engine=engine,
    )
    return fit_model(frame, spec, factors=json.loads(row["factors"]))


def _params():
    for case, family in zip(CASES["case"], CASES["family"]):
        for engine, families in ENGINES.items():
            if family not in families:
                continue
            for check in CHECKS:
                reason = KNOWN.get((engine, case, check))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                yield pytest.param(case, engine, check, marks=marks, id=f"{case}-{engine}-{check}")


def _compare(case: str, quantity: str, py: dict, rtol: float, atol: float, by_group: bool = False) -> None:
    ref = _ref(case, quantity)
    keys = list(zip(ref["group"], ref["term"])) if by_group else list(ref["term"])
    assert sorted(py) == sorted(keys), f"{case} {quantity}: {sorted(py)} vs lme4 {sorted(keys)}"
    bad = [
        f"{k}: py={py[k]:.10g} lme4={r:.10g} rel={_rel(py[k], r):.3g}"
        for k, r in zip(keys, ref["value"])
        if not _close(py[k], r, rtol, atol)
    ]
    assert not bad, f"{case} {quantity}: " + "; ".join(bad)


@pytest.mark.slow
@pytest.mark.parametrize(("case", "engine", "check"), list(_params()))
def test_formula_against_lme4(case: str, engine: str, check: str) -> None:
    try:
        res = _fit(case, engine)
    except GlmmError as e:
        assert engine == "statsmodels" and case in STATSMODELS_REFUSES and "\n" not in str(e), str(e)
        return
    assert res.ok and res.converged, f"{case}: {res.error} {res.warnings}"
    fixef = res.fixef.set_index("term")
    vc = res.varcorr
    if check == "fixef":
        _compare(case, "fixef", fixef["estimate"].to_dict(), FIXEF_RTOL, FIXEF_ATOL)
    elif check == "se":
        _compare(case, "se", fixef["std_error"].to_dict(), SE_RTOL, SE_ATOL)
    elif check == "variance":
        rows = vc[(vc["group"] != "Residual") & ~vc["term"].str.startswith("cor(")]
        _compare(
            case,
            "variance",
            {(g, t): v for g, t, v in zip(rows["group"], rows["term"], rows["variance"])},
            VAR_RTOL,
            VAR_ATOL,
            by_group=True,
        )
    elif check == "correlation":
        rows = vc[vc["term"].str.startswith("cor(")]
        _compare(
            case,
            "correlation",
            {(g, t): c for g, t, c in zip(rows["group"], rows["term"], rows["correlation"])},
            0.0,
            COR_ATOL,
            by_group=True,
        )
    elif check == "sigma":
        resid = vc[vc["group"] == "Residual"]
        ref = _ref(case, "sigma")
        assert len(resid) == len(ref)
        if len(ref):
            p, r = float(resid["sd"].iloc[0]), float(ref["value"].iloc[0])
            assert _close(p, r, SIGMA_RTOL, 0.0), f"{case} sigma: py={p} lme4={r}"
    elif check == "loglik":
        r = float(_ref(case, "logLik")["value"].iloc[0])
        assert abs(res.loglik - r) / res.nobs <= LOGLIK_PER_OBS, f"{case} logLik: py={res.loglik} lme4={r}"
    elif check == "nobs":
        assert res.nobs == int(_ref(case, "nobs")["value"].iloc[0])


def test_contra_quad_close_to_lme4_where_lme4_stopped() -> None:
    """lme4 warns it stopped short on the issue's Contraception model; the engine's
    optimum is at least as good (logLik no lower) and its estimates within 1e-3."""
    res = _fit("contra_quad", "mixedlm")
    r = float(_ref("contra_quad", "logLik")["value"].iloc[0])
    assert res.loglik >= r - 1e-6
    ref = _ref("contra_quad", "fixef").set_index("term")["value"]
    py = res.fixef.set_index("term")["estimate"]
    assert sorted(py.index) == sorted(ref.index)
    assert all(_close(py[t], ref[t], 1e-3, 1e-5) for t in ref.index), (py - ref).to_dict()


@pytest.mark.parametrize("degree", [2, 3])
def test_poly_coefficients_and_columns_equal_r(degree: int) -> None:
    """poly(Days, k): R's alpha and norm2, its columns, and predict() on new values
    (reapplying the stored state), all to 1e-10."""
    frame = pd.read_csv(REF / "data" / "sleepstudy_period.csv")
    f = parse(f"Reaction ~ poly(Days, {degree}) + (1 | Subject)")
    mm = build(f, frame)
    key = f"poly(Days, {degree})"
    case = f"poly{degree}"
    np.testing.assert_allclose(mm.state["poly"][key]["alpha"], _ref(case, "poly_alpha")["value"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(mm.state["poly"][key]["norm2"], _ref(case, "poly_norm2")["value"], rtol=1e-12)
    cols = _ref(case, "poly_column")
    X = mm.fixed_frame()
    for row, k, v in zip(cols["group"], cols["term"], cols["value"]):
        assert abs(X[f"{key}{k}"].iloc[int(row) - 1] - v) <= 1e-10
    pred = _ref(case, "poly_predict")
    new = pd.DataFrame({"Reaction": 1.0, "Subject": 1, "Days": sorted(set(pred["group"].astype(float)))})
    Xn = build(f, new, state=json.loads(json.dumps(mm.state))).fixed_frame()
    for x, k, v in zip(pred["group"].astype(float), pred["term"], pred["value"]):
        got = Xn[f"{key}{k}"][new["Days"] == x].iloc[0]
        assert abs(got - v) <= 1e-10, (x, k, got, v)


def test_scale_state_equals_r_and_is_reapplied() -> None:
    frame = pd.read_csv(REF / "data" / "Orthodont.csv")
    f = parse("distance ~ scale(age) + (1 | Subject)")
    mm = build(f, frame)
    s = mm.state["scale"]["scale(age)"]
    assert abs(s["center"] - _ref("scale_age", "scale_center")["value"].iloc[0]) <= 1e-12
    assert abs(s["scale"] - _ref("scale_age", "scale_scale")["value"].iloc[0]) <= 1e-12
    # New rows are coded with the fitted centre and SD, never their own.
    new = frame.iloc[:2].copy()
    again = build(f, new, state=mm.state).fixed_frame()["scale(age)"].to_numpy()
    np.testing.assert_allclose(again, mm.fixed_frame()["scale(age)"].to_numpy()[:2], rtol=0, atol=1e-15)
    assert np.std(again) > 0 and abs(np.mean(again)) > 0.1  # not re-centred on the 4 rows


def test_text_sorts_as_r_sorts_it() -> None:
    words = pd.read_csv(REF / "formula_sort.csv", keep_default_na=False)["text"].tolist()
    assert sorted(words, key=r_sort_key) == words
    assert sorted(reversed(words), key=r_sort_key) == words


def test_fit_records_state_and_term_columns() -> None:
    res = _fit("contra_interaction", "mixedlm")
    assert res.term_columns["age:urban"] == ["age:urbanY"]
    assert res.term_columns["factor(livch)"] == ["factor(livch)1", "factor(livch)2", "factor(livch)3+"]
    assert res.transform_state["factors"]["factor(livch)"]["levels"] == ["0", "1", "2", "3+"]
    json.dumps(res.transform_state)  # plain JSON values


ALGEBRA = FIXTURES[FIXTURES["quantity"] == "column"]


@pytest.mark.parametrize("text", list(dict.fromkeys(ALGEBRA["case"])))
def test_columns_and_terms_equal_r_model_matrix(text: str) -> None:
    """The term algebra (a/b, %in%, ^, -, 0 +, :, *) and the names of every transform:
    column names in R's order and each column's term (R's assign), as model.matrix()
    makes them on the Exam data."""
    frame = pd.read_csv(REF / "data" / "Exam.csv")
    ref = ALGEBRA[ALGEBRA["case"] == text].sort_values("value", key=lambda v: v.astype(float))
    mm = build(parse(text + " + (1 | school)"), frame)
    assert mm.fixed_names == ref["term"].tolist()
    want: dict[str, list[str]] = {}
    for term, col in zip(ref["group"], ref["term"]):
        want.setdefault(term, []).append(col)
    assert mm.term_columns == want
    # every column holds numbers of the right shape, and the term map covers them all
    assert mm.X.shape == (len(frame), len(ref)) and np.isfinite(mm.X).all()
