"""Gamma GLMMs with mixedlm, on lme4's objective.

mixedlm's Gamma family scores a fit with the unit-dispersion (exponential) density, so
its Laplace deviance is not lme4's: on sleepstudy, ``Reaction ~ Days + (1 | Subject)``
with Gamma(log), it ends singular (subject variance 0) with fixed effects 3.6% from
lme4's. lme4's ``glmer`` evaluates a Gamma GLMM's Laplace deviance as ``ldL2 + |u|^2 +
aic``, where ``aic`` is R's ``Gamma()$aic``: minus twice the Gamma log-density with the
dispersion set to the mean deviance, ``dev / n`` (the conditional modes come from the
usual penalised deviance, with unit dispersion). This module optimises that objective
over (theta, beta) with mixedlm's own machinery (same start, nAGQ = 0 first stage and
optimizer), and reports lme4's ``sigma()``: sqrt((Pearson chi-square + |u|^2) / n).
"""

from __future__ import annotations

import numpy as np
from scipy import special

from glmm_steps.engines.convergence import numerical_hessian

# lme4's checkConv tolerance on the scaled gradient (check.conv.grad).
GRAD_TOL = 2e-3


def _aic(family, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> float:
    """R's ``Gamma()$aic(y, n, mu, wt, dev)`` with ``dev`` the sum of deviance residuals."""
    n = float(np.sum(wt))
    disp = float(np.sum(family.deviance_resids(y, mu, wt))) / n
    shape, scale = 1.0 / disp, mu * disp
    logdens = (shape - 1) * np.log(y) - y / scale - special.gammaln(shape) - shape * np.log(scale)
    return float(-2.0 * np.sum(logdens * wt) + 2.0)


class Lme4GammaObjective:
    """lme4's Laplace deviance of a Gamma GLMM as a function of (theta, beta), wrapping
    mixedlm's JointGLMMObjective (which supplies the conditional modes and ldL2)."""

    def __init__(self, joint) -> None:
        self.joint = joint
        self.bounds = joint.bounds
        self.n_theta = joint.n_theta
        self.nAGQ = joint.nAGQ

    def parts(self, parameters: np.ndarray):
        """(lme4 deviance, beta, b, converged, mu, |u|^2) at ``parameters``."""
        joint = self.joint
        m = joint.matrices
        deviance, beta, b, converged = joint.evaluate(parameters)
        eta = m.X @ beta + m.Z @ b + m.offset
        mu = joint.family.link.inverse(eta)
        unit_dev = float(np.sum(joint.family.deviance_resids(m.y, mu, m.weights)))
        # joint's deviance is unit_dev + |u|^2 + ldL2: swap the unit-dispersion part for aic.
        rest = deviance - unit_dev
        value = rest + _aic(joint.family, m.y, mu, m.weights)
        return value, beta, b, converged, mu, rest

    def evaluate(self, parameters: np.ndarray):
        """What JointGLMMObjective.evaluate returns, with lme4's deviance."""
        value, beta, b, converged, _, _ = self.parts(parameters)
        return value, beta, b, converged

    def __call__(self, parameters: np.ndarray) -> float:
        value, _, _, converged = self.evaluate(np.asarray(parameters, dtype=float))
        return float(value) if converged and np.isfinite(value) else np.inf

    def parameter_scale(self, theta: np.ndarray) -> np.ndarray:
        """The joint objective's parameter scaling (for the optimizer)."""
        return self.joint.parameter_scale(theta)


def glmer_gamma(engine_text: str, frame, link: str, **kwargs):
    """Fit a Gamma GLMM (Laplace) on lme4's objective. Returns ``(model, objective)``:
    mixedlm's GlmerResult at the optimum (its ``deviance`` attribute is lme4's
    deviance, -2 logLik) and the objective, for convergence checks."""
    from mixedlm.estimation.laplace import GLMMOptimizer
    from mixedlm.families import Gamma
    from mixedlm.models.checks import run_model_checks
    from mixedlm.models.glmer import GlmerResult
    from mixedlm.models.glmer_fit import GlmerMod

    class _Optimizer(GLMMOptimizer):
        def joint_objective(self):
            return Lme4GammaObjective(super().joint_objective())

    mod = GlmerMod(engine_text, frame, family=Gamma(link=link), **kwargs)
    ctrl = mod.control
    mod.matrices, mod._dropped_cols = run_model_checks(mod.matrices, ctrl)
    optimizer = _Optimizer(
        mod.matrices,
        mod.family,
        verbose=0,
        nAGQ=1,
        pirls_maxiter=ctrl.pirls_maxiter,
        pirls_tol=ctrl.tolPwrss,
        nAGQ0initStep=ctrl.nAGQ0initStep,
    )
    res = optimizer.optimize(
        start=None,
        method=ctrl.optimizer,
        maxiter=ctrl.maxiter,
        options=ctrl.get_scipy_options(optimizer=ctrl.optimizer, maxiter=ctrl.maxiter),
        restart_edge=ctrl.restart_edge,
    )
    model = GlmerResult(
        formula=mod.formula,
        matrices=mod.matrices,
        family=mod.family,
        theta=res.theta,
        beta=res.beta,
        u=res.u,
        deviance=res.deviance,
        converged=res.converged,
        n_iter=res.n_iter,
        nAGQ=1,
        pirls_converged=res.pirls_converged,
        pirls_maxiter=optimizer.pirls_maxiter,
        pirls_tol=optimizer.pirls_tol,
        joint_fit=res.joint_fit,
        message=res.message,
        optimizer=ctrl.optimizer,
    )
    return model, optimizer.joint_objective()


def gamma_sigma(objective: Lme4GammaObjective, parameters: np.ndarray) -> float:
    """lme4's ``sigma()`` for a Gamma GLMM: sqrt((sum of squared Pearson residuals +
    |u|^2) / n), |u|^2 the squared length of the spherical conditional modes."""
    from mixedlm.estimation.laplace import _get_lambda_cached

    m = objective.joint.matrices
    _, _, b, _, mu, _ = objective.parts(parameters)
    lam = _get_lambda_cached(np.asarray(parameters[: objective.n_theta], dtype=float), m.random_structures)
    lam = lam.toarray() if hasattr(lam, "toarray") else np.asarray(lam)
    u = np.linalg.lstsq(lam, b, rcond=None)[0]
    pearson = float(np.sum(m.weights * (m.y - mu) ** 2 / mu**2))
    return float(np.sqrt((pearson + float(u @ u)) / float(np.sum(m.weights))))


def gradient_message(objective: Lme4GammaObjective, parameters: np.ndarray, free: np.ndarray) -> str | None:
    """lme4's checkConv gradient test on the free parameters: the gradient (central
    differences) scaled by the Cholesky factor of the Hessian, the smaller of scaled and
    raw per parameter; a message when the largest exceeds 0.002, else None."""
    x = np.asarray(parameters, dtype=float)
    idx = np.flatnonzero(free)

    def on_free(sub: np.ndarray) -> float:
        full = x.copy()
        full[idx] = sub
        return objective(full)

    sub = x[idx]
    g = np.empty(len(idx))
    for k in range(len(idx)):
        h = 1e-4 * max(1.0, abs(sub[k]))
        step = np.zeros(len(idx))
        step[k] = h
        g[k] = (on_free(sub + step) - on_free(sub - step)) / (2 * h)
    scaled = np.abs(g)
    try:
        upper = np.linalg.cholesky(numerical_hessian(on_free, sub)).T  # R's chol(): H = R'R
        scaled = np.minimum(np.abs(np.linalg.solve(upper, g)), np.abs(g))
    except np.linalg.LinAlgError:
        pass
    worst = float(np.max(scaled)) if len(scaled) else 0.0
    if worst > GRAD_TOL:
        return f"Gradient check: model failed to converge with max|grad| = {worst:.3g} (tol = {GRAD_TOL})"
    return None
