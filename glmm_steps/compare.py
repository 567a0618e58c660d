"""Model comparison as lme4's ``anova()``: likelihood-ratio tests and information criteria.

Models are compared by their maximum-likelihood fits: a gaussian model fitted by REML
is refitted by ML first (REML likelihoods of models with different fixed effects are
not comparable), as ``anova(refit = TRUE)`` does. As in lme4, the models are ordered
by their number of parameters and each is tested against the one before it:
``chisq = 2 * max(0, logLik - logLik_before)`` on ``df = npar - npar_before`` degrees of
freedom. Problems that lme4 stops on (a failed fit, models fitted to different rows)
are written into the tables' ``note`` column instead, with no test.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from glmm_steps.engines.base import FitResult

LRT_COLUMNS = ["model", "formula", "npar", "logLik", "deviance", "chisq", "df", "p_value", "refitted_ml", "note"]
IC_COLUMNS = [
    "model",
    "formula",
    "method",
    "nobs",
    "npar",
    "logLik",
    "AIC",
    "BIC",
    "delta_AIC",
    "delta_BIC",
    "refitted_ml",
    "note",
]


def ml_fit(result: FitResult) -> tuple[FitResult, bool]:
    """``result`` itself when it is a likelihood fit, or its ML refit (same engine,
    same rows) when it was fitted by REML. Returns (fit, refitted)."""
    from glmm_steps.fit import fit_model

    if result.spec.family != "gaussian" or not result.spec.reml or not result.ok:
        return result, False
    spec = dataclasses.replace(result.spec, reml=False)
    return fit_model(result.frame, spec, where=f"model {spec.name}", state=result.transform_state or None), True


def compare(fits: list[FitResult], refitted: list[bool] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Likelihood-ratio and information-criteria tables of ``fits`` (maximum-likelihood
    fits of one response on one dataset; ``refitted`` marks ML refits of REML fits).

    Returns (likelihood_ratio, information_criteria), rows ordered by npar
    (columns LRT_COLUMNS and IC_COLUMNS)."""
    refitted = refitted or [False] * len(fits)
    order = sorted(range(len(fits)), key=lambda i: fits[i].npar)  # stable, as R's order()
    fits = [fits[i] for i in order]
    refitted = [refitted[i] for i in order]
    notes = [f"fit failed: {f.error}" if not f.ok else "" for f in fits]
    nobs = {f.nobs for f in fits if f.ok}
    if len(nobs) > 1:
        notes = [n or f"fitted to {f.nobs} rows; compared models must share their rows" for n, f in zip(notes, fits)]
    testable = not any(notes)
    ll = np.array([f.loglik if f.ok else np.nan for f in fits])
    npar = np.array([f.npar for f in fits], dtype=float)
    chisq = np.r_[np.nan, 2 * np.maximum(0.0, np.diff(ll))]
    df = np.r_[np.nan, np.diff(npar)]
    with np.errstate(invalid="ignore"):
        p = np.where(df == 0, np.nan, stats.chi2.sf(chisq, df))
    if not testable:
        chisq[:] = df[:] = p[:] = np.nan
    common = {"model": [f.spec.name for f in fits], "formula": [f.spec.formula for f in fits]}
    lrt = pd.DataFrame(
        {
            **common,
            "npar": npar.astype(int),
            "logLik": ll,
            "deviance": -2 * ll,
            "chisq": chisq,
            "df": df,
            "p_value": p,
            "refitted_ml": refitted,
            "note": notes,
        },
        columns=LRT_COLUMNS,
    )
    aic = np.array([f.aic if f.ok else np.nan for f in fits])
    bic = np.array([f.bic if f.ok else np.nan for f in fits])
    ic = pd.DataFrame(
        {
            **common,
            "method": [f.spec.method for f in fits],
            "nobs": [f.nobs for f in fits],
            "npar": npar.astype(int),
            "logLik": ll,
            "AIC": aic,
            "BIC": bic,
            "delta_AIC": aic - np.nanmin(aic) if np.isfinite(aic).any() else aic,
            "delta_BIC": bic - np.nanmin(bic) if np.isfinite(bic).any() else bic,
            "refitted_ml": refitted,
            "note": notes,
        },
        columns=IC_COLUMNS,
    )
    return lrt, ic


def compare_files(fit_paths: list[str | Path], outputs: dict[str, str | Path]) -> pd.DataFrame:
    """The compare step: read fits (glmm_steps.fit.save_fit; the model being compared
    first), refit REML fits by ML, write ``outputs["likelihood_ratio"]`` and
    ``outputs["information_criteria"]``. Returns the likelihood-ratio table."""
    from glmm_steps.extract import write_csv
    from glmm_steps.fit import load_fit

    pairs = [ml_fit(load_fit(p)) for p in fit_paths]
    lrt, ic = compare([f for f, _ in pairs], [r for _, r in pairs])
    write_csv(lrt, outputs["likelihood_ratio"])
    write_csv(ic, outputs["information_criteria"])
    return lrt
