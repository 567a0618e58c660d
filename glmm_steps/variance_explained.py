"""Intraclass correlation and Nakagawa's R², with the performance package's definitions
(performance 0.10.2 / insight: ``icc()``, ``r2_nakagawa()``).

With var_f the variance of the fixed-effect predictions X beta (n - 1 denominator),
var_r the random effects' variance (per grouping term, the mean over rows of
z' Sigma z: its variance for a random intercept, Johnson's extension with slopes) and
var_e the distribution-specific variance:

- ICC adjusted = var_r / (var_r + var_e); ICC conditional = var_r / (var_f + var_r + var_e);
- R² marginal = var_f / (var_f + var_r + var_e); R² conditional = (var_f + var_r) / (...).

var_e is sigma^2 for gaussian models; pi^2/3 for binomial logit and 1 for probit;
for Poisson with a log link log(1 + 1/mu), mu = exp(intercept of the null model, the
model refitted with the same random effects and no fixed effects but the intercept),
as insight's lognormal approximation. Where performance does not give a number --
a singular fit (a variance component at zero), random slopes missing from the
fixed part, a Bayesian approximation, another link -- the values are empty and
``note`` says why.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from glmm_steps.formula import Formula
from glmm_steps.model_matrix import ModelMatrix
from glmm_steps.predict import re_covariance

FIELDS = (
    "icc_adjusted",
    "icc_conditional",
    "r2_marginal",
    "r2_conditional",
    "variance_fixed",
    "variance_random",
    "variance_residual",
)
DISTRIBUTION_VARIANCE = {("binomial", "logit"): np.pi**2 / 3, ("binomial", "probit"): 1.0}


def empty(note: str) -> dict[str, Any]:
    """The record with every value empty and ``note`` saying why."""
    return {k: None for k in FIELDS} | {"note": note}


def null_formula(formula: Formula) -> str:
    """The null model of ``formula``: the same response, random terms and offset, and
    an intercept as the only fixed effect (insight's ``null_model``)."""
    lhs = formula.text.split("~", 1)[0].strip()
    rhs = ["1"] + [str(t) for t in formula.random]
    if formula.offset:
        rhs.append(f"offset(log({formula.offset}))" if formula.offset_log else f"offset({formula.offset})")
    return f"{lhs} ~ {' + '.join(rhs)}"


def problem(result, formula: Formula) -> str | None:
    """Why performance gives no ICC/R² for this fit (None: it does)."""
    spec = result.spec
    if not result.ok:
        return "the fit failed"
    if not spec.maximum_likelihood:
        return f"not defined for a Bayesian approximation ({spec.method})"
    if (spec.family, spec.link) not in DISTRIBUTION_VARIANCE and spec.family not in ("gaussian", "poisson"):
        return f"no distribution-specific variance for family {spec.family} with link {spec.link}"
    if result.singular:
        return "a variance component is (near) zero (singular fit): performance gives no ICC or R² here either"
    fixed = set(formula.fixed_variables) | set(formula.fixed_term_labels)
    missing = [s for t in formula.random for s in t.slopes if s not in fixed]
    if missing:
        return (
            f"random slope '{missing[0]}' is not a fixed effect: performance warns that this "
            "inflates the random-effect variance, so no value is given"
        )
    return None


def variance_explained(
    result, formula: Formula, design: ModelMatrix, null_intercept: float | None = None
) -> dict[str, Any]:
    """ICC and Nakagawa's R² of a fit (module docstring): FIELDS plus ``note``.
    ``design`` is the fit's model matrix; ``null_intercept`` the null model's
    intercept (Poisson models only)."""
    why = problem(result, formula)
    if why:
        return empty(why)
    beta = result.fixef["estimate"].to_numpy(dtype=float)
    var_f = float(np.var(design.X @ beta, ddof=1)) if len(design.X) > 1 else 0.0
    var_r = 0.0
    for term, block in zip(formula.random, design.random):
        S = re_covariance(result.varcorr, term.group_name, block.names)
        var_r += float(np.mean(np.einsum("ij,jk,ik->i", block.values, S, block.values)))
    family = result.spec.family
    if family == "gaussian":
        rows = result.varcorr[result.varcorr["group"] == "Residual"]
        var_e = float(rows["variance"].iloc[0])
    elif family == "poisson":
        if null_intercept is None or not np.isfinite(null_intercept):
            return empty("the null model (intercept and random effects) could not be fitted")
        var_e = float(np.log1p(1.0 / np.exp(null_intercept)))
    else:
        var_e = DISTRIBUTION_VARIANCE[(family, result.spec.link)]
    total = var_f + var_r + var_e
    return {
        "icc_adjusted": var_r / (var_r + var_e),
        "icc_conditional": var_r / total,
        "r2_marginal": var_f / total,
        "r2_conditional": (var_f + var_r) / total,
        "variance_fixed": var_f,
        "variance_random": var_r,
        "variance_residual": var_e,
        "note": None,
    }
