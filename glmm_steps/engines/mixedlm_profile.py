"""Profile intervals of a mixedlm fit, as lme4's ``confint(method = "profile")``.

mixedlm 1.3.0's ``confint(method="profile")`` gives the fixed effects of an ``lmer``
fit only (equal to lme4's); the random-effect SDs and correlations, the residual SD,
and every parameter of a ``glmer`` fit are profiled here with
:func:`glmm_steps.profile.profile_limits`, on the deviance lme4's ``devfun2`` profiles:
for an LMM the ML deviance in (SDs, correlations, sigma) with beta profiled out, for a
GLMM the Laplace (or AGQ) deviance in (SDs, correlations, beta).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from glmm_steps.profile import PROFILE_COLUMNS, ProfileError, profile_limits


def _chol(cov: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a positive semi-definite matrix (zero columns where
    a variance is 0, where numpy's would fail)."""
    n = cov.shape[0]
    L = np.zeros_like(cov)
    for j in range(n):
        d = cov[j, j] - L[j, :j] @ L[j, :j]
        L[j, j] = math.sqrt(max(d, 0.0))
        for i in range(j + 1, n):
            L[i, j] = (cov[i, j] - L[i, :j] @ L[j, :j]) / L[j, j] if L[j, j] > 0 else 0.0
    return L


class _SdCor:
    """lme4's "sdcor" parameters of a model's random-effect terms: per term its SDs,
    then (correlated terms) its correlations, pair (i, j) for i < j; and the map to
    mixedlm's theta (relative Cholesky factors, column-major lower triangle)."""

    def __init__(self, structures, group_names: dict[str, str], columns: dict[str, str] | None = None):
        from glmm_steps.engines.mixedlm_engine import _group_name  # the engine imports this module

        columns = columns or {}
        self.blocks = []
        self.labels: list[tuple[str, str]] = []
        self.kinds: list[str] = []
        for s in structures:
            group = _group_name(s.grouping_factor, group_names)
            terms = [columns.get(t, t) for t in s.term_names]
            pairs = [(i, j) for i in range(len(terms)) for j in range(i + 1, len(terms))] if s.correlated else []
            self.blocks.append((len(terms), s.correlated, pairs))
            self.labels += [(group, t) for t in terms] + [(group, f"cor({terms[i]},{terms[j]})") for i, j in pairs]
            self.kinds += ["sd"] * len(terms) + ["cor"] * len(pairs)

    def from_theta(self, theta: np.ndarray, sigma: float) -> np.ndarray:
        out, at = [], 0
        for t, correlated, pairs in self.blocks:
            if correlated:
                L = np.zeros((t, t))
                for j in range(t):
                    for i in range(j, t):
                        L[i, j] = theta[at]
                        at += 1
            else:
                L = np.diag(theta[at : at + t])
                at += t
            cov = sigma**2 * L @ L.T
            sd = np.sqrt(np.diag(cov))
            out += list(sd)
            out += [cov[i, j] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else 0.0 for i, j in pairs]
        return np.asarray(out)

    def to_theta(self, par: np.ndarray, sigma: float) -> np.ndarray:
        out, at = [], 0
        for t, correlated, pairs in self.blocks:
            sd = par[at : at + t] / sigma
            at += t
            if not correlated:
                out += list(sd)
                continue
            R = np.eye(t)
            for i, j in pairs:
                R[i, j] = R[j, i] = par[at]
                at += 1
            L = _chol(np.outer(sd, sd) * R)
            out += [L[i, j] for j in range(t) for i in range(j, t)]
        return np.asarray(out)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lower = np.array([0.0 if k == "sd" else -1.0 for k in self.kinds])
        upper = np.array([np.inf if k == "sd" else 1.0 for k in self.kinds])
        return lower, upper

    def scale(self, par: np.ndarray, unit: float) -> np.ndarray:
        return np.array([max(0.3 * abs(v), 0.05 * unit) if k == "sd" else 0.2 for v, k in zip(par, self.kinds)])


