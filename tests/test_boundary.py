"""The singular-fit warning names the parameter on its boundary: a variance at zero, or
a correlation at +-1 while both variances are well above zero (lme4's values of both
cases are in tests/reference/plots_and_walkthrough.txt)."""

import numpy as np
import pandas as pd
import pytest

from glmm_steps.engines.base import ModelSpec
from glmm_steps.engines.boundary import boundary_message, boundary_parameters
from glmm_steps.fit import fit_model
from tests.conftest import REFERENCE


def _vc(rows):
    return pd.DataFrame(rows, columns=["group", "term", "variance", "sd", "correlation"])


def test_variance_at_zero_is_named():
    vc = _vc([["Batch", "(Intercept)", 0.0, 0.0, np.nan], ["Residual", "(Intercept)", 13.8, 3.7, np.nan]])
    assert boundary_parameters(vc) == ["the variance of (Intercept) for Batch is estimated as zero"]


def test_correlation_at_minus_one_is_named_not_called_a_zero_variance():
    vc = _vc(
        [
            ["g", "(Intercept)", 2.32, np.sqrt(2.32), np.nan],
            ["g", "x", 0.098, np.sqrt(0.098), np.nan],
            ["g", "cor((Intercept),x)", -np.sqrt(2.32 * 0.098), np.nan, -1.0],
            ["Residual", "(Intercept)", 25.0, 5.0, np.nan],
        ]
    )
    (found,) = boundary_parameters(vc)
    assert found == "the correlation of (Intercept) and x for g is estimated at -1 (SDs 1.52 and 0.313)"
    assert "zero" not in boundary_message(vc)


def test_regular_fit_has_nothing_on_the_boundary():
    vc = _vc(
        [
            ["g", "(Intercept)", 2.0, np.sqrt(2.0), np.nan],
            ["g", "x", 0.5, np.sqrt(0.5), np.nan],
            ["g", "cor((Intercept),x)", 0.5, np.nan, 0.5],
            ["Residual", "(Intercept)", 1.0, 1.0, np.nan],
        ]
    )
    assert boundary_parameters(vc) == []


def test_three_terms_in_a_rank_deficient_covariance():
    # x2 = x1 - intercept in distribution: no pairwise correlation is +-1, the matrix is singular
    a = np.array([[1.0, 0.5], [0.0, np.sqrt(0.75)]])
    cov2 = a.T @ a
    w = np.array([-1.0, 1.0])
    cov = np.zeros((3, 3))
    cov[:2, :2] = cov2
    cov[2, :2] = cov[:2, 2] = cov2 @ w
    cov[2, 2] = w @ cov2 @ w
    terms = ["(Intercept)", "x1", "x2"]
    rows = [["g", t, cov[i, i], np.sqrt(cov[i, i]), np.nan] for i, t in enumerate(terms)]
    rows += [
        ["g", f"cor({terms[i]},{terms[j]})", cov[i, j], np.nan, cov[i, j] / np.sqrt(cov[i, i] * cov[j, j])]
        for i in range(3)
        for j in range(i + 1, 3)
    ]
    assert boundary_parameters(_vc(rows)) == [
        "the covariance matrix of g is singular: x2 is a combination of (Intercept), x1"
    ]


@pytest.mark.parametrize("engine", ["mixedlm", "statsmodels"])
def test_a_real_zero_variance_is_named(engine):
    # lme4: Dyestuff2's batch variance is 0
    dyestuff2 = pd.read_csv(REFERENCE / "data" / "Dyestuff2.csv")
    fit = fit_model(dyestuff2, ModelSpec("d2", "d", "Yield ~ 1 + (1 | Batch)", engine=engine))
    assert fit.singular
    assert "boundary (singular) fit: the variance of (Intercept) for Batch is estimated as zero" in fit.warnings


def test_a_real_correlation_at_one_is_named(bp_data):
    # lme4 on the reference file: SDs 1.5418 and 0.3133, correlation 1.0000 (the
    # statsmodels engine's optimizer stops short of this boundary: not compared)
    fit = fit_model(bp_data, ModelSpec("bp", "d", "bp ~ time + (time | hospital_id)"))
    assert fit.singular
    (warning,) = [w for w in fit.warnings if w.startswith("boundary")]
    assert warning.startswith(
        "boundary (singular) fit: the correlation of (Intercept) and time for hospital_id "
        "is estimated at +1 (SDs 1.54 and 0.313"
    )
    assert not any("zero" in w for w in fit.warnings)
