"""The default engine: mixedlm, a Python implementation of lme4's algorithms
(``lmer`` by profiled REML/ML, ``glmer`` by Laplace or adaptive Gauss-Hermite)."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pandas as pd

from glmm_steps import families as families_mod
from glmm_steps.engines.base import RANEF_COLUMNS, VARCORR_COLUMNS, FitResult, ModelSpec
from glmm_steps.engines.convergence import check_hessian
from glmm_steps.engines.condvar import conditional_variances
from glmm_steps.engines import mixedlm_gamma
from glmm_steps.formula import Formula

# Above this many rows the Hessian check (2k^2 + 1 deviance evaluations) costs about
# as much as the fit itself; lme4 users switch it off there too (calc.derivs = FALSE).
HESSIAN_MAX_NOBS = 100_000
# A variance parameter this close to its lower bound of 0 is on the boundary
# (lme4's boundary.tol is 1e-5; isSingular's tol is 1e-4).
BOUNDARY_TOL = 1e-4


def _family(name: str, link: str, theta: float | None = None):
    """mixedlm's family object for the config's family and link (``theta``: the
    negative binomial's dispersion, held fixed in one glmer fit)."""
    from mixedlm import families
    from mixedlm.families.negative_binomial import NegativeBinomial

    if name == "negative_binomial":
        return NegativeBinomial(theta=theta)
    return {"binomial": families.Binomial, "poisson": families.Poisson, "gamma": families.Gamma}[name](link=link)


def _glmer_nb(engine_text: str, frame: pd.DataFrame, spec: ModelSpec, kwargs: dict):
    """lme4's ``glmer.nb``, which mixedlm's ``glmer_nb`` is not: that one fits at a
    fixed dispersion (theta = 1 unless given) and never estimates it. As lme4 does:
    a Poisson GLMM, MASS::theta.ml on its fitted values for a start, then Brent's
    search over log(theta) of the Laplace logLik, each theta a glmer fit started from
    the previous one's covariance parameters. Returns (model, theta, evaluations)."""
    import mixedlm
    from mixedlm.models.control import GlmerControl

    poisson = mixedlm.glmer(engine_text, frame, family=_family("poisson", "log"), nAGQ=spec.nagq, **kwargs)
    y = np.asarray(poisson.matrices.y, dtype=float)
    theta0 = families_mod.theta_ml(y, np.asarray(poisson.fitted(type="response"), dtype=float))
    start = {"theta": np.asarray(poisson.theta, dtype=float)}

    def refit(theta: float):
        # Fits at thetas far from the optimum may warn (PIRLS not converged): only
        # the chosen fit's warnings are the model's, re-raised below.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # Started at the previous fit's covariance parameters, the nAGQ = 0 first
            # stage (half of a fit's time) adds nothing; lme4's refit skips it too.
            model = mixedlm.glmer(engine_text, frame, family=_family("negative_binomial", "log", theta),
                                  nAGQ=spec.nagq, start=start["theta"],
                                  control=GlmerControl(nAGQ0initStep=False), **kwargs)
        start["theta"] = np.asarray(model.theta, dtype=float)
        return (model, caught), float(model.logLik().value)

    theta, (model, caught), evals = families_mod.optimize_nb_theta(refit, theta0)
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=1)
    return model, theta, evals


def r_term_names(names: list[str], frame: pd.DataFrame) -> list[str]:
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


def _lme4_names(formula: Formula) -> dict[str, str]:
    """mixedlm names an interaction group ``a:b`` in formula order, also for the inner
    factor of ``a/b``, which lme4 calls ``b:a``: map mixedlm's names to lme4's."""
    return {":".join(t.group): t.group_name for t in formula.random}


def _varcorr(model, names: dict[str, str]) -> pd.DataFrame:
    rows = []
    vc = model.VarCorr()
    for mname, grp in vc.groups.items():
        gname = names.get(mname, mname)
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
    return pd.DataFrame(rows, columns=VARCORR_COLUMNS)


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