def lmm_profile(
    model,
    ml_model,
    names: list[str],
    group_names: dict[str, str],
    level: float = 0.95,
    columns: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Profile intervals of an ``lmer`` fit: ``ml_model`` is the same model fitted by ML
    (lme4 profiles the ML deviance; it may be ``model`` itself), ``names`` the R names
    of the fixed effects. Returns PROFILE_COLUMNS rows: random-effect SDs and
    correlations and the residual SD (effect ran_pars, named as variance_components
    names them), then the fixed effects (effect fixed, from mixedlm's profile)."""
    from mixedlm.estimation.reml import LMMOptimizer

    m = ml_model.matrices
    sdcor = _SdCor(m.random_structures, group_names, columns)
    evaluator = LMMOptimizer(m, REML=False)
    n = m.n_obs

    def deviance(par: np.ndarray) -> float:
        sigma = par[-1]
        if sigma <= 0:
            return math.inf
        c = evaluator._evaluate_core(sdcor.to_theta(par[:-1], sigma))
        if c is None:
            return math.inf
        return float(c.ldL2 + c.pwrss / sigma**2 + n * math.log(2 * math.pi * sigma**2))

    sigma = float(ml_model.sigma)
    estimate = np.r_[sdcor.from_theta(np.asarray(ml_model.theta, dtype=float), sigma), sigma]
    lower, upper = sdcor.bounds()
    lower, upper = np.r_[lower, 1e-12 * sigma], np.r_[upper, np.inf]
    scale = np.r_[sdcor.scale(estimate[:-1], sigma), 0.1 * sigma]
    rows = []
    for k, (group, term) in enumerate(sdcor.labels + [("Residual", "(Intercept)")]):
        low, high = profile_limits(deviance, estimate, k, lower, upper, scale, level)
        rows.append({"effect": "ran_pars", "group": group, "term": term, "conf_low": low, "conf_high": high})
    fixed = model.confint(method="profile", level=level)
    for engine_name, r_name in zip(model.matrices.fixed_names, names):
        low, high = fixed[engine_name]
        rows.append({"effect": "fixed", "group": "", "term": r_name, "conf_low": float(low), "conf_high": float(high)})
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS)


def glmm_profile(
    model, names: list[str], group_names: dict[str, str], level: float = 0.95, columns: dict[str, str] | None = None
) -> pd.DataFrame:
    """Profile intervals of a ``glmer`` fit, every parameter on the deviance in
    (SDs, correlations, beta) that lme4 profiles. Rows as :func:`lmm_profile`."""
    from mixedlm.estimation.joint_glmm import JointGLMMObjective

    m = model.matrices
    sdcor = _SdCor(m.random_structures, group_names, columns)
    objective = JointGLMMObjective(
        m, model.family, model.nAGQ, pirls_maxiter=model.pirls_maxiter, pirls_tol=model.pirls_tol
    )
    n_vc = len(sdcor.kinds)

    def deviance(par: np.ndarray) -> float:
        value, _, _, converged = objective.evaluate(np.r_[sdcor.to_theta(par[:n_vc], 1.0), par[n_vc:]])
        return float(value) if converged and np.isfinite(value) else math.inf

    beta = np.asarray(model.beta, dtype=float)
    se = np.sqrt(np.diag(np.asarray(model.vcov(), dtype=float)))
    estimate = np.r_[sdcor.from_theta(np.asarray(model.theta, dtype=float), 1.0), beta]
    lower, upper = sdcor.bounds()
    lower, upper = np.r_[lower, np.full(len(beta), -np.inf)], np.r_[upper, np.full(len(beta), np.inf)]
    scale = np.r_[sdcor.scale(estimate[:n_vc], 1.0), se]
    labels = [("ran_pars", g, t) for g, t in sdcor.labels] + [("fixed", "", t) for t in names]
    rows = []
    for k, (effect, group, term) in enumerate(labels):
        low, high = profile_limits(deviance, estimate, k, lower, upper, scale, level)
        rows.append({"effect": effect, "group": group, "term": term, "conf_low": low, "conf_high": high})
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS)


def profile_intervals(
    model, spec, refit_ml, names: list[str], group_names: dict[str, str], columns: dict[str, str] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """The fit step's profile intervals: (PROFILE_COLUMNS table, warnings). ``refit_ml()``
    returns the model refitted by ML (called for a REML ``lmer`` fit only, as lme4's
    ``profile`` refits it); ``group_names`` and ``columns`` map the engine's group and
    column names to lme4's. A profile that fails leaves the table empty (the
    tables keep their Wald intervals) and says why in the warnings."""
    try:
        if spec.family == "gaussian":
            ml = refit_ml() if spec.reml else model
            return lmm_profile(model, ml, names, group_names, columns=columns), []
        return glmm_profile(model, names, group_names, columns=columns), []
    except (ProfileError, ArithmeticError, ValueError, RuntimeError, np.linalg.LinAlgError) as e:
        return pd.DataFrame(columns=PROFILE_COLUMNS), [f"profile intervals not computed ({e}); Wald intervals instead"]
