"""What lmerTest's and pbkrtest's tests need from a fitted mixedlm ``lmer`` model.

mixedlm 1.3.0 has ``satterthwaite_df`` (it profiles sigma out, which lmerTest does
not; the two agree on the reference fits only to about 1e-6) and ``kenward_roger_df``
(which returns Satterthwaite's df scaled, not pbkrtest's, and no adjusted covariance),
so both are computed here from the model's own deviance evaluator, as lmerTest and
pbkrtest compute them from lme4's; the numerics live in :mod:`glmm_steps.inference`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from glmm_steps import anova
from glmm_steps.engines.base import ANOVA_COLUMNS, TESTS
from glmm_steps.inference import (
    KR_MAX_NOBS,
    KenwardRogerParts,
    SatterthwaiteParts,
    fixed_effect_tests,
    kenward_roger_parts,
    satterthwaite_parts,
)

_NO_ANOVA = pd.DataFrame(columns=ANOVA_COLUMNS)


def satterthwaite(model, evaluator=None, vcov: np.ndarray | None = None) -> SatterthwaiteParts:
    """lmerTest's parts for a fitted ``lmer``: the Hessian of the deviance in
    (theta, sigma) and the Jacobian of vcov(beta) in them. ``evaluator``: an
    ``LMMOptimizer`` of the model's matrices and response (built here when not
    given; a study's refit passes the one it optimized with), ``vcov``: the model's
    vcov of beta when the caller has it."""
    from mixedlm.estimation.reml import LMMOptimizer

    evaluator = evaluator if evaluator is not None else LMMOptimizer(model.matrices, REML=bool(model.REML))
    n, p = model.matrices.n_obs, model.matrices.n_fixed
    reml = bool(model.REML)
    # The differences step sigma with theta fixed, and the Hessian and Jacobian step
    # each theta by the same amounts: one factorization per distinct theta (33 of the
    # 97 evaluations for two variance parameters), with the same numbers.
    cache: dict[bytes, Any] = {}

    def core(theta):
        theta = np.asarray(theta, dtype=float)
        key = theta.tobytes()
        if key not in cache:
            result = evaluator._evaluate_core(theta)
            if result is None:
                raise FloatingPointError("the random-effects system is singular next to the estimates")
            cache[key] = result
        return cache[key]

    def deviance_vp(varpar):
        # Per row (theta..., sigma) as lmerTest's devfun_vp, elementwise over the rows.
        cores = [core(theta) for theta in varpar[:, :-1]]
        ldL2, pwrss = np.array([c.ldL2 for c in cores]), np.array([c.pwrss for c in cores])
        s2 = varpar[:, -1] ** 2
        dev = ldL2 + pwrss / s2 + n * np.log(2 * np.pi * s2)
        if reml:
            dev += np.array([c.ldRX2 for c in cores]) - p * np.log(2 * np.pi * s2)
        return dev

    def covbeta(varpar):
        info = np.array([np.asarray(core(theta).fixed_information, dtype=float) for theta in varpar[:, :-1]])
        return (varpar[:, -1] ** 2)[:, None, None] * np.linalg.inv((info + info.transpose(0, 2, 1)) / 2)

    varpar = np.r_[np.asarray(model.theta, dtype=float), float(model.sigma)]
    vcov = np.asarray(model.vcov(), dtype=float) if vcov is None else vcov
    return satterthwaite_parts(deviance_vp, covbeta, varpar, vcov)


def _structure_covariances(model) -> list[np.ndarray]:
    """Each random-effect term's covariance matrix (sigma^2 Lambda_s Lambda_s')."""
    theta = np.asarray(model.theta, dtype=float)
    sigma2 = float(model.sigma) ** 2
    out, at = [], 0
    for s in model.matrices.random_structures:
        t = s.n_terms
        if s.cov_type != "us":
            raise NotImplementedError(f"covariance structure {s.cov_type!r}")
        if s.correlated:
            lower = np.zeros((t, t))
            idx = [(i, j) for j in range(t) for i in range(j, t)]
            for value, (i, j) in zip(theta[at : at + len(idx)], idx):
                lower[i, j] = value
            at += len(idx)
        else:
            lower = np.diag(theta[at : at + t])
            at += t
        out.append(sigma2 * lower @ lower.T)
    return out


def kenward_roger(model) -> KenwardRogerParts:
    """pbkrtest's ``vcovAdj`` for a REML ``lmer`` fit: the derivatives G of the
    response's marginal covariance in each random-effect variance and covariance
    (lower triangle of each term's covariance) and the residual variance."""
    m = model.matrices
    X = np.asarray(m.X, dtype=float)
    Z = sparse.csc_matrix(m.Z)
    G, ggamma, at = [], [], 0
    for s, cov in zip(m.random_structures, _structure_covariances(model)):
        t, width = s.n_terms, s.n_levels * s.n_terms
        Zs = Z[:, at : at + width]
        at += width
        cols = [Zs[:, i::t] for i in range(t)]
        pairs = [(i, j) for j in range(t) for i in range(j, t)] if s.correlated else [(i, i) for i in range(t)]
        for i, j in pairs:
            Gij = (cols[i] @ cols[j].T).toarray()
            G.append(Gij if i == j else Gij + Gij.T)
            ggamma.append(cov[i, j])
    G.append(np.eye(m.n_obs))
    ggamma.append(float(model.sigma) ** 2)
    return kenward_roger_parts(X, G, np.asarray(ggamma), np.asarray(model.vcov(), dtype=float))


def fixed_effect_inference(
    model,
    spec,
    names: list[str],
    terms: dict[str, list[str]],
    frame: pd.DataFrame,
    vcov: np.ndarray | None = None,
    evaluator=None,
) -> tuple[pd.DataFrame, pd.DataFrame, str, list[str], Any]:
    """The tests ``spec.inference`` asks for, on a fitted mixedlm model whose
    coefficients are ``names`` (R's), fixed-effect terms ``terms`` (term label -> its
    coefficient names, R's ``assign`` without the intercept, from
    :func:`glmm_steps.model_matrix.build`) and rows ``frame``: (fixef table with ``df`` for t
    tests, type III anova table, the test's name, warnings, the method's parts: SatterthwaiteParts,
    KenwardRogerParts or None for Wald). A method that cannot be
    computed falls back (Kenward-Roger to Satterthwaite, Satterthwaite to Wald z, as
    lmerTest does) with a warning saying so. ``vcov``: the fixed effects' covariance
    when it is not mixedlm's (a Gamma GLMM's, scaled by its dispersion) or the caller
    has it; ``evaluator``: the deviance evaluator :func:`satterthwaite` may reuse."""
    beta = np.asarray(model.beta, dtype=float)
    vcov = np.asarray(model.vcov(), dtype=float) if vcov is None else vcov
    messages: list[str] = []
    method = spec.inference if spec.family == "gaussian" else "wald"
    if method == "kenward_roger" and model.matrices.n_obs > KR_MAX_NOBS:
        messages.append(f"Kenward-Roger needs n x n matrices: more than {KR_MAX_NOBS} rows, Satterthwaite df instead")
        method = "satterthwaite"
    parts = None
    while method != "wald" and parts is None:
        try:
            parts = kenward_roger(model) if method == "kenward_roger" else satterthwaite(model, evaluator, vcov)
        except (np.linalg.LinAlgError, FloatingPointError, NotImplementedError, ValueError) as e:
            fallback = "satterthwaite" if method == "kenward_roger" else "wald"
            messages.append(f"{TESTS[method]} tests failed ({e}); {TESTS[fallback]} tests instead")
            method = fallback
    if parts is None:
        se = np.sqrt(np.diag(vcov))
        fixef = pd.DataFrame({"term": names, "estimate": beta, "std_error": se})
    else:
        fixef = fixed_effect_tests(names, beta, parts)
    table = _NO_ANOVA  # shared, never changed: a study's refits ask for no anova table
    if terms:
        try:
            contrasts = anova.type3_contrasts(np.asarray(model.matrices.X, dtype=float), names, terms, frame)
            table = anova.anova_table(contrasts, beta, vcov, parts)
        except (np.linalg.LinAlgError, ValueError) as e:
            messages.append(f"type III anova not computed: {e}")
    return fixef, table, TESTS[method], messages, parts