def _ranef(model, names: dict[str, str]) -> pd.DataFrame:
    """Conditional modes with conditional SDs, one row per group, term and level, in
    the order of mixedlm's ``tidy(effects="ran_vals")``, built column-wise (that
    method makes a dict per row: minutes for 100,000 levels). ``names`` renames
    groups to lme4's names (``cask:batch`` for a nested factor)."""
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
                "group": np.repeat(names.get(group, group), n),
                "level": levels[group],
                "term": np.repeat(term, n),
                "estimate": np.asarray(estimate, dtype=float),
                "cond_sd": np.sqrt(np.maximum(np.asarray(variances[group][term], dtype=float), 0.0)),
            }))
    if not parts:
        return pd.DataFrame(columns=RANEF_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def _deviance(model, spec: ModelSpec) -> float:
    """lme4's ``deviance()``: -2 logLik for ML fits, the REML criterion for REML fits,
    and for GLMMs the sum of squared conditional deviance residuals (mixedlm's own
    ``deviance`` attribute is its Laplace objective, a different number)."""
    if spec.family == "gaussian":
        return float(model.deviance)
    if spec.family == "gamma":
        # the family's deviance residuals, not model.deviance (lme4's Laplace deviance here)
        mu = np.asarray(model.fitted(type="response"), dtype=float)
        return float(np.sum(model.family.deviance_resids(model.matrices.y, mu, model.matrices.weights)))
    return float(np.sum(np.asarray(model.residuals(type="deviance"), dtype=float) ** 2))


def _hessian(model, deviance=None) -> tuple[bool | None, str | None]:
    """(hessian_ok, message) for the deviance at the optimum over the parameters the
    optimizer moved: theta, plus beta for GLMMs fitted jointly (as lme4 checks).
    Skipped (None) above HESSIAN_MAX_NOBS rows, where it would cost as much as the fit."""
    from mixedlm.estimation.reml import _build_theta_bounds

    if model.nobs() > HESSIAN_MAX_NOBS:
        return None, f"Hessian not checked: more than {HESSIAN_MAX_NOBS} rows"
    theta = np.asarray(model.theta, dtype=float)
    lower = np.array([lo if lo is not None else -np.inf
                      for lo, _ in _build_theta_bounds(model.matrices.random_structures, len(theta))])
    free = ~((lower == 0) & (np.abs(theta) < BOUNDARY_TOL))
    par = theta
    if getattr(model, "joint_fit", False):
        beta = np.asarray(model.beta, dtype=float)
        par = np.r_[theta, beta]
        free = np.r_[free, np.ones(len(beta), dtype=bool)]
        lower = np.r_[lower, np.full(len(beta), -np.inf)]
    return check_hessian(deviance or model.as_function("deviance"), par, free, lower,
                         singular=bool(model.isSingular()))


def fit(frame: pd.DataFrame, spec: ModelSpec, formula: Formula, *, random_effects: bool = True) -> FitResult:
    """Fit ``spec`` to ``frame`` (from :func:`glmm_steps.data.model_frame`) with mixedlm;
    ``random_effects=False`` leaves ``ranef`` empty (the conditional variances cost more
    than the fit itself).

    Returns a FitResult; engine warnings (singular fit, convergence) are recorded
    in ``warnings``. Exceptions propagate: the caller records them."""
    import mixedlm

    kwargs = {}
    if formula.trials:
        kwargs["weights"] = formula.n_trials(frame)
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
        elif spec.family == "negative_binomial":
            model, nb_theta, nb_evals = _glmer_nb(formula.engine_text, frame, spec, kwargs)
        elif spec.family == "gamma":
            model, gamma_objective = mixedlm_gamma.glmer_gamma(formula.engine_text, frame, spec.link, **kwargs)
        else:
            model = mixedlm.glmer(formula.engine_text, frame, family=_family(spec.family, spec.link),
                                  nAGQ=spec.nagq, **kwargs)
    group_names = _lme4_names(formula)
    beta = np.asarray(model.beta, dtype=float)
    se = np.sqrt(np.diag(np.asarray(model.vcov(), dtype=float)))
    names = r_term_names(list(model.matrices.fixed_names), frame)
    observed = frame[formula.response].to_numpy(dtype=float)
    if spec.family == "gaussian":
        fitted = np.asarray(model.fitted(), dtype=float)
        marginal = np.asarray(model.predict(re_form="NA"), dtype=float)
    else:
        fitted = np.asarray(model.fitted(type="response"), dtype=float)
        marginal = np.asarray(model.predict(type="response", re_form="NA"), dtype=float)
    converged = bool(model.converged)
    # The optimizer's own flag misses a stop short of the optimum; lme4 also checks
    # the gradient there, and a Hessian that is not positive definite.
    deviance_fn = None
    if spec.family == "gamma":
        # mixedlm's own checks would differentiate its (unit-dispersion) objective.
        deviance_fn = gamma_objective
        params = np.r_[np.asarray(model.theta, dtype=float), beta]
        free = np.r_[np.asarray(model.theta) > BOUNDARY_TOL, np.ones(len(beta), dtype=bool)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            message = mixedlm_gamma.gradient_message(gamma_objective, params, free)
        gradient = [message] if message else []
    else:
        gradient = [m for m in mixedlm.checkConv(model, check_singular=False).messages if m.startswith("Gradient")]
    converged = converged and not gradient
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deviance evaluations next to the optimum may warn; the result says it
        hessian_ok, hessian_msg = _hessian(model, deviance_fn) if converged else (None, None)
    messages = list(dict.fromkeys(
        [str(w.message) for w in caught] + [ln.strip() for ln in printed.getvalue().splitlines() if ln.strip()]
        + gradient + ([hessian_msg] if hessian_msg and hessian_ok is False else [])
    ))
    notes = [hessian_msg] if hessian_ok is None and hessian_msg else []
    loglik, npar = float(model.logLik().value), int(model.npar())
    dispersion: dict[str, float] = {}
    varcorr = _varcorr(model, group_names)
    if spec.family == "negative_binomial":
        # theta is a parameter of the likelihood too: lme4 counts it in AIC/BIC.
        dispersion = {"theta": float(nb_theta)}
        npar += 1
        notes.append(f"theta estimated as lme4's glmer.nb ({nb_evals} glmer fits)")
        varcorr = pd.concat([varcorr, pd.DataFrame([{"group": "Residual", "term": "theta", "variance": nb_theta,
                                                     "sd": np.nan, "correlation": np.nan}])], ignore_index=True)
    if spec.family == "gamma":
        # model.deviance is lme4's Laplace deviance here; the dispersion is a parameter.
        loglik, npar = -0.5 * float(model.deviance), npar + 1
        sigma = mixedlm_gamma.gamma_sigma(gamma_objective, np.r_[np.asarray(model.theta, dtype=float), beta])
        dispersion = {"sigma": sigma, "shape": 1.0 / sigma**2}
        # lme4's VarCorr scales a model with a residual scale by sigma^2 (as for lmer),
        # Gamma GLMMs included: report what R reports.
        varcorr = varcorr.assign(variance=varcorr["variance"] * sigma**2, sd=varcorr["sd"] * sigma)
        se = se * sigma  # likewise vcov(): sigma^2 times the unit-dispersion RX inverse
        varcorr = pd.concat([varcorr, pd.DataFrame([{"group": "Residual", "term": "(Intercept)",
                                                     "variance": sigma**2, "sd": sigma,
                                                     "correlation": np.nan}])], ignore_index=True)
    aic, bic = float(model.AIC()), float(model.BIC())
    if dispersion:
        aic, bic = -2 * loglik + 2 * npar, -2 * loglik + np.log(int(model.nobs())) * npar
    optional = {"ranef": _ranef(model, group_names)} if random_effects else {}
    return FitResult(
        spec=spec,
        engine_version=mixedlm.__version__,
        fixef=pd.DataFrame({"term": names, "estimate": beta, "std_error": se}),
        varcorr=varcorr,
        **optional,
        frame=frame,
        observed=observed,
        fitted=fitted,
        fitted_marginal=marginal,
        nobs=int(model.nobs()),
        ngroups={group_names.get(str(k), str(k)): int(v) for k, v in model.ngrps().items()},
        loglik=loglik,
        aic=aic,
        bic=bic,
        deviance=_deviance(model, spec),
        npar=npar,
        dispersion=dispersion,
        converged=converged,
        singular=bool(model.isSingular()),
        hessian_ok=hessian_ok,
        warnings=messages,
        notes=notes,
        optimizer=str(getattr(model, "optimizer", "")),
    )
