"""Which parameter of a singular (boundary) fit is on its boundary, in words.

lme4 calls a fit singular when a diagonal element of a grouping factor's relative
Cholesky factor (theta: the random-effect covariance over the residual variance, for
GLMMs over 1) is below ``isSingular``'s tolerance, 1e-4. That element is the part of a
term's SD not explained by the terms before it, so it vanishes in two ways: the term's
own variance is zero, or the term is perfectly correlated with an earlier one (a
correlation at +1 or -1, with both variances well above zero). "Variance components
estimated as zero" is wrong for the second; :func:`boundary_message` names which.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TOL = 1e-4  # lme4's isSingular() tolerance on theta
NEAR_ONE = 1e-3  # a correlation this close to +-1 is the one on the boundary


def boundary_parameters(varcorr: pd.DataFrame, tol: float = TOL) -> list[str]:
    """The parameters on their boundary, one phrase each, from a variance-component
    table (columns group, term, variance, sd, correlation; a ``cor(a,b)`` row holds the
    covariance in ``variance``; gaussian fits end with the ``Residual`` row). Empty
    when no grouping factor is singular."""
    # Plain lists, not a groupby: a study calls this for each singular replicate.
    columns = zip(*(varcorr[c].tolist() for c in ("group", "term", "variance", "correlation")))
    by_group: dict[str, list[tuple[str, float, float]]] = {}
    for group, term, variance, correlation in columns:
        by_group.setdefault(group, []).append((term, float(variance), float(correlation)))
    resid = by_group.pop("Residual", [])
    scale = resid[0][1] if resid else 1.0
    found = []
    for group, rows in by_group.items():
        terms = [t for t, _, _ in rows if not str(t).startswith("cor(")]
        var = {t: v for t, v, _ in rows}
        cor = {t: r for t, _, r in rows}
        k = len(terms)
        cov = np.diag([var[t] for t in terms])
        for i in range(k):
            for j in range(i + 1, k):
                cov[i, j] = cov[j, i] = var.get(f"cor({terms[i]},{terms[j]})", 0.0)
        rel = cov / scale if scale > 0 else cov
        for i, term in enumerate(terms):
            if np.sqrt(max(rel[i, i], 0.0)) < tol:
                found.append(f"the variance of {term} for {group} is estimated as zero")
                continue
            # the part of term i's variance that the terms before it do not explain
            before = rel[:i, :i]
            cond = rel[i, i] - rel[i, :i] @ np.linalg.pinv(before) @ rel[:i, i] if i else rel[i, i]
            if np.sqrt(max(cond, 0.0)) >= tol:
                continue
            partners = [(terms[j], cor.get(f"cor({terms[j]},{term})", np.nan)) for j in range(i)]
            at_one = [(t, r) for t, r in partners if np.isfinite(r) and abs(r) > 1 - NEAR_ONE]
            if at_one:
                other, r = at_one[0]
                found.append(
                    f"the correlation of {other} and {term} for {group} is estimated at "
                    f"{'+1' if r > 0 else '-1'} (SDs {np.sqrt(var[other]):.3g} and {np.sqrt(var[term]):.3g})"
                )
            else:
                found.append(
                    f"the covariance matrix of {group} is singular: {term} is a combination of {', '.join(terms[:i])}"
                )
    return found


def boundary_message(varcorr: pd.DataFrame, tol: float = TOL) -> str:
    """The singular-fit warning naming the parameters on their boundary, e.g.
    ``boundary (singular) fit: the correlation of (Intercept) and time for hospital_id
    is estimated at +1 (SDs 1.54 and 0.313)``."""
    found = boundary_parameters(varcorr, tol)
    return "boundary (singular) fit: " + ("; ".join(found) if found else "a random-effect parameter is on its boundary")
