"""Tidy tables from a fit, in the spirit of R's broom.mixed.

``tidy`` (one row per fixed effect), ``variance_components`` and ``random_effects``
(one row per group/level/term), ``augment`` (one row per observation) and
``glance`` (one record per fit). Column names are the same for every model and
engine, so tables from many fits concatenate without glue code. Numbers are written
with ``FLOAT_FORMAT`` (10 significant digits): enough for any comparison with lme4,
and stable across machines whose BLAS differ in the last bits.
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

from glmm_steps.engines.base import FitResult

FLOAT_FORMAT = "%.10g"
Z_95 = float(special.ndtri(0.975))

FIXED_COLUMNS = ["term", "estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high"]
PREDICTION_COLUMNS = ["observed", "fitted", "fitted_marginal", "residual"]


def tidy(result: FitResult) -> pd.DataFrame:
    """Fixed effects with Wald statistics: term, estimate, std_error, statistic
    (estimate / std_error), p_value (two-sided, normal reference), conf_low and
    conf_high (95% Wald interval)."""
    fe = result.fixef
    est = fe["estimate"].to_numpy(dtype=float)
    se = fe["std_error"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = est / se
    return pd.DataFrame({
        "term": fe["term"].to_numpy(),
        "estimate": est,
        "std_error": se,
        "statistic": z,
        "p_value": 2 * special.ndtr(-np.abs(z)),
        "conf_low": est - Z_95 * se,
        "conf_high": est + Z_95 * se,
    }, columns=FIXED_COLUMNS)


def variance_components(result: FitResult) -> pd.DataFrame:
    """Variance components: group, term, variance, sd, correlation (rows ``cor(a,b)``
    carry the covariance in ``variance``; gaussian models end with a Residual row)."""
    return result.varcorr.reset_index(drop=True)


def random_effects(result: FitResult) -> pd.DataFrame:
    """Conditional modes (BLUPs): group, level, term, estimate, cond_sd."""
    return result.ranef.reset_index(drop=True)


def augment(result: FitResult) -> pd.DataFrame:
    """The fitted rows with observed, fitted (given the random effects),
    fitted_marginal (fixed effects only) and residual (observed - fitted), all on
    the response scale (probabilities for binomial, means for Poisson)."""
    frame = result.frame if result.frame is not None else pd.DataFrame()
    out = frame.copy()
    if result.fitted is None:
        for col in PREDICTION_COLUMNS:
            out[col] = np.nan
        return out
    out["observed"] = result.observed
    out["fitted"] = result.fitted
    out["fitted_marginal"] = result.fitted_marginal
    out["residual"] = result.observed - result.fitted
    return out


def _finite(x: Any) -> Any:
    if isinstance(x, float | np.floating):
        x = float(x)
        return float(FLOAT_FORMAT % x) if math.isfinite(x) else None
    return x


def glance(result: FitResult, *, seed: int | None = None, data_path: str | None = None) -> dict[str, Any]:
    """One record describing the fit: model, data, engine, nobs, levels per
    grouping factor, logLik, AIC, BIC, deviance, convergence, singularity,
    warnings, error and wall time. JSON-ready (non-finite numbers become null)."""
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
        "status": status(result),
        "warnings": list(result.warnings),
        "error": result.error,
        "optimizer": result.optimizer,
        "wall_time_s": round(result.wall_time_s, 3) if math.isfinite(result.wall_time_s) else None,
    }
    return {k: _finite(v) for k, v in record.items()}


def status(result: FitResult) -> str:
    """One word for a fit: ``failed``, ``not_converged``, ``singular`` or ``ok``."""
    if result.error:
        return "failed"
    if not result.converged:
        return "not_converged"
    if result.singular:
        return "singular"
    return "ok"


def write_csv(table: pd.DataFrame, path: str | Path) -> None:
    """Write a table as CSV with the project's fixed float format."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def write_json(record: dict[str, Any], path: str | Path) -> None:
    """Write a JSON record with sorted-free, stable formatting (2-space indent)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2) + "\n")


def extract(result: FitResult, outputs: dict[str, str | Path], *, seed: int | None = None,
            data_path: str | None = None) -> dict[str, Any]:
    """Write every tidy table of ``result`` to ``outputs`` (keys: fixed_effects,
    variance_components, random_effects, predictions, fit_stats). Returns the
    glance record written to fit_stats."""
    write_csv(tidy(result), outputs["fixed_effects"])
    write_csv(variance_components(result), outputs["variance_components"])
    write_csv(random_effects(result), outputs["random_effects"])
    write_csv(augment(result), outputs["predictions"])
    record = glance(result, seed=seed, data_path=data_path)
    write_json(record, outputs["fit_stats"])
    return record
