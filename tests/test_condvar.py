"""Conditional SDs of random effects: the linear-time method against mixedlm's own.

mixedlm's ``ranef(condVar=True)`` solves the whole random-effect system per column
(exact, quadratic in the number of levels); glmm_steps.engines.condvar must give the
same numbers for every random-effect structure it accepts, and defer to mixedlm for
those it does not.
"""

import warnings

import mixedlm
import numpy as np
import pandas as pd
import pytest
from conftest import REFERENCE
from mixedlm import families
from mixedlm.datasets import load_penicillin
from scipy import sparse

from glmm_steps.engines.condvar import conditional_variances
from glmm_steps.engines.mixedlm_engine import _cond_variances, _ranef

SLEEP = REFERENCE / "data" / "sleepstudy.csv"


def _fit(formula, data, family=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if family is None:
            return mixedlm.lmer(formula, data, **kw)
        return mixedlm.glmer(formula, data, family=family, **kw)


def _penicillin() -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the loader passes pandas a deprecated argument
        return load_penicillin()


CASES = {
    "nested intercepts": lambda bp, sleep: _fit("bp ~ time + (1 | hospital_id) + (1 | patient_id)", bp),
    "a/b interaction": lambda bp, sleep: _fit("bp ~ time + (1 | hospital_id/patient_id)", bp),
    "correlated slope": lambda bp, sleep: _fit("Reaction ~ Days + (Days | Subject)", sleep),
    "uncorrelated slope": lambda bp, sleep: _fit("Reaction ~ Days + (Days || Subject)", sleep),
    "slope on the small factor": lambda bp, sleep: _fit("bp ~ time + (time | hospital_id) + (1 | patient_id)", bp),
    "crossed": lambda bp, sleep: _fit("diameter ~ 1 + (1 | plate) + (1 | sample)", _penicillin()),
    "prior weights": lambda bp, sleep: _fit(
        "Reaction ~ Days + (1 | Subject)", sleep, weights=np.linspace(0.5, 2.0, len(sleep))
    ),
    "binomial": lambda bp, sleep: _fit(
        "hypertension ~ time + (1 | hospital_id) + (1 | patient_id)", bp, families.Binomial()
    ),
    "poisson": lambda bp, sleep: _fit(
        "adverse_events ~ time + (1 | hospital_id) + (1 | patient_id)", bp, families.Poisson()
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_as_mixedlm(case, bp_data):
    model = CASES[case](bp_data, pd.read_csv(SLEEP))
    expected = model.ranef(condVar=True).condVar
    got = _cond_variances(model)
    assert got.keys() == expected.keys()
    for group, terms in expected.items():
        assert got[group].keys() == terms.keys()
        for term, variances in terms.items():
            np.testing.assert_allclose(got[group][term], variances, rtol=1e-9, atol=1e-14)


def test_ranef_table_matches_tidy(bp_data):
    """The table built column-wise equals mixedlm's row-by-row tidy(effects="ran_vals")."""
    model = _fit("bp ~ time + (time | hospital_id) + (1 | patient_id)", bp_data)
    tidy = model.tidy(effects="ran_vals")
    table = _ranef(model, {})
    assert list(table["group"]) == list(tidy["group"].astype(str))
    assert list(table["level"]) == list(tidy["level"].astype(str))
    assert list(table["term"]) == list(tidy["term"])
    np.testing.assert_array_equal(table["estimate"], tidy["estimate"])
    np.testing.assert_allclose(table["cond_sd"], tidy["std.error"], rtol=1e-9)


def test_declines_what_it_cannot_do():
    """A precision whose largest block is not block diagonal, or a Schur complement
    too large to hold densely, returns None (the caller asks the engine)."""
    coupled = sparse.csc_matrix(np.array([[2.0, 0.5, 0.0], [0.5, 2.0, 0.0], [0.0, 0.0, 1.0]]))
    assert conditional_variances(coupled, sparse.eye(3), [(2, 1), (1, 1)]) is None
    assert conditional_variances(coupled, sparse.eye(3), [(1, 2), (1, 1)]) is not None
    from glmm_steps.engines import condvar

    n = condvar.MAX_SCHUR + 1
    big = sparse.eye(2 * n, format="csc")
    assert conditional_variances(big, big, [(n, 1), (n, 1)]) is None


def test_dense_inverse_on_a_random_system():
    """Against the definition, diag(scale * L inv(A) L'), on a random SPD system with
    two terms per level in the largest block and a crossed second factor."""
    rng = np.random.default_rng(3)
    n1, k1, n2 = 40, 2, 7
    q1, q = n1 * k1, n1 * k1 + n2
    Z = np.zeros((300, q))
    level = rng.integers(0, n1, 300)
    Z[np.arange(300), level * k1] = 1.0
    Z[np.arange(300), level * k1 + 1] = rng.normal(size=300)
    Z[np.arange(300), q1 + rng.integers(0, n2, 300)] = 1.0
    template = np.array([[1.3, 0.0], [0.4, 0.7]])
    lam = sparse.block_diag([sparse.kron(sparse.eye(n1), template), 0.8 * sparse.eye(n2)], format="csc")
    A = sparse.csc_matrix(lam.T @ sparse.csc_matrix(Z.T @ Z) @ lam + sparse.eye(q))
    got = conditional_variances(A, lam, [(n1, k1), (n2, 1)], scale=2.5)
    full = 2.5 * np.diag(lam.toarray() @ np.linalg.inv(A.toarray()) @ lam.toarray().T)
    np.testing.assert_allclose(np.concatenate([got[0].ravel(), got[1].ravel()]), full, rtol=1e-10)
