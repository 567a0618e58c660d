"""GLMM random slopes checked against a Laplace approximation computed from first principles.

For ``y ~ x + (x | group)`` the random effects of different groups are independent,
so the penalized system is block diagonal with one 2 x 2 block per group, and the
Laplace approximation of the marginal log-likelihood can be computed exactly with a
few lines of numpy: Newton's method to the conditional modes (to 1e-12), then

    -2 logLik = -2 [log p(y | u) - |u|^2 / 2 - log det(L' Z' W Z L + I) / 2]

on the spherical scale (b = L u, L lower triangular; theta are L's entries, as in
lme4). Optimized from a neutral start by Nelder-Mead, this is a judge that shares
no code with either mixedlm or lme4.

Why it exists: on tests/reference/data/glmm_slopes.csv lme4 (even with
``tolPwrss = 1e-10``) reports a Poisson -2 logLik 1.6e-4 above this exact optimum and
stops 2e-5 to 1.4e-4 (relative) away from it; the engine agrees with it to 8e-7. A
comparison with lme4 at 1e-4 cannot tell the two apart, so tests/test_lme4_reference.py
leaves those estimates to this file, which asserts the measured claim itself: the
engine is at the exact optimum, lme4 measurably further away.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from scipy.special import expit, gammaln

from glmm_steps.engines.base import ModelSpec
from glmm_steps.fit import fit_model

REF = Path(__file__).parent / "reference"
DATA = REF / "data" / "glmm_slopes.csv"


def laplace_deviance(y: np.ndarray, x: np.ndarray, group: np.ndarray, family: str):
    """-2 logLik(theta, beta) of ``y ~ x + (x | group)`` by the Laplace approximation,
    as a function of ``par = (theta_11, theta_21, theta_22, beta_0, beta_1)``."""
    codes, n_groups = pd.factorize(group)[0], len(np.unique(group))
    A = np.c_[np.ones_like(x), x]  # each row's random-effect design: intercept and slope

    def per_group(values: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=values, minlength=n_groups)

    def dev(par: np.ndarray) -> float:
        L = np.array([[par[0], 0.0], [par[1], par[2]]])
        offset = A @ par[3:]
        u = np.zeros((n_groups, 2))
        for _ in range(200):
            eta = offset + np.einsum("ij,ij->i", A, u[codes] @ L.T)
            mu, w = _mean_and_weight(eta, family)
            gradient = per_group_vectors(A * (y - mu)[:, None], per_group) @ L - u
            hessian = _blocks(A, w, per_group, L)
            step = np.linalg.solve(hessian, gradient[..., None])[..., 0]
            u += step
            if np.max(np.abs(step)) < 1e-12:
                break
        eta = offset + np.einsum("ij,ij->i", A, u[codes] @ L.T)
        mu, w = _mean_and_weight(eta, family)
        if family == "poisson":
            conditional = np.sum(y * eta - mu - gammaln(y + 1))
        else:
            conditional = np.sum(y * eta - np.logaddexp(0.0, eta))
        logdet = np.sum(np.linalg.slogdet(_blocks(A, w, per_group, L))[1])
        return float(-2.0 * (conditional - 0.5 * np.sum(u * u) - 0.5 * logdet))

    return dev


def _mean_and_weight(eta: np.ndarray, family: str) -> tuple[np.ndarray, np.ndarray]:
    if family == "poisson":
        mu = np.exp(eta)
        return mu, mu
    mu = expit(eta)
    return mu, mu * (1.0 - mu)


def per_group_vectors(rows: np.ndarray, per_group) -> np.ndarray:
    """Column-wise sums of ``rows`` within each group: an (n_groups, k) array."""
    return np.stack([per_group(rows[:, k]) for k in range(rows.shape[1])], axis=1)


def _blocks(A: np.ndarray, w: np.ndarray, per_group, L: np.ndarray) -> np.ndarray:
    """L' (sum of w A A' within the group) L + I, one 2 x 2 block per group."""
    s00, s01, s11 = per_group(w * A[:, 0] ** 2), per_group(w * A[:, 0] * A[:, 1]), per_group(w * A[:, 1] ** 2)
    cross = np.stack([np.stack([s00, s01], -1), np.stack([s01, s11], -1)], -2)
    return L.T @ cross @ L + np.eye(2)


@functools.cache
def exact_optimum(response: str, family: str):
    """The exact Laplace optimum of ``response ~ x + (x | group)`` on glmm_slopes.csv:
    ``(deviance function, scipy result)``."""
    data = pd.read_csv(DATA)
    dev = laplace_deviance(data[response].to_numpy(float), data["x"].to_numpy(float), data["group"].to_numpy(), family)
    # Two Nelder-Mead passes from a neutral start (the second restarts the simplex,
    # which a single pass can let collapse early); no engine's estimate is used.
    best = minimize(
        dev,
        np.array([0.5, 0.3, 0.3, 0.0, 0.5]),
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 20000, "maxfev": 20000},
    )
    best = minimize(
        dev, best.x, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000, "maxfev": 20000}
    )
    return dev, best


@functools.cache
def engine_fit(response: str, family: str):
    """The engine's fit of ``response ~ x + (x | group)`` on glmm_slopes.csv."""
    return fit_model(
        pd.read_csv(DATA), ModelSpec("slopes", "glmm_slopes", f"{response} ~ x + (x | group)", family=family)
    )


def estimates(par: np.ndarray) -> np.ndarray:
    """(beta_0, beta_1, var_intercept, var_x, correlation) of ``par = (theta, beta)``."""
    L = np.array([[par[0], 0.0], [par[1], par[2]]])
    cov = L @ L.T
    return np.r_[par[3:], cov[0, 0], cov[1, 1], cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])]


