"""The default engine: mixedlm, a Python implementation of lme4's algorithms
(``lmer`` by profiled REML/ML, ``glmer`` by Laplace or adaptive Gauss-Hermite)."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pandas as pd

from glmm_steps.engines.base import FitResult, ModelSpec
from glmm_steps.engines.condvar import conditional_variances
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


def _cond_variances(model) -> dict[str, dict[str, np.ndarray]]:
    """Conditional variances of the random effects, by group and term (what
    ``model.ranef(condVar=True).condVar`` returns), computed by
    :func:`~glmm_steps.engines.condvar.conditional_variances` from the engine's
    sparse system: mixedlm's own method is quadratic in the number of levels."""
    structures = model.matrices.random_structures
    names = [(s.grouping_factor, t) for s in structures for t in s.term_names]
    variances = None
    # mixedlm 1.3.0 keeps the factored system it used for vcov() here (lmer: scale
    # sigma^2; glmer: PIRLS weights folded in, scale 1). A term repeated within a
    # group, e.g. (1 | g) + (1 | g), needs its covariances summed: leave it to mixedlm.
    if len(set(names)) == len(names):
        if hasattr(model, "_weighted_projection"):
            system = model._weighted_projection
            precision, lam, scale = system.random_factor.precision, system.lambda_matrix, model.sigma ** 2
        else:
            system = model._working_random_system
            precision, lam, scale = system.precision, system.Lambda, 1.0
        variances = conditional_variances(precision, lam, [(s.n_levels, s.n_terms) for s in structures],
                                          float(scale))
    if variances is None:
        return model.ranef(condVar=True).condVar
    out: dict[str, dict[str, np.ndarray]] = {}
    for s, v in zip(structures, variances):
        for j, term in enumerate(s.term_names):
            out.setdefault(s.grouping_factor, {})[term] = v[:, j]
    return out


def _levels(structure) -> np.ndarray:
    """A term's levels as text, in the order of its random effects."""
    levels = np.empty(structure.n_levels, dtype=object)
    levels[np.fromiter(structure.level_map.values(), dtype=np.intp)] = [str(k) for k in structure.level_map]
    return levels


def _ranef(model) -> pd.DataFrame:
    """Conditional modes with conditional SDs, one row per group, term and level, in
    the order of mixedlm's ``tidy(effects="ran_vals")``, built column-wise (that
    method makes a dict per row: minutes for 100,000 levels)."""
    values = model.ranef()
    variances = _cond_variances(model)
    levels = {}
    for s in model.matrices.random_structures:
        levels.setdefault(s.grouping_factor, _levels(s))
    parts = []
    for group, terms in values.items():
        for term, estimate in terms.items():
            n = len(estimate)
            parts.append(pd.DataFrame({
                "group": np.repeat(group, n),
                "level": levels[group],
                "term": np.repeat(term, n),
                "estimate": np.asarray(estimate, dtype=float),
                "cond_sd": np.sqrt(np.maximum(np.asarray(variances[group][term], dtype=float), 0.0)),
            }))
    if not parts:
        return pd.DataFrame(columns=["group", "level", "term", "estimate", "cond_sd"])
    return pd.concat(parts, ignore_index=True)


def _deviance(model, spec: ModelSpec) -> float:
    """lme4's ``deviance()``: -2 logLik for ML fits, the REML criterion for REML fits,
    and for GLMMs the sum of squared conditional deviance residuals (mixedlm's own
    ``deviance`` attribute is its Laplace objective, a different number)."""
    if spec.family == "gaussian":
        return float(model.deviance)
    return float(np.sum(np.asarray(model.residuals(type="deviance"), dtype=float) ** 2))


def fit(frame: pd.DataFrame, spec: ModelSpec, formula: Formula) -> FitResult:
    """Fit ``spec`` to ``frame`` (from :func:`glmm_steps.data.model_frame`) with mixedlm.

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
    return FitResult(
        spec=spec,
        engine_version=mixedlm.__version__,
        fixef=pd.DataFrame({"term": names, "estimate": beta, "std_error": se}),
        varcorr=_varcorr(model),
        ranef=_ranef(model),
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
