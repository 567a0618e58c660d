"""Tidy tables from a fit, in the spirit of R's broom.mixed.

``tidy`` (one row per fixed effect), ``variance_components`` and ``random_effects``
(one row per group/level/term), ``augment`` (one row per observation) and
``glance`` (one record per fit). Column names are the same for every model and
engine, so tables from many fits concatenate without glue code; the parameter tables
end with a ``method`` column (REML, ML, Laplace, AGQ(n), or a Bayesian approximation
labelled "not maximum likelihood"), so no table can be mistaken for another kind of
estimate once it leaves its folder. Numbers are written with ``SIGNIFICANT_DIGITS``
(10) significant digits, in CSV and Parquet alike: enough for any comparison with
lme4, and stable across machines whose BLAS differ in the last bits. Predictions and
random effects go to CSV or Parquet as their file names say (Parquet for large
fits, see :mod:`glmm_steps.tables`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# scipy.special's normal cdf and quantile are what scipy.stats.norm calls, without the
# second it takes to import scipy.stats: a study's batch job starts faster.
from scipy import special

from glmm_steps import inference, tables
from glmm_steps import residuals as residuals_mod
from glmm_steps.columns import FIXED_COLUMNS
from glmm_steps.engines.base import ANOVA_COLUMNS, FitResult
from glmm_steps.tables import SIGNIFICANT_DIGITS

FLOAT_FORMAT = f"%.{SIGNIFICANT_DIGITS}g"
Z_95 = float(special.ndtri(0.975))

PREDICTION_COLUMNS = ["observed", "fitted", "fitted_marginal", "residual"]


def tidy(result: FitResult) -> pd.DataFrame:
    """Fixed effects with their tests: term, estimate, std_error, statistic
    (estimate / std_error), df (the t test's denominator df; empty for a Wald z test),
    p_value (two-sided), conf_low and conf_high (95%: t quantiles with those df, or
    normal ones, or the fit's profile/bootstrap limits), test (``Satterthwaite t``,
    ``Kenward-Roger t`` or ``Wald z``, as the model's ``inference`` chose;
    :mod:`glmm_steps.inference`), interval (``t``, ``z``, ``profile`` or
    ``bootstrap``: how conf_low/conf_high were made), method. For a Bayesian
    approximation the estimate is a posterior mean or mode, std_error the posterior
    sd, the interval estimate +/- 1.96 sd, and statistic and p_value are empty: there
    is no likelihood to test against."""
    return pd.DataFrame({"term": result.fixef["term"].to_numpy(), **fixed_columns(result)}, columns=FIXED_COLUMNS)


def fixed_columns(result: FitResult) -> dict[str, Any]:
    """The columns of :func:`tidy` but ``term``, as arrays (or one value for test and
    method), for callers that need no table: a study's batch makes these per replicate,
    and a table per fit costs more than the refit itself."""
    fe = result.fixef
    est = np.array(tables.column(fe, "estimate"), dtype=float)
    se = np.array(tables.column(fe, "std_error"), dtype=float)
    df = np.array(tables.column(fe, "df"), dtype=float) if "df" in fe.columns else np.full_like(est, np.nan)
    stat, p, low, high = inference.t_test(est, se, df)
    interval = np.where(np.isnan(df), "z", "t").astype(object)
    limits = _interval_limits(result, "fixed", fe)
    if limits is not None:
        low, high = limits
        interval[:] = result.spec.intervals
    if not result.spec.maximum_likelihood:
        stat = p = np.full_like(est, np.nan)
    return {
        "estimate": est,
        "std_error": se,
        "statistic": stat,
        "df": df,
        "p_value": p,
        "conf_low": low,
        "conf_high": high,
        "test": result.test if result.spec.maximum_likelihood else "",
        "interval": interval,
        "method": result.spec.method,
    }


def _interval_limits(result: FitResult, effect: str, rows_of: pd.DataFrame):
    """(conf_low, conf_high) arrays from the fit's profile/bootstrap ``intervals`` for
    the rows of ``rows_of`` (by ``term``, and for ``ran_pars`` by ``group`` and ``term``),
    or None when the fit has none of that ``effect``."""
    table = getattr(result, "intervals", None)
    if table is None or not len(table) or not (table["effect"] == effect).any():
        return None
    terms = rows_of["term"]
    groups = rows_of["group"] if effect == "ran_pars" else None
    rows = table[table["effect"] == effect]
    key = dict(zip(zip(rows["group"], rows["term"]), zip(rows["conf_low"], rows["conf_high"])))
    groups = [""] * len(terms) if groups is None else list(groups)
    pairs = [key.get((g, t), (np.nan, np.nan)) for g, t in zip(groups, terms)]
    return (np.array([a for a, _ in pairs], dtype=float), np.array([b for _, b in pairs], dtype=float))


def anova(result: FitResult) -> pd.DataFrame:
    """Type III tests of the fixed-effect terms (:mod:`glmm_steps.anova`): term,
    statistic (F, or the Wald chi-square), num_df, den_df (empty for chi-square),
    p_value, test, df_method, method; no rows for an intercept-only model or a
    failed fit."""
    table = getattr(result, "anova", None)
    if table is None:
        table = pd.DataFrame(columns=ANOVA_COLUMNS)
    return table.reset_index(drop=True).assign(method=result.spec.method)


def variance_components(result: FitResult) -> pd.DataFrame:
    """Variance components: group, term, variance, sd, correlation (rows ``cor(a,b)``
    carry the covariance in ``variance``; gaussian models end with a Residual row),
    conf_low and conf_high (the interval of the SD, or of the correlation, when the
    model's ``intervals`` are profile or bootstrap; else empty), method."""
    vc = result.varcorr.reset_index(drop=True)
    limits = _interval_limits(result, "ran_pars", vc)
    low, high = limits if limits is not None else (np.full(len(vc), np.nan), np.full(len(vc), np.nan))
    return vc.assign(conf_low=low, conf_high=high, method=result.spec.method)


def random_effects(result: FitResult) -> pd.DataFrame:
    """Conditional modes (BLUPs): group, level, term, estimate, cond_sd, method
    (posterior means and sds for a Bayesian approximation)."""
    return result.ranef.reset_index(drop=True).assign(method=result.spec.method)


def augment(result: FitResult) -> pd.DataFrame:
    """The fitted rows with observed, fitted (given the random effects),
    fitted_marginal (fixed effects only) and residual (observed - fitted), all on
    the response scale (probabilities for binomial, means for Poisson)."""
    frame = result.frame if result.frame is not None else pd.DataFrame()
    # assign() shares the frame's columns (copy-on-write): a million-row fit is not copied.
    if result.fitted is None:
        return frame.assign(**{col: np.nan for col in PREDICTION_COLUMNS})
    return frame.assign(
        observed=result.observed,
        fitted=result.fitted,
        fitted_marginal=result.fitted_marginal,
        residual=result.observed - result.fitted,
    )


def _finite(x: Any) -> Any:
    """JSON-ready: floats rounded to FLOAT_FORMAT, non-finite ones None, recursively."""
    if isinstance(x, float | np.floating):
        x = float(x)
        return float(FLOAT_FORMAT % x) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, np.bool_ | np.integer):
        return x.item()
    return x


def glance(result: FitResult, *, seed: int | None = None, data_path: str | None = None) -> dict[str, Any]:
    """One record describing the fit: model, data, engine, nobs, levels per
    grouping factor, logLik, AIC, BIC, deviance, convergence, singularity, Hessian
    check, status, warnings, notes, error, wall time, ICC and R²
    (``variance_explained``) and the engine's own record (``engine_details``: e.g. statsmodels' optimizers and gradient, or a Bayesian
    fit's priors). JSON-ready (non-finite numbers become null: a Bayesian
    approximation has no logLik, AIC, BIC or deviance)."""
    spec = result.spec
    record = {
        "model": spec.name,
        "dataset": spec.dataset,
        "seed": seed,
        "data_path": data_path,
        "formula": spec.formula,
        "family": spec.family,
        "link": spec.link,
        "reml": spec.reml if spec.family == "gaussian" else None,
        "method": spec.method,
        "maximum_likelihood": spec.maximum_likelihood,
        "approximation": spec.approximation,
        "nagq": spec.nagq,
        "engine": spec.engine,
        "engine_version": result.engine_version,
        "nobs": result.nobs,
        "ngroups": dict(result.ngroups),
        "npar": result.npar,
        "logLik": result.loglik,
        "AIC": result.aic,
        "BIC": result.bic,
        "deviance": result.deviance,
        "converged": bool(result.converged),
        "singular": bool(result.singular),
        "hessian_ok": result.hessian_ok,
        "status": status(result),
        "warnings": list(result.warnings),
        "notes": list(result.notes),
        "error": result.error,
        "optimizer": result.optimizer,
        "wall_time_s": round(result.wall_time_s, 3) if math.isfinite(result.wall_time_s) else None,
        "engine_details": dict(getattr(result, "details", {}) or {}),
        # ICC and Nakagawa's R² (glmm_steps.variance_explained); empty, with a note, where
        # performance gives no number
        "variance_explained": dict(result.variance_explained or {}),
        # the family's dispersion (negative binomial theta; Gamma sigma and shape)
        "dispersion": dict(result.dispersion),
        # simulation-based residual tests (glmm_steps.residuals); {} when not computed
        "diagnostics": dict(result.diagnostics),
    }
    return {k: _finite(v) for k, v in record.items()}


def status(result: FitResult) -> str:
    """One word for a fit, the worst that applies: ``failed`` (no estimates),
    ``not_converged``, ``hessian_not_pd`` (the optimum is not a proper minimum),
    ``singular`` (a variance at zero) or ``ok``."""
    if result.error:
        return "failed"
    if not result.converged:
        return "not_converged"
    if result.hessian_ok is False:
        return "hessian_not_pd"
    if result.singular:
        return "singular"
    return "ok"


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    """Write a table as CSV or Parquet (by ``path``'s extension), numbers rounded to
    ``SIGNIFICANT_DIGITS`` significant digits (:func:`glmm_steps.tables.write_result`)."""
    tables.write_result(table, path)


def write_csv(table: pd.DataFrame, path: str | Path) -> None:
    """Write a table as CSV with the project's fixed float format (a ``.csv`` path)."""
    write_table(table, path)


def write_json(record: dict[str, Any], path: str | Path) -> None:
    """Write a JSON record with sorted-free, stable formatting (2-space indent)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2) + "\n")


def extract(
    result: FitResult, outputs: dict[str, str | Path], *, seed: int | None = None, data_path: str | None = None
) -> dict[str, Any]:
    """Write every tidy table of ``result`` to ``outputs`` (keys: fixed_effects,
    variance_components, random_effects, predictions, fit_stats and, when given, anova
    and scaled_residuals), each table as CSV or Parquet by its path's extension. Returns
    the glance record written to fit_stats."""
    write_table(tidy(result), outputs["fixed_effects"])
    if "anova" in outputs:
        write_table(anova(result), outputs["anova"])
    write_table(variance_components(result), outputs["variance_components"])
    write_table(random_effects(result), outputs["random_effects"])
    write_table(augment(result), outputs["predictions"])
    if "scaled_residuals" in outputs:
        write_table(residuals_mod.residual_table(result), outputs["scaled_residuals"])
    record = glance(result, seed=seed, data_path=data_path)
    write_json(record, outputs["fit_stats"])
    return record
