"""Predictions for new rows: R's ``predict(fit, newdata, re.form, allow.new.levels = TRUE)``
with intervals.

A model's ``predict:`` config names the rows (``newdata:`` a CSV/Parquet file, or
``grid:`` values per column, crossed), ``re_form`` (``conditional``: with the random
effects, rows of groups the fit never saw getting the population prediction, as
``allow.new.levels = TRUE``; ``population``: fixed effects only, as ``re.form = NA``),
``interval`` (none, confidence, prediction) and ``level``. New rows are coded by the
one model-matrix builder with the fit's transform state (factor levels and contrasts,
``scale`` centres, ``poly`` coefficients), never recomputed on the new rows.

Intervals, on the link scale and mapped to the response scale by the inverse link:

- ``confidence``: eta +/- q sqrt(x' V x), V the covariance of the fixed effects (the
  random effects, where included, are taken as known); for gaussian mixedlm fits q is
  Student's t with the df of x'beta by the model's inference method (Satterthwaite's;
  or Kenward-Roger's, with V its adjusted covariance, as emmeans takes them), the
  normal quantile otherwise.
- ``prediction``: adds the random effects' variance -- for a seen level under
  ``conditional`` the conditional variance of z'b (lme4's ``postVar``: cond_sd^2 per
  random-effect column and, from the fit's ``ranef_cov``, the covariance between a
  level's intercept and slope, from either engine), for an unseen level or under
  ``population`` z' Sigma z with Sigma the term's estimated covariance -- and, for
  gaussian models, the residual variance; the normal quantile. For binomial/Poisson
  models it is an interval for the mean of a new group, not for a single 0/1 or
  count outcome.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glmm_steps import model_matrix
from glmm_steps.errors import ConfigError, DataError
from glmm_steps.formula import Formula
from glmm_steps.inference import KenwardRogerParts, kenward_roger_df
from glmm_steps.model_matrix import ModelMatrix, level_text

RE_FORMS = ("conditional", "population")
INTERVALS = ("none", "confidence", "prediction")


# ---- links --------------------------------------------------------------------------


def inverse_link(family: str, eta: np.ndarray) -> np.ndarray:
    """The mean on the response scale for the linear predictor ``eta``."""
    from scipy import special

    if family == "binomial":
        return special.expit(eta)
    if family == "poisson":
        return np.exp(eta)
    return np.asarray(eta, dtype=float)


def mu_eta(family: str, eta: np.ndarray) -> np.ndarray:
    """d mean / d eta, for delta-method standard errors on the response scale."""
    from scipy import special

    if family == "binomial":
        p = special.expit(eta)
        return p * (1 - p)
    if family == "poisson":
        return np.exp(eta)
    return np.ones_like(np.asarray(eta, dtype=float))


# ---- new rows through the model-matrix builder --------------------------------------


def design_for(
    formula: Formula, rows: pd.DataFrame, state: dict[str, Any], factors=(), where: str = "newdata"
) -> ModelMatrix:
    """The model matrices of ``rows`` coded with a fit's transform ``state``. The
    response is not needed: its columns are filled with a placeholder when absent."""
    rows = rows.reset_index(drop=True).copy()
    for c in formula.response_columns:
        if c not in rows.columns:
            rows[c] = 1.0
    return model_matrix.build(formula, rows, factors, state=state, where=where)


def _kr_parts(result) -> KenwardRogerParts | None:
    if result.vcov_adjusted is None or result.kr_P is None or result.kr_W is None:
        return None
    return KenwardRogerParts(vcov=result.vcov, vcov_adj=result.vcov_adjusted, P=result.kr_P, W=result.kr_W)


def fixed_vcov(result) -> np.ndarray:
    """The fixed effects' covariance that marginal means, contrasts and confidence
    intervals of predictions take: a Kenward-Roger fit's adjusted one (as emmeans'
    ``lmer.df = "kenward-roger"``), else the fit's ``vcov``."""
    return result.vcov_adjusted if result.vcov_adjusted is not None else result.vcov


