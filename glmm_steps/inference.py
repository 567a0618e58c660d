"""Small-sample tests of fixed effects, as lmerTest and pbkrtest compute them.

``inference:`` in a model's config chooses how ``fixed_effects.csv`` tests each fixed
effect and which reference distribution its interval uses:

- ``satterthwaite`` (the default for gaussian models fitted by mixedlm, as lmerTest's
  ``summary()``): t tests whose denominator df come from the Satterthwaite
  approximation. The covariance of the variance parameters (theta, sigma) is twice
  the inverse Hessian of the deviance in those parameters and the derivatives of
  vcov(beta) are taken in them too, by Richardson-extrapolated central differences
  (lmerTest uses numDeriv's); :func:`satterthwaite_parts` does this numerics from two
  callbacks an engine provides.
- ``kenward_roger`` (pbkrtest's ``vcovAdj`` and ``Lb_ddf``, as lmerTest's
  ``summary(ddf = "Kenward-Roger")``): the small-sample adjusted covariance of beta
  and its df, from the marginal covariance of the response; REML fits only.
- ``wald`` (z tests; the default and only choice for binomial and Poisson models, as
  glmer reports them).

The multi-df versions (one F test per model term) are :func:`satterthwaite_f` and
:func:`kenward_roger_f`, used by :mod:`glmm_steps.anova`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from glmm_steps.errors import ConfigError

METHODS = ("satterthwaite", "kenward_roger", "wald")
# Above this many rows the n x n matrices of Kenward-Roger's adjustment do not fit in
# memory; pbkrtest fails there too (lmerTest then falls back to Satterthwaite).
KR_MAX_NOBS = 6000


def check(name: str, entry: dict[str, Any]) -> None:
    """Refuse an ``inference`` the model cannot have, naming the key: small-sample
    df for a binomial/Poisson model or for the statsmodels engine, Kenward-Roger
    for an ML fit (pbkrtest and lmerTest refuse it too). The schema has checked the
    value is one of METHODS."""
    method, key = entry.get("inference"), f"models.{name}.inference"
    test = entry.get("test")
    if test == "lrt":
        test = None  # a likelihood-ratio test needs no df (its checks are the study's)
    if test is not None:
        if method is not None and method != test:
            raise ConfigError(
                f"models.{name}.test",
                f"{test} differs from inference: {method} (a study's power "
                f"test is its fixed-effect test; give one of the two)",
            )
        method, key = test, f"models.{name}.test"
    if method is None or method == "wald":
        return
    family = entry.get("family", "gaussian")
    if family != "gaussian":
        raise ConfigError(
            key, f"{method} needs a gaussian model; a {family} model is tested by 'wald' (z tests, as glmer)"
        )
    if entry.get("engine", "mixedlm") != "mixedlm":
        raise ConfigError(
            key, f"{method} is computed with engine mixedlm only; use 'wald' with engine {entry.get('engine')}"
        )
    if method == "kenward_roger" and not entry.get("reml", True):
        raise ConfigError(key, "kenward_roger needs a REML fit (reml: true), as pbkrtest")


# ---- numerical derivatives (numDeriv's Richardson extrapolation) -------------------

# numDeriv's defaults but a first step of 1e-2 (relative) where numDeriv takes 1e-4:
# mixedlm's deviance is accurate to about 1e-10 relative, so second differences over
# steps of 1e-4 x theta carry errors of 1e-3 in the df (sleepstudy: 17.023 for 17.000);
# the extrapolation over 4 halvings removes the larger steps' truncation error.
_D, _EPS, _ZERO_TOL, _R = 1e-2, 1e-4, float(np.sqrt(np.finfo(float).eps / 7e-7)), 4


def _steps(x: np.ndarray) -> np.ndarray:
    return _D * np.abs(x) + _EPS * (np.abs(x) < _ZERO_TOL)


def _extrapolate(a: list[Any]) -> Any:
    """Richardson extrapolation of estimates at steps h, h/2, h/4, ... with O(h^2) error."""
    for m in range(1, len(a)):
        a = [(a[k + 1] * 4.0**m - a[k]) / (4.0**m - 1.0) for k in range(len(a) - 1)]
    return a[0]


def jacobian(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """Derivatives of the array-valued ``f`` at ``x`` by central differences,
    Richardson-extrapolated over halving steps: shape (len(x),) + f's value shape.
    ``f`` takes all its points at once, (m, len(x)) -> (m, ...) values, so a caller
    can share work between points (a study's Satterthwaite df call it per replicate)."""
    x = np.asarray(x, dtype=float)
    h0 = _steps(x)
    points, steps = [], []
    for i in range(len(x)):
        h = h0[i]
        for _ in range(_R):
            e = np.zeros_like(x)
            e[i] = h
            points += [x + e, x - e]
            steps.append(h)
            h /= 2
    values = np.asarray(f(np.array(points)))
    est = [(values[2 * t] - values[2 * t + 1]) / (2 * h) for t, h in enumerate(steps)]
    return np.asarray([_extrapolate(est[i * _R : (i + 1) * _R]) for i in range(len(x))])


def hessian(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """Hessian of a scalar function at ``x`` by central second differences,
    Richardson-extrapolated over halving steps. ``f`` takes all its points at once,
    (m, len(x)) -> (m,) values (see :func:`jacobian`)."""
    x = np.asarray(x, dtype=float)
    k = len(x)
    h0 = _steps(x)
    points, plan = [x], []
    for i in range(k):
        for j in range(i + 1):
            hi, hj = h0[i], h0[j]
            for _ in range(_R):
                ei = np.zeros(k)
                ei[i] = hi
                plan.append((i, j, len(points), hi, hj))
                if i == j:
                    points += [x + ei, x - ei]
                else:
                    ej = np.zeros(k)
                    ej[j] = hj
                    points += [x + ei + ej, x + ei - ej, x - ei + ej, x - ei - ej]
                hi, hj = hi / 2, hj / 2
    v = [float(value) for value in f(np.array(points))]
    f0 = v[0]
    est: dict[tuple[int, int], list[float]] = {}
    for i, j, at, hi, hj in plan:
        if i == j:
            d = (v[at] - 2 * f0 + v[at + 1]) / hi**2
        else:
            d = (v[at] - v[at + 1] - v[at + 2] + v[at + 3]) / (4 * hi * hj)
        est.setdefault((i, j), []).append(d)
    H = np.zeros((k, k))
    for (i, j), values in est.items():
        H[i, j] = H[j, i] = _extrapolate(values)
    return H


# ---- Satterthwaite (lmerTest) ---------------------------------------------------------


@dataclass(frozen=True)
class SatterthwaiteParts:
    """What lmerTest keeps on a fitted model for its tests: ``vcov`` of beta,
    ``jac`` (one p x p derivative of vcov(beta) per variance parameter, theta then
    sigma) and ``vcov_varpar`` (2 x the inverse Hessian of the deviance in those
    parameters, on its positive eigenvalues)."""

    vcov: np.ndarray
    jac: np.ndarray
    vcov_varpar: np.ndarray


def satterthwaite_parts(
    deviance_vp: Callable[[np.ndarray], float],
    covbeta: Callable[[np.ndarray], np.ndarray],
    varpar: np.ndarray,
    vcov: np.ndarray,
) -> SatterthwaiteParts:
    """lmerTest's ``as_lmerModLT``: ``deviance_vp`` is the (REML or ML) deviance with
    sigma not profiled out and ``covbeta`` sigma^2 (X'V^-1X)^-1, each at a stack of
    parameter vectors (theta..., sigma), one per row (m, k) -> (m,) and (m, p, p);
    ``varpar`` their estimates."""
    h = hessian(deviance_vp, varpar)
    values, vectors = np.linalg.eigh((h + h.T) / 2)
    pos = values > 1e-8
    h_inv = (vectors[:, pos] / values[pos]) @ vectors[:, pos].T
    return SatterthwaiteParts(vcov=np.asarray(vcov, dtype=float), jac=jacobian(covbeta, varpar), vcov_varpar=2 * h_inv)


def _qform(x: np.ndarray, V: np.ndarray) -> float:
    return float(x @ V @ x)


def satterthwaite_t(L: np.ndarray, beta: np.ndarray, parts: SatterthwaiteParts) -> tuple[float, float, float]:
    """One contrast ``L`` (length p): (estimate, std_error, df), lmerTest's contest1D."""
    var_con = _qform(L, parts.vcov)
    grad = np.array([_qform(L, J) for J in parts.jac])
    df = 2 * var_con**2 / _qform(grad, parts.vcov_varpar)
    return float(L @ beta), float(np.sqrt(var_con)), float(df)


def _f_ddf(nu: np.ndarray) -> float:
    """lmerTest's get_Fstat_ddf: the F test's denominator df from the q t tests' df."""
    if len(nu) == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < 1e-8):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2 * E / (E - len(nu))


def satterthwaite_f(L: np.ndarray, beta: np.ndarray, parts: SatterthwaiteParts) -> tuple[float, int, float]:
    """F test of the rows of ``L`` (q x p): (F, NumDF, DenDF), lmerTest's contestMD."""
    L = np.atleast_2d(L)
    if L.shape[0] == 1:
        est, se, df = satterthwaite_t(L[0], beta, parts)
        return (est / se) ** 2, 1, df
    d, P = np.linalg.eigh(L @ parts.vcov @ L.T)
    order = np.argsort(d)[::-1]
    d, P = d[order], P[:, order]
    pos = d > max(np.sqrt(np.finfo(float).eps) * d[0], 0)
    q = int(pos.sum())
    PtL = (P.T @ L)[:q]
    if q == 1:
        est, se, df = satterthwaite_t(PtL[0], beta, parts)
        return (est / se) ** 2, 1, df
    t2 = (PtL @ beta) ** 2 / d[:q]
    nu = np.array(
        [2 * d[m] ** 2 / _qform(np.array([_qform(PtL[m], J) for J in parts.jac]), parts.vcov_varpar) for m in range(q)]
    )
    return float(t2.sum() / q), q, _f_ddf(nu)


# ---- Kenward-Roger (pbkrtest) ---------------------------------------------------------


@dataclass(frozen=True)
class KenwardRogerParts:
    """pbkrtest's ``vcovAdj``: ``vcov`` (Phi, the model's vcov of beta), ``vcov_adj``
    (PhiA, the adjusted one), and its attributes ``P`` (one p x p matrix per
    variance-covariance parameter) and ``W`` (2 x the inverse expected information of
    those parameters)."""

    vcov: np.ndarray
    vcov_adj: np.ndarray
    P: np.ndarray
    W: np.ndarray


def kenward_roger_parts(X: np.ndarray, G: list[np.ndarray], ggamma: np.ndarray, vcov: np.ndarray) -> KenwardRogerParts:
    """pbkrtest's ``vcovAdj_internal``: ``X`` the n x p fixed-effects matrix, ``G`` the
    derivatives of the marginal covariance Sigma = sum_i ggamma_i G_i of the response
    in each variance-covariance parameter (random-effect variances and covariances,
    then the residual variance, whose G is the identity), ``vcov`` the REML fit's
    vcov of beta."""
    Sigma = sum(g * Gi for g, Gi in zip(ggamma, G))
    c = np.linalg.cholesky(Sigma)
    SigmaInv = np.linalg.inv(c).T @ np.linalg.inv(c)
    Phi = np.asarray(vcov, dtype=float)
    k = len(G)
    TT = SigmaInv @ X
    HH = [Gi @ SigmaInv for Gi in G]
    OO = [H @ X for H in HH]
    PP = [-(Om.T @ TT) for Om in OO]
    PP = [(Pm + Pm.T) / 2 for Pm in PP]
    QQ = {(r, s): OO[r].T @ SigmaInv @ OO[s] for r in range(k) for s in range(r, k)}
    IE2 = np.zeros((k, k))
    for i in range(k):
        PhiP = Phi @ PP[i]
        for j in range(i, k):
            ktrace = float(np.sum(HH[i].T * HH[j]))
            IE2[i, j] = IE2[j, i] = ktrace - 2 * np.sum(Phi * QQ[(i, j)]) + np.sum(PhiP * (PP[j] @ Phi))
    if np.min(np.abs(np.linalg.eigvalsh(IE2))) > 1e-10:
        W = 2 * np.linalg.inv(IE2)
    else:
        W = 2 * np.linalg.pinv(IE2)
    W = (W + W.T) / 2
    p = X.shape[1]
    UU = np.zeros((p, p))
    for i in range(k - 1):
        for j in range(i + 1, k):
            UU += W[i, j] * (QQ[(i, j)] - PP[i] @ Phi @ PP[j])
    UU = UU + UU.T
    for i in range(k):
        UU += W[i, i] * (QQ[(i, i)] - PP[i] @ Phi @ PP[i])
    PhiA = Phi + 2 * (Phi @ UU @ Phi)
    return KenwardRogerParts(vcov=Phi, vcov_adj=PhiA, P=np.asarray(PP), W=W)


def _kr_adjust(L: np.ndarray, parts: KenwardRogerParts) -> tuple[float, float, float]:
    """pbkrtest's ``.KR_adjust`` / ``Lb_ddf`` for the rows of ``L``: (q, df2, F scaling)."""
    L = np.atleast_2d(L)
    Phi = parts.vcov
    Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
    ThetaPhi = Theta @ Phi
    k = len(parts.P)
    A1 = A2 = 0.0
    us = [ThetaPhi @ parts.P[i] @ Phi for i in range(k)]
    for i in range(k):
        for j in range(i, k):
            e = 1.0 if i == j else 2.0
            A1 += e * parts.W[i, j] * np.trace(us[i]) * np.trace(us[j])
            A2 += e * parts.W[i, j] * np.sum(us[i] * us[j].T)
    q = float(np.linalg.matrix_rank(L))
    B = (A1 + 6 * A2) / (2 * q)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    c1 = g / (3 * q + 2 * (1 - g))
    c2 = (q - g) / (3 * q + 2 * (1 - g))
    c3 = (q + 2 - g) / (3 * q + 2 * (1 - g))
    V0 = 1 + c1 * B
    V1 = 1 - c2 * B
    V2 = 1 - c3 * B
    V0 = 0.0 if abs(V0) < 1e-10 else V0
    x = 1 - A2 / q
    ratio = 1.0 if abs(x) < 1e-14 and abs(V1) < 1e-14 else x / V1
    rho = ratio**2 * V0 / V2 / q
    df2 = 4 + (q + 2) / (q * rho - 1)
    scaling = 1.0 if abs(df2 - 2) < 0.01 else df2 * (1 - A2 / q) / (df2 - 2)
    return q, float(df2), float(scaling)


def kenward_roger_df(L: np.ndarray, parts: KenwardRogerParts) -> np.ndarray:
    """Kenward-Roger df of each row of ``L`` alone (pbkrtest's ``Lb_ddf`` per row, as
    emmeans' ``lmer.df = "kenward-roger"`` takes them); NaN for a zero row."""
    L = np.atleast_2d(np.asarray(L, dtype=float))
    return np.array([_kr_adjust(row, parts)[1] if np.any(row != 0) else np.nan for row in L])


def kenward_roger_t(L: np.ndarray, beta: np.ndarray, parts: KenwardRogerParts) -> tuple[float, float, float]:
    """One contrast: (estimate, adjusted std_error, Kenward-Roger df), as lmerTest's
    ``summary(ddf = "Kenward-Roger")``."""
    _, df, _ = _kr_adjust(L, parts)
    return float(L @ beta), float(np.sqrt(_qform(L, parts.vcov_adj))), df


def kenward_roger_f(L: np.ndarray, beta: np.ndarray, parts: KenwardRogerParts) -> tuple[float, int, float]:
    """F test of the rows of ``L``: (scaled F, NumDF, DenDF), pbkrtest's KRmodcomp."""
    L = np.atleast_2d(L)
    q, df2, scaling = _kr_adjust(L, parts)
    Lb = L @ beta
    wald = float(Lb @ np.linalg.solve(L @ parts.vcov_adj @ L.T, Lb))
    return scaling * wald / q, int(q), df2


# ---- the fixed-effects table ----------------------------------------------------------


def fixed_effect_tests(
    names: list[str], beta: np.ndarray, parts: SatterthwaiteParts | KenwardRogerParts
) -> pd.DataFrame:
    """One t test per coefficient: term, estimate, std_error (Kenward-Roger's adjusted
    one for KR parts), df."""
    one = satterthwaite_t if isinstance(parts, SatterthwaiteParts) else kenward_roger_t
    tests = [one(L, beta, parts) for L in np.eye(len(beta))]
    # Built from columns: a study makes this table for every replicate.
    est, se, df = (np.array([t[k] for t in tests], dtype=float) for k in range(3))
    return pd.DataFrame({"term": list(names), "estimate": est, "std_error": se, "df": df})


def t_test(
    estimate: np.ndarray, std_error: np.ndarray, df: np.ndarray | None, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(statistic, two-sided p, conf_low, conf_high) against Student's t with ``df``
    per row (a missing df, NaN or None, is the normal reference: a Wald z test)."""
    from scipy import special

    est = np.asarray(estimate, dtype=float)
    se = np.asarray(std_error, dtype=float)
    df = np.full_like(est, np.nan) if df is None else np.asarray(df, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = est / se
    z = np.isnan(df)
    p = np.where(z, 2 * special.ndtr(-np.abs(stat)), 2 * special.stdtr(np.where(z, 1.0, df), -np.abs(stat)))
    q = np.where(z, special.ndtri(0.5 + level / 2), special.stdtrit(np.where(z, 1.0, df), 0.5 + level / 2))
    return stat, p, est - q * se, est + q * se
