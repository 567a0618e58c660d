"""lmerTest's Satterthwaite parts for a fitted mixedlm ``lmer`` model, so any linear
combination of the fixed effects (a marginal mean, a contrast) gets its df.

lmerTest keeps, on a fitted model, the covariance of the variance parameters
(theta, sigma) -- twice the inverse Hessian of the deviance in them -- and the
derivatives of vcov(beta) in them; a contrast L then has
df = 2 (L V L')^2 / (g' A g) with g_k = L (dV/dvarpar_k) L'. Both derivatives are
taken here by central differences with Richardson extrapolation (numDeriv's method,
which lmerTest uses) on mixedlm's own deviance evaluator. (mixedlm 1.3.0's emmeans
uses the residual df instead: 266 on lme4's cake where emmeans gives 42.)

Issue 14's ``glmm_steps.inference.satterthwaite_parts`` computes the same parts for
its t tests; this small version exists so marginal means do not wait for it, and
can be replaced by that one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# A first step of 1e-2 relative (numDeriv: 1e-4): mixedlm's deviance is accurate to
# about 1e-10 relative, and 4 halvings of Richardson extrapolation remove the larger
# step's truncation error; smaller steps leave rounding error of 1e-3 in the df.
_D, _EPS, _R = 1e-2, 1e-4, 4


def _steps(x: np.ndarray) -> np.ndarray:
    return _D * np.abs(x) + _EPS * (np.abs(x) < 1e-4)


def _richardson(estimates: list) -> np.ndarray:
    a = list(estimates)
    for m in range(1, len(a)):
        a = [(a[k + 1] * 4.0**m - a[k]) / (4.0**m - 1.0) for k in range(len(a) - 1)]
    return np.asarray(a[0])


def _jacobian(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    h0 = _steps(x)
    out = []
    for i in range(len(x)):
        est, h = [], h0[i]
        for _ in range(_R):
            e = np.zeros_like(x)
            e[i] = h
            est.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * h))
            h /= 2
        out.append(_richardson(est))
    return np.asarray(out)


def _hessian(f: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray:
    k, h0, f0 = len(x), _steps(x), float(f(x))
    H = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1):
            est, hi, hj = [], h0[i], h0[j]
            for _ in range(_R):
                ei, ej = np.zeros(k), np.zeros(k)
                ei[i], ej[j] = hi, hj
                if i == j:
                    est.append((f(x + ei) - 2 * f0 + f(x - ei)) / hi**2)
                else:
                    est.append((f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * hi * hj))
                hi, hj = hi / 2, hj / 2
            H[i, j] = H[j, i] = float(_richardson(est))
    return H


def satterthwaite_parts(model) -> tuple[np.ndarray, np.ndarray]:
    """``(jacobian, vcov_varpar)`` of a fitted mixedlm ``lmer`` model: the derivatives
    of vcov(beta) in (theta..., sigma), shape (k, p, p), and 2 x the inverse Hessian of
    the (REML or ML) deviance with sigma not profiled out, on its positive eigenvalues,
    shape (k, k). Raises FloatingPointError where the system is singular nearby."""
    from mixedlm.estimation.reml import LMMOptimizer

    evaluator = LMMOptimizer(model.matrices, REML=bool(model.REML))
    n, p, reml = model.matrices.n_obs, model.matrices.n_fixed, bool(model.REML)

    def core(theta):
        result = evaluator._evaluate_core(np.asarray(theta, dtype=float))
        if result is None:
            raise FloatingPointError("the random-effects system is singular next to the estimates")
        return result

    def deviance(varpar):
        c = core(varpar[:-1])
        s2 = varpar[-1] ** 2
        dev = c.ldL2 + c.pwrss / s2 + n * np.log(2 * np.pi * s2)
        if reml:
            dev += c.ldRX2 - p * np.log(2 * np.pi * s2)
        return float(dev)

    def covbeta(varpar):
        info = np.asarray(core(varpar[:-1]).fixed_information, dtype=float)
        return varpar[-1] ** 2 * np.linalg.inv((info + info.T) / 2)

    varpar = np.r_[np.asarray(model.theta, dtype=float), float(model.sigma)]
    h = _hessian(deviance, varpar)
    values, vectors = np.linalg.eigh((h + h.T) / 2)
    pos = values > 1e-8
    vcov_varpar = 2 * (vectors[:, pos] / values[pos]) @ vectors[:, pos].T
    return _jacobian(covbeta, varpar), vcov_varpar
