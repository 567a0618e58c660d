"""Estimated marginal means and their pairwise contrasts, as R's emmeans computes them.

The reference grid crosses every factor of the fixed part (its fitted levels) with each
covariate at its mean over the fitted rows (an offset: the offset's mean), or at the
values ``at:`` gives; rows are
coded by the one model-matrix builder with the fit's transform state. A marginal
mean of a ``specs`` combination (within each ``by`` combination) is the equally
weighted average of its grid rows' linear predictors: L beta, with standard error
sqrt(L V L'). Its df follow the model's inference for gaussian mixedlm fits:
Satterthwaite (lmerTest, as emmeans' ``lmer.df = "satterthwaite"``), or Kenward-Roger
(pbkrtest's ``Lb_ddf``, with V its adjusted covariance, as ``lmer.df =
"kenward-roger"``); asymptotic (Inf, normal reference) for binomial/Poisson fits, for
``inference: wald`` and for statsmodels.

For binomial and Poisson models the means are reported on the response scale, as
emmeans' ``type = "response"``: the inverse link of the mean, its standard error by
the delta method, the interval the inverse link of the link-scale interval; their
contrasts are back-transformed ratios (odds ratios for logit, rate ratios for log),
standard error ratio x SE on the link scale, tests on the link scale.

Adjustments for the pairs of one family (one ``by`` combination): ``tukey`` (the
studentized range with the family's number of means), ``holm`` (p values; intervals
Bonferroni, as emmeans), ``bonferroni``, ``none``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from glmm_steps.errors import ConfigError
from glmm_steps.formula import Formula, columns_of
from glmm_steps.model_matrix import level_text
from glmm_steps.predict import design_for, df_of, fixed_vcov, inverse_link, mu_eta, quantile

ADJUSTMENTS = ("tukey", "holm", "bonferroni", "none")
EMMEANS_COLUMNS = ["estimate", "std_error", "df", "conf_low", "conf_high", "scale"]
CONTRAST_COLUMNS = [
    "contrast",
    "estimate",
    "std_error",
    "df",
    "statistic",
    "p_value",
    "conf_low",
    "conf_high",
    "adjust",
    "scale",
]


def _factor_columns(state: dict[str, Any]) -> dict[str, list[str]]:
    """Fixed-part factor columns and their fitted levels, from the transform state."""
    out: dict[str, list[str]] = {}
    for spec in state.get("factors", {}).values():
        out.setdefault(spec["column"], list(spec["levels"]))
    return out


def covariates(formula: Formula, state: dict[str, Any]) -> list[str]:
    """The numeric columns of the fixed part (and of random slopes), in formula order."""
    factors = _factor_columns(state)
    cols = list(dict.fromkeys(list(formula.fixed_variables) + list(formula.slope_columns)))
    out = []
    for label in cols:
        node = formula.variables.get(label)
        for c in columns_of(node) if node is not None else [label]:
            if c not in factors and c not in out and c not in formula.grouping_factors:
                out.append(c)
    return out


def reference_grid(result, formula: Formula, at: dict[str, list] | None = None) -> pd.DataFrame:
    """emmeans' reference grid: factors at their levels, covariates at their means over
    the fitted rows (or ``at``'s values), crossed; first column varying slowest."""
    at = dict(at or {})
    state = result.transform_state
    values: dict[str, list] = {}
    for col, levels in _factor_columns(state).items():
        values[col] = [level_text(v) for v in at.get(col, levels)]
    for col in covariates(formula, state):
        values[col] = list(at[col]) if col in at else [float(result.frame[col].astype(float).mean())]
    if formula.offset and formula.offset not in values:
        # emmeans puts an offset at its mean over the data: for offset(log(n)) the mean
        # of log(n) (n at its geometric mean), not log of n's mean
        raw = result.frame[formula.offset].astype(float)
        values[formula.offset] = (
            list(at[formula.offset])
            if formula.offset in at
            else [float(np.exp(np.log(raw).mean())) if formula.offset_log else float(raw.mean())]
        )
    names = list(values)
    grid = pd.DataFrame(list(itertools.product(*(values[n] for n in names))), columns=names)
    for g in formula.grouping_factors:
        if g not in grid.columns:
            grid[g] = "(grid)"
    return grid


def _families(grid: pd.DataFrame, specs: list[str], by: list[str]):
    """(by key, [(spec key, grid row indices)]) in emmeans' order: the first spec
    varies fastest."""

    def key(cols, row):
        return tuple(str(row[c]) for c in cols)

    levels = {c: list(dict.fromkeys(str(v) for v in grid[c])) for c in specs + by}
    by_keys = list(itertools.product(*(levels[c] for c in by))) if by else [()]
    spec_keys = [tuple(reversed(k)) for k in itertools.product(*(levels[c] for c in reversed(specs)))]
    rows = {c: grid[c].astype(str).to_numpy() for c in specs + by}
    out = []
    for bk in by_keys:
        in_by = np.ones(len(grid), dtype=bool)
        for c, v in zip(by, bk):
            in_by &= rows[c] == v
        members = []
        for sk in spec_keys:
            mask = in_by.copy()
            for c, v in zip(specs, sk):
                mask &= rows[c] == v
            if mask.any():
                members.append((sk, np.flatnonzero(mask)))
        out.append((bk, members))
    return out


def marginal_means(result, formula: Formula, spec: dict[str, Any], factors=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(emmeans, contrasts)`` of an ``emmeans:`` entry (``specs``, optional ``by``,
    ``at``, ``pairs`` (default true), ``adjust`` (default tukey), ``level``): one row
    per mean (the specs and by columns, then EMMEANS_COLUMNS) and one per pair
    (by columns, then CONTRAST_COLUMNS); the contrasts table is empty without pairs."""
    specs, by = list(spec["specs"]), list(spec.get("by") or [])
    level = float(spec.get("level", 0.95))
    family = result.spec.family
    grid = reference_grid(result, formula, spec.get("at"))
    X = design_for(formula, grid, result.transform_state, factors, where="emmeans reference grid").X
    # an offset enters at its grid value (its mean over the data unless `at` sets it)
    off = np.zeros(len(grid))
    if formula.offset:
        raw = grid[formula.offset].to_numpy(dtype=float)
        off = np.log(raw) if formula.offset_log else raw
    beta = result.fixef["estimate"].to_numpy(dtype=float)
    V = fixed_vcov(result)
    emm_rows, con_rows = [], []
    for bk, members in _families(grid, specs, by):
        if not members:
            continue
        L = np.array([X[idx].mean(axis=0) for _, idx in members])
        est = L @ beta + np.array([off[idx].mean() for _, idx in members])
        se = np.sqrt(np.einsum("ij,jk,ik->i", L, V, L))
        df = df_of(result, L)
        q = quantile(level, df)
        lo, hi = est - q * se, est + q * se
        for (sk, _), e, s, d, a, b in zip(members, est, se, df, lo, hi):
            row = dict(zip(by, bk)) | dict(zip(specs, sk))
            if family == "gaussian":
                row |= {"estimate": e, "std_error": s, "df": d, "conf_low": a, "conf_high": b, "scale": "identity"}
            else:
                row |= {
                    "estimate": float(inverse_link(family, e)),
                    "std_error": float(s * mu_eta(family, e)),
                    "df": d,
                    "conf_low": float(inverse_link(family, a)),
                    "conf_high": float(inverse_link(family, b)),
                    "scale": "response",
                }
            emm_rows.append(row)
        if spec.get("pairs", True) and len(members) > 1:
            con_rows += _pairs(
                members, L, beta, V, result, family, spec.get("adjust", "tukey"), level, dict(zip(by, bk)), specs
            )
    emm = pd.DataFrame(emm_rows, columns=by + specs + EMMEANS_COLUMNS)
    con = pd.DataFrame(con_rows, columns=by + CONTRAST_COLUMNS)
    return emm, con


def _label(key: tuple[str, ...], specs: list[str]) -> str:
    """A mean's name in a contrast, as emmeans writes it: the levels joined by spaces,
    a level that reads as a number prefixed with its column (``period1``)."""

    def one(col: str, v: str) -> str:
        try:
            float(v)
        except ValueError:
            return v
        return f"{col}{v}"

    return " ".join(one(c, v) for c, v in zip(specs, key))


def _pairs(
    members, L, beta, V, result, family: str, adjust: str, level: float, by_row: dict, specs: list[str]
) -> list[dict]:
    from scipy import special

    # scipy.stats takes a second to import: only when pairs are asked for (the config
    # check and every fit job import this module)
    from scipy.stats import studentized_range

    k = len(members)
    pairs = list(itertools.combinations(range(k), 2))
    C = np.array([L[i] - L[j] for i, j in pairs])
    est = C @ beta
    se = np.sqrt(np.einsum("ij,jk,ik->i", C, V, C))
    df = df_of(result, C)
    t = est / se
    finite = np.isfinite(df)
    dfc = np.where(finite, df, 1.0)
    raw = np.where(finite, 2 * special.stdtr(dfc, -np.abs(t)), 2 * special.ndtr(-np.abs(t)))
    m = len(pairs)
    if adjust == "tukey":
        p = np.array([studentized_range.sf(abs(ti) * np.sqrt(2), k, d) for ti, d in zip(t, df)])
        q = np.array([studentized_range.ppf(level, k, d) / np.sqrt(2) for d in df])
    elif adjust in ("holm", "bonferroni"):
        if adjust == "bonferroni":
            p = np.minimum(raw * m, 1.0)
        else:
            order = np.argsort(raw)
            stepped = np.maximum.accumulate(np.minimum(raw[order] * (m - np.arange(m)), 1.0))
            p = np.empty(m)
            p[order] = stepped
        q = quantile(1 - (1 - level) / m, df)
    else:
        p, q = raw, quantile(level, df)
    lo, hi = est - q * se, est + q * se
    ratio = family != "gaussian"
    rows = []
    for n, (i, j) in enumerate(pairs):
        a, b = _label(members[i][0], specs), _label(members[j][0], specs)
        row = dict(by_row) | {
            "contrast": f"{a} / {b}" if ratio else f"{a} - {b}",
            "df": df[n],
            "statistic": t[n],
            "p_value": p[n],
            "adjust": adjust,
        }
        if ratio:
            row |= {
                "estimate": np.exp(est[n]),
                "std_error": np.exp(est[n]) * se[n],
                "conf_low": np.exp(lo[n]),
                "conf_high": np.exp(hi[n]),
                "scale": "odds ratio" if family == "binomial" else "ratio",
            }
        else:
            row |= {"estimate": est[n], "std_error": se[n], "conf_low": lo[n], "conf_high": hi[n], "scale": "identity"}
        rows.append(row)
    return rows


def check(name: str, spec: dict[str, Any], formula: Formula, factor_cols: list[str]) -> None:
    """Refuse an ``emmeans:`` entry naming columns the model does not have, before any
    job: ``specs``, ``by`` and ``at`` must be fixed-part factors or covariates."""
    key = f"models.{name}.emmeans"
    known = set(formula.fixed_variables) | {
        c for v in formula.fixed_variables for c in columns_of(formula.variables.get(v, v))
    }
    known -= set(formula.response_columns)
    for part in ("specs", "by"):
        for i, c in enumerate(spec.get(part) or []):
            if c not in known:
                raise ConfigError(
                    f"{key}.{part}.{i}",
                    f"'{c}' is not a column of the fixed part of "
                    f"{formula.text!r} (columns: {', '.join(sorted(known))})",
                )
    for c in spec.get("at") or {}:
        if c not in known:
            raise ConfigError(f"{key}.at.{c}", f"'{c}' is not a column of the fixed part of {formula.text!r}")
    overlap = set(spec["specs"]) & set(spec.get("by") or [])
    if overlap:
        raise ConfigError(f"{key}.by", f"'{sorted(overlap)[0]}' is in both specs and by")
