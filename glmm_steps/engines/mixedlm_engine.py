"""The default engine: mixedlm, a Python implementation of lme4's algorithms
(``lmer`` by profiled REML/ML, ``glmer`` by Laplace or adaptive Gauss-Hermite)."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pandas as pd

from glmm_steps.engines.base import FitResult, ModelSpec
from glmm_steps.formula import Formula


def _family(name: str):
    from mixedlm import families

    return {"binomial": families.Binomial, "poisson": families.Poisson}[name]()


def _r_term_names(names: list[str], frame: pd.DataFrame) -> list[str]:
    """mixedlm names treatment-contrast columns ``period.1``; R names them after the
    level (``period2``). Rename so tables match lme4's and other engines'."""
    out = []
    for name in names:
        base, _, idx = name.rpartition(".")
        if base in frame.columns and idx.isdigit() and not pd.api.types.is_numeric_dtype(frame[base]):
            col = frame[base]
            levels = list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype) else sorted(col.unique())
            out.append(f"{base}{levels[int(idx)]}")
        else:
            out.append(name)
    return out


def _varcorr(model) -> pd.DataFrame:
    rows = []
    vc = model.VarCorr()
    for gname, grp in vc.groups.items():
        terms = list(grp.term_names)
        for i, t in enumerate(terms):
            var = float(grp.cov[i, i])
            rows.append({"group": gname, "term": t, "variance": var, "sd": float(np.sqrt(var)), "correlation": np.nan})
        for i in range(len(terms)):
            for j in range(i + 1, len(terms)):
                if grp.cov[i, j] != 0 or grp.corr is not None:
                    rows.append({
                        "group": gname,
                        "term": f"cor({terms[i]},{terms[j]})",
                        "variance": float(grp.cov[i, j]),
                        "sd": np.nan,
                        "correlation": float(grp.corr[i, j]),
                    })
    if model.isLMM():
        sigma = float(model.sigma)
        rows.append({"group": "Residual", "term": "(Intercept)", "variance": sigma**2, "sd": sigma, "correlation": np.nan})
    return pd.DataFrame(rows, columns=["group", "term", "variance", "sd", "correlation"])


def _ranef(model) -> pd.DataFrame:
    t = model.tidy(effects="ran_vals")
    return pd.DataFrame({
        "group": t["group"].astype(str).to_numpy(),
        "level": t["level"].astype(str).to_numpy(),
        "term": t["term"].to_numpy(),
        "estimate": t["estimate"].to_numpy(dtype=float),
        "cond_sd": t["std.error"].to_numpy(dtype=float),
    })


def _deviance(model, spec: ModelSpec) -> float:
    """lme4's ``deviance()``: -2 logLik for ML fits, the REML criterion for REML fits,
    and for GLMMs the sum of squared conditional deviance residuals (mixedlm's own
    ``deviance`` attribute is its Laplace objective, a different number)."""
    if spec.family == "gaussian":
        return float(model.deviance)
    return float(np.sum(np.asarray(model.residuals(type="deviance"), dtype=float) ** 2))


def fit(frame: pd.DataFrame, spec: ModelSpec, formula: Formula, *, random_effects: bool = True) -> FitResult:
    """Fit ``spec`` to ``frame`` (from :func:`glmm_steps.data.model_frame`) with mixedlm;
    ``random_effects=False`` leaves ``ranef`` empty (the conditional variances cost more
    than the fit itself).

    Returns a FitResult; engine warnings (singular fit, convergence) are recorded
    in ``warnings``. Exceptions propagate: the caller records them."""
    import mixedlm

    kwargs = {}
    if formula.trials:
        s, f = formula.trials
        kwargs["weights"] = (frame[s] + frame[f]).to_numpy(dtype=float)
    if formula.offset:
        off = frame[formula.offset].to_numpy(dtype=float)
        kwargs["offset"] = np.log(off) if formula.offset_log else off
    printed = io.StringIO()
    # mixedlm reports some checks (a rank-deficient design, dropped columns) by printing
    # them: capture those with the warnings so they land in fit_stats.json.
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
        warnings.simplefilter("always")
        if spec.family == "gaussian":
            model = mixedlm.lmer(formula.engine_text, frame, REML=spec.reml, **kwargs)
        else:
            model = mixedlm.glmer(formula.engine_text, frame, family=_family(spec.family), nAGQ=spec.nagq, **kwargs)
    beta = np.asarray(model.beta, dtype=float)
    se = np.sqrt(np.diag(np.asarray(model.vcov(), dtype=float)))
    names = _r_term_names(list(model.matrices.fixed_names), frame)
    observed = frame[formula.response].to_numpy(dtype=float)
    if spec.family == "gaussian":
        fitted = np.asarray(model.fitted(), dtype=float)
        marginal = np.asarray(model.predict(re_form="NA"), dtype=float)
    else:
        fitted = np.asarray(model.fitted(type="response"), dtype=float)
        marginal = np.asarray(model.predict(type="response", re_form="NA"), dtype=float)
    messages = list(dict.fromkeys(
        [str(w.message) for w in caught] + [ln.strip() for ln in printed.getvalue().splitlines() if ln.strip()]
    ))
    optional = {"ranef": _ranef(model)} if random_effects else {}
    return FitResult(
        spec=spec,
        engine_version=mixedlm.__version__,
        fixef=pd.DataFrame({"term": names, "estimate": beta, "std_error": se}),
        varcorr=_varcorr(model),
        **optional,
        frame=frame,
        observed=observed,
        fitted=fitted,
        fitted_marginal=marginal,
        nobs=int(model.nobs()),
        ngroups={str(k): int(v) for k, v in model.ngrps().items()},
        loglik=float(model.logLik().value),
        aic=float(model.AIC()),
        bic=float(model.BIC()),
        deviance=_deviance(model, spec),
        npar=int(model.npar()),
        converged=bool(model.converged),
        singular=bool(model.isSingular()),
        warnings=messages,
        optimizer=str(getattr(model, "optimizer", "")),
    )