def parameters(est: np.ndarray) -> np.ndarray:
    """The inverse of :func:`estimates`: theta (the Cholesky factor, as lme4's) and beta."""
    cov_01 = est[4] * np.sqrt(est[2] * est[3])
    L = np.linalg.cholesky(np.array([[est[2], cov_01], [cov_01, est[3]]]))
    return np.r_[L[0, 0], L[1, 0], L[1, 1], est[:2]]


def engine_estimates(fit) -> np.ndarray:
    """The engine's estimates in the order of :func:`estimates`."""
    fixef = fit.fixef.set_index("term")["estimate"]
    vc = fit.varcorr.set_index("term")
    return np.r_[
        fixef["(Intercept)"],
        fixef["x"],
        vc.loc["(Intercept)", "variance"],
        vc.loc["x", "variance"],
        vc.loc["cor((Intercept),x)", "correlation"],
    ]


def lme4_estimates(case: str) -> tuple[np.ndarray, float]:
    """lme4's estimates of ``case`` (order of :func:`estimates`) and its -2 logLik, from
    the committed fixtures."""
    fixtures = pd.read_csv(REF / "lme4_fixtures.csv", keep_default_na=False)
    rows = fixtures[fixtures["case"] == case].astype({"value": float})
    value = {(q, t): v for q, t, v in zip(rows["quantity"], rows["term"], rows["value"])}
    return (
        np.array(
            [
                value["fixef", "(Intercept)"],
                value["fixef", "x"],
                value["variance", "(Intercept)"],
                value["variance", "x"],
                value["correlation", "cor((Intercept),x)"],
            ]
        ),
        -2 * value["logLik", ""],
    )


@pytest.mark.parametrize("response,family", [("count", "poisson"), ("event", "binomial")])
def test_engine_reaches_the_exact_laplace_optimum_for_random_slopes(response, family):
    _, best = exact_optimum(response, family)
    fit = engine_fit(response, family)
    assert fit.error is None and fit.converged
    # The engine's logLik is the exact Laplace value at its optimum...
    assert -2 * fit.loglik == pytest.approx(best.fun, abs=1e-6)
    # ...and its estimates are the exact optimum's (lme4 is 1e-4 away on the Poisson case).
    np.testing.assert_allclose(fit.fixef["estimate"], best.x[3:], rtol=2e-6)
    L = np.array([[best.x[0], 0.0], [best.x[1], best.x[2]]])
    cov = L @ L.T
    variances = fit.varcorr.set_index("term")["variance"]
    np.testing.assert_allclose(
        [variances["(Intercept)"], variances["x"], variances["cor((Intercept),x)"]],
        [cov[0, 0], cov[1, 1], cov[0, 1]],
        rtol=2e-6,
    )


# Measured (2026-12-01, lme4 1.1-31, mixedlm 1.3.0), relative distance of the largest of
# the five estimates (two fixed effects, two variances, the correlation) from the exact
# optimum: engine 8.0e-7; lme4 1.02e-4 (default controls), 1.39e-4 (tolPwrss = 1e-10).
# Exact -2 logLik above the optimum's: engine 1.6e-11; at lme4's estimates 8.9e-7 and
# 1.5e-6; lme4's own reported -2 logLik 1.56e-4 and 1.6e-4 above it.
ENGINE_MAX_REL = 2e-6  # the engine is at the optimum (2.5x the measured 8e-7)
LME4_MIN_REL = 5e-5  # lme4 is measurably away (half the smaller measured 1.02e-4)
MARGIN = 25  # lme4's largest distance is >= 25 times the engine's (measured 128, 174)
ENGINE_MAX_EXCESS = 1e-9  # exact -2 logLik at the engine's estimates above the optimum
LME4_MIN_EXCESS = 2e-7  # ... and at lme4's (measured 8.9e-7, 1.5e-6)


@pytest.mark.parametrize("case", ["slopes_poisson_laplace", "slopes_poisson_laplace_tolpwrss"])
def test_engine_is_closer_than_lme4_to_the_exact_laplace_optimum(case):
    """The claim tests/test_lme4_reference.py leaves to this file for the Poisson slope
    cases: the engine's estimates are at the exact Laplace optimum, lme4's (from the
    committed fixtures) measurably away from it, by the margins above."""
    dev, best = exact_optimum("count", "poisson")
    optimum = estimates(best.x)
    engine = engine_estimates(engine_fit("count", "poisson"))
    lme4, lme4_deviance = lme4_estimates(case)
    engine_rel = np.max(np.abs(engine - optimum) / np.abs(optimum))
    lme4_rel = np.max(np.abs(lme4 - optimum) / np.abs(optimum))
    summary = f"{case}: largest relative distance from the exact optimum: engine {engine_rel:.3g}, lme4 {lme4_rel:.3g}"
    assert engine_rel <= ENGINE_MAX_REL, summary
    assert lme4_rel >= LME4_MIN_REL, summary
    assert lme4_rel >= MARGIN * engine_rel, summary
    # The same on the objective: lme4's point is higher than the engine's, and lme4's
    # own -2 logLik (its approximate ldL2) is higher still.
    engine_excess, lme4_excess = dev(parameters(engine)) - best.fun, dev(parameters(lme4)) - best.fun
    assert engine_excess <= ENGINE_MAX_EXCESS, f"{case}: engine's -2 logLik {engine_excess:.3g} above the optimum"
    assert lme4_excess >= LME4_MIN_EXCESS, f"{case}: lme4's estimates {lme4_excess:.3g} above the optimum"
    assert lme4_deviance - best.fun > 1e-4, f"{case}: lme4's -2 logLik {lme4_deviance - best.fun:.3g} above"