def df_of(result, L: np.ndarray) -> np.ndarray:
    """The df of each row of ``L`` (linear combinations of the fixed effects) by the
    fit's method: Kenward-Roger's (pbkrtest's ``Lb_ddf``) for a Kenward-Roger fit,
    else Satterthwaite's from the fit's parts; infinite (normal reference) where the
    fit has neither (GLMMs, ``inference: wald``)."""
    L = np.atleast_2d(L)
    # a model tested by Wald z (issue 14's `inference: wald`) gets the normal reference here too
    if getattr(result.spec, "inference", None) == "wald":
        return np.full(len(L), np.inf)
    kr = _kr_parts(result)
    if kr is not None:
        return kenward_roger_df(L, kr)
    if result.vcov_jacobian is None or result.vcov_varpar is None:
        return np.full(len(L), np.inf)
    V = result.vcov
    var = np.einsum("ij,jk,ik->i", L, V, L)
    grad = np.einsum("ij,mjk,ik->im", L, result.vcov_jacobian, L)
    denom = np.einsum("im,mn,in->i", grad, result.vcov_varpar, grad)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, 2 * var**2 / denom, np.inf)


def quantile(level: float, df: np.ndarray) -> np.ndarray:
    """The two-sided ``level`` quantile of Student's t with ``df`` (normal where infinite)."""
    from scipy import special

    df = np.asarray(df, dtype=float)
    p = 0.5 + level / 2
    return np.where(np.isfinite(df), special.stdtrit(np.where(np.isfinite(df), df, 1.0), p), special.ndtri(p))


def _group_keys(rows: pd.DataFrame, group: tuple[str, ...]) -> np.ndarray:
    """Each row's level of a (possibly nested ``a:b``) grouping factor, as the engines
    name levels in random_effects.csv (``A/1`` for ``recipe:replicate``)."""
    parts = [rows[g].map(lambda v: None if pd.isna(v) else level_text(v)) for g in group]
    return np.array(["/".join(p) if all(x is not None for x in p) else "" for p in zip(*parts)], dtype=object)


def re_covariance(varcorr: pd.DataFrame, group: str, names: list[str]) -> np.ndarray:
    """The estimated covariance of the random-effect columns ``names`` of ``group``."""
    rows = varcorr[varcorr["group"] == group]
    var = {t: v for t, v in zip(rows["term"], rows["variance"]) if not str(t).startswith("cor(")}
    S = np.diag([float(var.get(n, 0.0)) for n in names])
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i < j:
                hit = rows[rows["term"].isin([f"cor({a},{b})", f"cor({b},{a})"])]
                if len(hit):
                    S[i, j] = S[j, i] = float(hit["variance"].iloc[0])
    return S


