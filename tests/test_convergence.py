"""Fit faults: the Hessian check on known functions and on real fits, non-convergence,
and how each is recorded (status, fit_stats.json, the run summary)."""

import json

import numpy as np
import pandas as pd
import pytest

from glmm_steps import extract
from glmm_steps.engines.base import FitResult, ModelSpec
from glmm_steps.engines.convergence import check_hessian, numerical_hessian
from glmm_steps.fit import fit_file, fit_model
from glmm_steps.summary import COLUMNS, status_line, summarize


def test_numerical_hessian_of_a_quadratic():
    a = np.array([[4.0, 1.0], [1.0, 3.0]])
    np.testing.assert_allclose(numerical_hessian(lambda x: x @ a @ x, np.array([0.3, 20.0])), 2 * a, rtol=1e-4)


def test_hessian_verdicts():
    free = np.array([True, True])
    assert check_hessian(lambda x: x[0] ** 2 + 3 * x[1] ** 2, np.zeros(2), free) == (True, None)
    ok, why = check_hessian(lambda x: x[0] ** 2 - x[1] ** 2, np.zeros(2), free)
    assert ok is False and "saddle point" in why
    ok, why = check_hessian(lambda x: x[0] ** 2, np.zeros(2), free)  # flat in x[1]
    assert ok is False and "not determined" in why
    # on a boundary (singular fit) flat directions are expected, not reported
    assert check_hessian(lambda x: x[0] ** 2, np.zeros(2), free, singular=True) == (True, None)
    # a saddle only below a lower bound of 0 is no saddle: the optimum sits on the bound
    assert check_hessian(lambda x: x[0] ** 2 - x[1] ** 2, np.array([0.0, 0.0]), np.array([True, False]))[0]
    ok, why = check_hessian(lambda x: np.log(x[0]) * 0 + x[1] ** 2, np.array([0.0, 1.0]), free)
    assert ok is None and "not finite" in why


def test_good_fit_passes_the_hessian_check(bp_data):
    r = fit_model(bp_data, ModelSpec("m", "d", "hypertension ~ time + (1 | hospital_id)", "binomial"))
    assert r.converged and r.hessian_ok is True and extract.status(r) == "ok"


def test_undetermined_fit_is_flagged():
    # Two rows per group and a random slope: each group's line goes through both of
    # its points, the residual variance runs to zero and the deviance is flat.
    frame = pd.DataFrame(
        {
            "g": [1, 1, 2, 2, 3, 3, 4, 4],
            "x": [-0.84, 0.13, -0.66, 0.16, 2.44, 0.44, 0.77, -0.79],
            "y": [2, 3, 2, 6, 0, 1, 2, 1],
        }
    )
    r = fit_model(frame, ModelSpec("m", "d", "y ~ 1 + (x | g)"))
    assert r.ok and r.hessian_ok is False
    assert extract.status(r) == "hessian_not_pd"
    assert any("not determined by the data" in w for w in r.warnings)


def test_separation_does_not_converge():
    rng = np.random.default_rng(5)
    x = rng.normal(size=60)
    frame = pd.DataFrame({"g": np.repeat(np.arange(6), 10), "x": x, "b": (x > 0).astype(int)})
    r = fit_model(frame, ModelSpec("m", "d", "b ~ x + (1 | g)", "binomial"))
    assert r.ok and not r.converged and r.hessian_ok is None
    assert extract.status(r) == "not_converged"
    assert any("converge" in w for w in r.warnings)


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"error": "ValueError: x"}, "failed"),
        ({"converged": False, "hessian_ok": False, "singular": True}, "not_converged"),
        ({"converged": True, "hessian_ok": False, "singular": True}, "hessian_not_pd"),
        ({"converged": True, "hessian_ok": None, "singular": True}, "singular"),
        ({"converged": True, "hessian_ok": True}, "ok"),
    ],
)
def test_status_is_the_worst_fault(fields, expected):
    assert extract.status(FitResult(ModelSpec("m", "d", "y ~ (1 | g)"), "1.0", **fields)) == expected


def test_data_error_at_fit_time_is_a_recorded_failure(tmp_path, bp_data):
    # A simulated rare outcome drawn all zero: the fit step records it and the run goes on.
    path = tmp_path / "data.csv"
    bp_data.assign(rare=0).to_csv(path, index=False)
    r = fit_file(path, ModelSpec("rare", "d", "rare ~ time + (1 | patient_id)", "poisson"))
    assert not r.ok and extract.status(r) == "failed"
    assert (
        r.error
        == f"DataError: {path}: the response 'rare' has the same value (0) on every row; there is nothing to model"
    )


def test_summary_lists_every_status_with_notes(tmp_path, bp_data):
    path = tmp_path / "data.csv"
    bp_data.assign(rare=0).to_csv(path, index=False)
    fits = [
        fit_file(path, ModelSpec("rare", "d", "rare ~ time + (1 | patient_id)", "poisson")),
        fit_file(path, ModelSpec("bp", "d", "bp ~ time + (1 | hospital_id)")),
    ]
    stats = []
    for r in fits:
        out = {
            k: tmp_path / r.spec.name / f"{k}.{'json' if k == 'fit_stats' else 'csv'}"
            for k in ("fixed_effects", "variance_components", "random_effects", "predictions", "fit_stats")
        }
        extract.extract(r, out)
        stats.append(out["fit_stats"])
    record = json.loads(stats[1].read_text())
    assert record["hessian_ok"] is True and record["notes"] == [
        "numeric grouping column hospital_id treated as a factor (one level per value)"
    ]
    table = summarize(stats)
    assert list(table.columns) == COLUMNS
    assert table["status"].tolist() == ["failed", "ok"]
    assert "treated as a factor" in table["notes"][1] and "same value" in table["error"][0]
    table.to_csv(tmp_path / "summary.csv", index=False)
    assert status_line(tmp_path / "summary.csv") == f"fits: 1 failed, 1 ok (see {tmp_path / 'summary.csv'})"