def random_part(
    result, formula: Formula, design: ModelMatrix, rows: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each new row: (z'b, the conditional variance of z'b for seen levels, z' Sigma z
    for unseen levels (0 where seen), the names of the unseen grouping factors).
    An unseen level's b is 0: the population prediction for that factor."""
    n = len(rows)
    zb, var_seen, var_new = np.zeros(n), np.zeros(n), np.zeros(n)
    unseen = [[] for _ in range(n)]
    ranef = result.ranef
    for term, block in zip(formula.random, design.random):
        keys = _group_keys(rows, term.group)
        sub = ranef[ranef["group"] == term.group_name]
        seen = np.isin(keys, sub["level"].astype(str).unique())
        for j, name in enumerate(block.names):
            values = sub[sub["term"] == name].set_index(sub["level"].astype(str)[sub["term"] == name])
            b = pd.Series(keys).map(values["estimate"]).fillna(0.0).to_numpy(dtype=float)
            sd = pd.Series(keys).map(values["cond_sd"]).fillna(0.0).to_numpy(dtype=float)
            zb += block.values[:, j] * b
            var_seen += (block.values[:, j] * sd) ** 2
        var_seen += _seen_covariance(result, term.group_name, block, keys)
        S = re_covariance(result.varcorr, term.group_name, block.names)
        quad = np.einsum("ij,jk,ik->i", block.values, S, block.values)
        var_new += np.where(seen, 0.0, quad)
        for i in np.flatnonzero(~seen):
            if term.group_name not in unseen[i]:
                unseen[i].append(term.group_name)
    return zb, var_seen, var_new, np.array([";".join(u) for u in unseen], dtype=object)


def _seen_covariance(result, group: str, block, keys: np.ndarray) -> np.ndarray:
    """2 sum_{a<b} z_a z_b cov(b_a, b_b | y) for each row's level of ``group``: the part of
    z'b's conditional variance between a level's random effects (its intercept and
    slope). Zero where the fit has no ``ranef_cov`` (the engine gives none)."""
    out = np.zeros(len(keys))
    cov = result.ranef_cov
    if cov is None or len(block.names) < 2:
        return out
    cov = cov[cov["group"] == group]
    for a, b in itertools.combinations(range(len(block.names)), 2):
        pair = {block.names[a], block.names[b]}
        hit = cov[[{x, y} == pair for x, y in zip(cov["term_a"], cov["term_b"])]]
        by_level = pd.Series(hit["covariance"].to_numpy(dtype=float), index=hit["level"].astype(str))
        c = pd.Series(keys).map(by_level).fillna(0.0).to_numpy(dtype=float)
        out += 2 * block.values[:, a] * block.values[:, b] * c
    return out


def population_variance(result, formula: Formula, design: ModelMatrix) -> np.ndarray:
    """z' Sigma z summed over the random terms: the variance of a new group's effects."""
    total = np.zeros(len(design.X))
    for term, block in zip(formula.random, design.random):
        S = re_covariance(result.varcorr, term.group_name, block.names)
        total += np.einsum("ij,jk,ik->i", block.values, S, block.values)
    return total


def residual_variance(result) -> float:
    """sigma^2 of a gaussian fit (0 for binomial/Poisson)."""
    rows = result.varcorr[result.varcorr["group"] == "Residual"]
    return float(rows["variance"].iloc[0]) if len(rows) else 0.0


def predict_new(
    result, formula: Formula, rows: pd.DataFrame, spec: dict[str, Any], factors=(), where: str = "newdata"
) -> pd.DataFrame:
    """The ``predict:`` table of ``rows`` (see the module docstring): the rows plus
    ``predicted`` (response scale), ``std_error`` (of the interval's variance,
    response scale by the delta method for GLMMs), ``conf_low``/``conf_high``,
    ``df`` (confidence intervals), ``new_levels`` (grouping factors at levels the fit
    never saw, predicted at the population level) and for binomial/Poisson models the
    same on the link scale (``predicted_link``, ``std_error_link``, ``conf_low_link``,
    ``conf_high_link``). Raises DataError for rows the fit's transforms cannot code."""
    re_form = spec.get("re_form", "conditional")
    interval = spec.get("interval", "confidence")
    level = float(spec.get("level", 0.95))
    family = result.spec.family
    design = design_for(formula, rows, result.transform_state, factors, where)
    beta = result.fixef["estimate"].to_numpy(dtype=float)
    eta = design.X @ beta
    if formula.offset:
        off = rows[formula.offset].to_numpy(dtype=float)
        eta = eta + (np.log(off) if formula.offset_log else off)
    out = rows.reset_index(drop=True).copy()
    if re_form == "conditional":
        zb, var_seen, var_new, unseen = random_part(result, formula, design, out)
        eta = eta + zb
        out["new_levels"] = unseen
    else:
        var_seen, var_new = np.zeros(len(eta)), population_variance(result, formula, design)
    V = fixed_vcov(result)
    se_fixed = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", design.X, V, design.X), 0.0))
    out["predicted"] = inverse_link(family, eta)
    link = family != "gaussian"
    if interval == "none":
        if link:
            out["predicted_link"] = eta
        return out
    if interval == "confidence":
        se = se_fixed
        df = df_of(result, design.X)
    else:
        se = np.sqrt(se_fixed**2 + var_seen + var_new + residual_variance(result))
        df = np.full(len(eta), np.inf)
    q = quantile(level, df)
    out["std_error"] = se * mu_eta(family, eta) if link else se
    out["df"] = df
    out["conf_low"] = inverse_link(family, eta - q * se)
    out["conf_high"] = inverse_link(family, eta + q * se)
    if link:
        out["predicted_link"] = eta
        out["std_error_link"] = se
        out["conf_low_link"] = eta - q * se
        out["conf_high_link"] = eta + q * se
    return out


# ---- the rows: a file or a grid -------------------------------------------------------


def grid_frame(grid: dict[str, list]) -> pd.DataFrame:
    """Every combination of the ``grid:`` values, first column varying slowest."""
    names = list(grid)
    return pd.DataFrame(list(itertools.product(*(grid[n] for n in names))), columns=names)


def new_rows(spec: dict[str, Any]) -> pd.DataFrame:
    """The rows a ``predict:`` entry asks for: its ``newdata`` file or its ``grid``."""
    from glmm_steps.data import read_data

    if spec.get("newdata"):
        return read_data(spec["newdata"])
    return grid_frame(spec["grid"])


def needed_columns(formula: Formula, re_form: str) -> list[str]:
    """The columns new rows must hold: every column the formula reads but the
    response, and the grouping columns only for conditional predictions."""
    skip = set(formula.response_columns)
    if re_form == "population":
        skip |= set(formula.grouping_factors) - set(formula.fixed_variables) - set(formula.slope_columns)
    return [c for c in formula.columns if c not in skip]


def check(name: str, spec: dict[str, Any], formula: Formula, state: dict[str, Any] | None = None, factors=()) -> None:
    """Refuse a ``predict:`` entry before any job, in one line: exactly one of
    ``newdata``/``grid``, a readable file, every column the prediction needs, numbers
    where the formula needs numbers, and (given the fit's transform ``state``, known
    before the fit for a data file) only factor levels the fit has."""
    key = f"models.{name}.predict"
    if ("newdata" in spec) == ("grid" in spec):
        raise ConfigError(key, "give exactly one of newdata (a CSV or Parquet file) or grid (values per column)")
    where = f"{key}.newdata" if "newdata" in spec else f"{key}.grid"
    if "newdata" in spec and not Path(spec["newdata"]).is_file():
        raise ConfigError(where, f"no such file: {spec['newdata']}")
    try:
        rows = new_rows(spec)
    except DataError as e:
        raise ConfigError(where, str(e)) from None
    if rows.empty:
        raise ConfigError(where, "no rows to predict")
    missing = [c for c in needed_columns(formula, spec.get("re_form", "conditional")) if c not in rows.columns]
    if missing:
        raise ConfigError(
            where,
            f"column '{missing[0]}' is missing (the formula {formula.text!r} needs "
            f"{', '.join(needed_columns(formula, spec.get('re_form', 'conditional')))})",
        )
    if state is None:
        # a simulated dataset: every column but the grouping ids and declared factors is a number
        declared = set(model_matrix.factor_columns(factors))
        for c in needed_columns(formula, spec.get("re_form", "conditional")):
            if c in formula.grouping_factors or c in declared:
                continue
            if not pd.api.types.is_numeric_dtype(rows[c]) or pd.api.types.is_bool_dtype(rows[c]):
                raise ConfigError(
                    where,
                    f"column '{c}' must hold numbers (the formula {formula.text!r} "
                    f"uses it as a covariate), got {rows[c].iloc[0]!r}",
                )
        return
    try:
        design_for(formula, _fill_groups(rows, formula), state, factors, where=where)
    except DataError as e:
        raise ConfigError(where, str(e).removeprefix(f"{where}: ")) from None


def _fill_groups(rows: pd.DataFrame, formula: Formula) -> pd.DataFrame:
    """Rows with any grouping column they lack filled (population predictions do
    not read them; the builder does not either, but the frame must be whole)."""
    rows = rows.copy()
    for g in formula.grouping_factors:
        if g not in rows.columns:
            rows[g] = "(new)"
    return rows
