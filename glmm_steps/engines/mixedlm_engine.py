"""The default engine: mixedlm, a Python implementation of lme4's algorithms
(``lmer`` by profiled REML/ML, ``glmer`` by Laplace or adaptive Gauss-Hermite)."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

from glmm_steps import families as families_mod
from glmm_steps import tables
from glmm_steps.engines import mixedlm_gamma
from glmm_steps.engines.base import (
    ANOVA_COLUMNS,
    INTERVAL_COLUMNS,
    RANEF_COLUMNS,
    RANEF_COV_COLUMNS,
    TESTS,
    VARCORR_COLUMNS,
    FitResult,
    ModelSpec,
)
from glmm_steps.engines.boundary import boundary_message
from glmm_steps.engines.condvar import conditional_covariances
from glmm_steps.engines.convergence import check_hessian
from glmm_steps.engines.mixedlm_inference import fixed_effect_inference
from glmm_steps.engines.mixedlm_profile import profile_intervals
from glmm_steps.formula import Formula
from glmm_steps.model_matrix import ModelMatrix, build

# Above this many rows the Hessian check (2k^2 + 1 deviance evaluations) costs about
# as much as the fit itself; lme4 users switch it off there too (calc.derivs = FALSE).
HESSIAN_MAX_NOBS = 100_000
# A variance parameter this close to its lower bound of 0 is on the boundary
# (lme4's boundary.tol is 1e-5; isSingular's tol is 1e-4).
BOUNDARY_TOL = 1e-4
_MIXEDLM_SINGULAR = "Model is singular (boundary fit)"


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
            model = mixedlm.glmer(
                engine_text,
                frame,
                family=_family("negative_binomial", "log", theta),
                nAGQ=spec.nagq,
                start=start["theta"],
                control=glmer_control(started=True),
                **kwargs,
            )
        start["theta"] = np.asarray(model.theta, dtype=float)
        return (model, caught), float(model.logLik().value)

    theta, (model, caught), evals = families_mod.optimize_nb_theta(refit, theta0)
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=1)
    return model, theta, evals


def _safe_columns(labels: list[str], values: np.ndarray, prefix: str, data: dict, names: dict) -> list[str]:
    """The terms of one part of an engine formula: ``1`` (or ``0`` when ``labels`` has no
    ``(Intercept)``) first, then each other column as ``<prefix>__<j>``, its values put
    in ``data`` and its lme4 label in ``names``."""
    cols = [] if "(Intercept)" in labels else ["0"]
    for j, label in enumerate(labels):
        if label == "(Intercept)":
            cols.insert(0, "1")
            continue
        data[f"{prefix}__{j}"] = values[:, j]
        names[f"{prefix}__{j}"] = label
        cols.append(f"{prefix}__{j}")
    return cols


def engine_inputs(
    formula: Formula, design: ModelMatrix, frame: pd.DataFrame
) -> tuple[str, pd.DataFrame, dict[str, str], dict[str, str]]:
    """mixedlm's formula and data for ``design``: the prepared numeric columns under
    safe names (``y__``, ``x__1``, ``z1__2``, grouping factors ``g__1``), so mixedlm only
    ever sees plain columns, whatever transforms the user wrote. Returns
    ``(formula_text, data, column_names, group_names)``: the last two map mixedlm's
    names back to lme4's (``(Intercept)`` keeps its name)."""
    data = {"y__": design.response}
    names: dict[str, str] = {}
    fixed = _safe_columns(design.fixed_names, design.X, "x", data, names)
    safe_group = {g: f"g__{k}" for k, g in enumerate(formula.grouping_factors)}
    groups: dict[str, str] = {}
    bars = []
    for i, (term, block) in enumerate(zip(formula.random, design.random)):
        cols = _safe_columns(block.names, block.values, f"z{i}", data, names)
        group = ":".join(safe_group[g] for g in term.group)
        groups[group] = term.group_name
        bars.append(f"({' + '.join(cols)} {'|' if term.correlated else '||'} {group})")
    out = pd.DataFrame(data)
    for g, safe in safe_group.items():
        out[safe] = frame[g].array  # a Categorical stays one (its level order is the table's)
    return f"y__ ~ {' + '.join(fixed + bars)}", out, names, groups


_SAFE_NAME = re.compile(r"\b(?:g__\d+(?::g__\d+)*|[xz]\d*__\d+|y__)(?![\w.])")


def user_names(messages: list[str], groups: dict[str, str], columns: dict[str, str]) -> list[str]:
    """``messages`` (mixedlm's warnings and printed checks) with the engine's safe column
    and group names (:func:`engine_inputs`) put back as the user wrote them, e.g.
    "Grouping factor 'g__0' has only 3 levels" -> "... 'hospital_id' ...";
    duplicates dropped, order kept."""
    names = {**columns, **groups, "y__": "the response"}

    def back(m: re.Match) -> str:
        return names.get(m.group(0), _group_name(m.group(0), groups))

    return list(dict.fromkeys(_SAFE_NAME.sub(back, m) for m in messages))


def _group_name(name: str, groups: dict[str, str]) -> str:
    """lme4's name of mixedlm's group ``name``: a second term on the same factor,
    ``(1 | g) + (0 + x | g)``, is ``g__0.1`` to mixedlm and ``g`` here (lme4's cnms name;
    its VarCorr prints ``g.1``)."""
    if name in groups:
        return groups[name]
    base, _, k = name.rpartition(".")
    return groups.get(base, name) if k.isdigit() else name


# A study's covariance of a group's random effects on the given terms (relative to the
# residual variance for a linear model, on glmer's scale for a GLMM), or None where it is
# not known: glmm_steps.batch.true_covariance.
Covariance = Callable[[str, list[str]], "np.ndarray | None"]


def start_theta(structures, group_names: dict[str, str], columns: dict[str, str], covariance: Covariance):
    """mixedlm's theta for the relative covariances ``covariance`` gives, per random-effect
    structure (its group and terms by their user names): the lower Cholesky factor's
    entries row by row for a correlated block, the SDs for an uncorrelated one. None
    when any block is unknown, not positive definite, or of another covariance type,
    so that the optimizer takes its default start instead."""
    parts = []
    for struct in structures:
        if getattr(struct, "cov_type", "us") != "us":
            return None
        terms = [columns.get(t, t) for t in struct.term_names]
        cov = covariance(_group_name(struct.grouping_factor, group_names), terms)
        if cov is None or not np.isfinite(cov).all() or (np.diag(cov) <= 0).any():
            return None
        if not struct.correlated:
            parts.append(np.sqrt(np.diag(cov)))
            continue
        try:
            factor = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            return None
        parts.append(factor[np.tril_indices(len(terms))])
    return np.concatenate(parts) if parts else None


def engine_model(frame: pd.DataFrame, spec: ModelSpec, formula: Formula, design: ModelMatrix, reml: bool | None = None):
    """Fit mixedlm to ``design`` as the fit step does (trials as weights, the offset),
    by REML as ``spec`` says unless ``reml`` is given. Returns ``(model, column_names,
    group_names)`` (see :func:`engine_inputs`); warnings and printed checks are left to
    the caller. The family's own fit (negative binomial theta, Gamma objective) is
    :func:`engine_fit`'s fourth value."""
    return engine_fit(frame, spec, formula, design, reml)[:3]


def engine_fit(
    frame: pd.DataFrame,
    spec: ModelSpec,
    formula: Formula,
    design: ModelMatrix,
    reml: bool | None = None,
    start: Covariance | None = None,
):
    """:func:`engine_model` plus what the family's fit adds, as a dict: ``nb_theta`` and
    ``nb_evals`` for the negative binomial (lme4's glmer.nb outer loop over theta),
    ``gamma_objective`` for a Gamma GLMM (lme4's objective, for the convergence checks
    and sigma). Every family is fitted on the same prepared data (:func:`engine_inputs`).
    ``start``: a gaussian, binomial or Poisson model without trials or offset starts
    its optimizer at the theta of these covariances (:func:`start_theta`; a study's
    true parameters, as a :class:`Refitter` given them does) instead of mixedlm's
    default start; a GLMM then optimizes jointly from there (with beta at its
    conditional optimum), without glmer's first stage at nAGQ = 0, as lme4's
    ``refit`` of a GLMM does. A fit that does not converge from there (a GLMM's
    inner PIRLS solver included) is done again from the default start
    (:func:`from_start`)."""
    import mixedlm

    text, data, column_names, group_names = engine_inputs(formula, design, frame)
    kwargs = {}
    if formula.trials:
        kwargs["weights"] = formula.n_trials(frame)
    if formula.offset:
        off = frame[formula.offset].to_numpy(dtype=float)
        kwargs["offset"] = np.log(off) if formula.offset_log else off
    extra: dict = {}
    reml = spec.reml if reml is None else reml
    if spec.family in REFIT_FAMILIES and start is not None and not kwargs:
        # lmer() or glmer() in its two steps, so that the start can follow the model's structures.
        model = _model_from_start(text, data, spec, reml, start, group_names, column_names)
    elif spec.family == "gaussian":
        model = mixedlm.lmer(text, data, REML=reml, **kwargs)
    elif spec.family == "negative_binomial":
        model, extra["nb_theta"], extra["nb_evals"] = _glmer_nb(text, data, spec, kwargs)
    elif spec.family == "gamma":
        model, extra["gamma_objective"] = mixedlm_gamma.glmer_gamma(text, data, spec.link, **kwargs)
    else:
        model = mixedlm.glmer(text, data, family=_family(spec.family, spec.link), nAGQ=spec.nagq, **kwargs)
    return model, column_names, group_names, extra


def _model_from_start(text: str, data: pd.DataFrame, spec: ModelSpec, reml: bool, start: Covariance, groups, columns):
    """lmer() or glmer() (binomial, Poisson) of ``text`` with the optimizer started at
    the theta of ``start`` (:func:`start_theta`; mixedlm's default start where that is
    None, or where the fit from it did not converge: :func:`from_start`). A GLMM with
    a start skips glmer's nAGQ = 0 stage (:func:`glmer_control`)."""
    from mixedlm.models.glmer_fit import GlmerMod
    from mixedlm.models.lmer_fit import LmerMod

    family = None if spec.family == "gaussian" else _family(spec.family, spec.link)

    def new_model():
        return LmerMod(text, data, REML=reml) if family is None else GlmerMod(text, data, family=family)

    # The first fit uses the model whose structures give the start; a second one (from
    # the default start) a fresh model, as fit() replaces its matrices by checked ones.
    models = [new_model()]
    theta = start_theta(models[0].matrices.random_structures, groups, columns, start)

    def fitted(theta):
        model = models.pop() if models else new_model()
        if family is None:
            return model.fit(start=theta)
        model.control = glmer_control(started=theta is not None)  # the control glmer() would be given
        return model.fit(start=theta, nAGQ=spec.nagq)

    return from_start(fitted, theta, lambda f: f)


def from_start(fit: Callable, theta, optimum: Callable):
    """``fit(theta)``, kept where its optimizer converged (and a GLMM's inner PIRLS
    solver: ``optimum(result)`` is the object with ``converged`` and, for a GLMM,
    ``pirls_converged``); else, and where ``theta`` is None, ``fit(None)``: mixedlm's
    default start. From a given start a GLMM goes without glmer's nAGQ = 0 first stage,
    and its PIRLS can fail where that stage would have led it (a Poisson model started
    at large variances); the refit and full paths redo such a fit alike. The discarded
    fit's warnings are dropped."""
    if theta is not None:
        result, caught = _quietly(lambda: fit(theta.copy()))
        found = optimum(result)
        if bool(found.converged) and bool(getattr(found, "pirls_converged", True)):
            _replay(caught)
            return result
    return fit(None)


def _quietly(fit: Callable):
    """``fit()`` with its warnings recorded, not issued: ``(result, warnings)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        return fit(), caught


def _replay(caught) -> None:
    """Issue the warnings :func:`_quietly` recorded, for a fit that is kept."""
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def glmer_control(started: bool):
    """glmer()'s default control; for a fit ``started`` at given parameters, without the
    first stage at nAGQ = 0 that finds a start (lme4's ``refit`` of a GLMM starts its
    joint optimization at the model's parameters)."""
    from mixedlm.models.control import GlmerControl

    return GlmerControl(nAGQ0initStep=False) if started else GlmerControl()


def _relative_covariances(model) -> list[np.ndarray]:
    """Each random-effect structure's covariance relative to sigma^2 (GLMMs: the
    covariance), L L' from theta: the blocks mixedlm's ``isSingular()`` and
    ``VarCorr()`` each rebuild, computed once (a study refit needs both)."""
    from mixedlm.estimation.reml import _build_lambda_blocks

    theta = np.asarray(model.theta)
    return [L @ L.T for L in _build_lambda_blocks(theta, model.matrices.random_structures)]


def _singular(covariances: list[np.ndarray], tol: float = 1e-4) -> bool:
    """mixedlm's ``isSingular(tol)`` of the blocks :func:`_relative_covariances` gives:
    a block's smallest eigenvalue below tol^2."""
    return any(float(np.min(np.linalg.eigvalsh(c), initial=np.inf)) < tol**2 for c in covariances)


def _varcorr(
    model, names: dict[str, str], columns: dict[str, str] | None = None, covariances: list[np.ndarray] | None = None
) -> pd.DataFrame:
    """The variance components (VARCORR_COLUMNS) as mixedlm's ``VarCorr()`` gives them,
    from ``covariances`` (:func:`_relative_covariances`, computed when not given):
    each block's name, terms, variances, SDs and correlations."""
    from mixedlm.utils.variance import _covariance_block_names, cov2sdcor

    columns = columns or {}
    structures = model.matrices.random_structures
    covariances = covariances if covariances is not None else _relative_covariances(model)
    scale = float(model.sigma) ** 2 if model.isLMM() else 1.0
    # Rows as tuples and the table from columns: a study makes this for every replicate.
    rows: list[tuple[str, str, float, float, float]] = []
    for mname, struct, relative in zip(_covariance_block_names(structures), structures, covariances):
        cov = relative * scale
        # A single term has no correlation to report; mixedlm's cov2sdcor (which also
        # refuses a non-finite block) costs a third of this table.
        needs_corr = struct.correlated or struct.cov_type in ("cs", "ar1")
        corr = cov2sdcor(cov)[1] if needs_corr and (len(cov) > 1 or not np.isfinite(cov).all()) else None
        gname = _group_name(mname, names)
        terms = [columns.get(t, t) for t in struct.term_names]
        for i, t in enumerate(terms):
            var = float(cov[i, i])
            rows.append((gname, t, var, float(np.sqrt(var)), np.nan))
        for i in range(len(terms)):
            for j in range(i + 1, len(terms)):
                if cov[i, j] != 0 or corr is not None:
                    rows.append((gname, f"cor({terms[i]},{terms[j]})", float(cov[i, j]), np.nan, float(corr[i, j])))
    if model.isLMM():
        sigma = float(model.sigma)
        rows.append(("Residual", "(Intercept)", sigma**2, sigma, np.nan))
    if not rows:
        return pd.DataFrame(columns=VARCORR_COLUMNS)
    group, term, variance, sd, correlation = zip(*rows)
    # In VARCORR_COLUMNS' order.
    return tables.from_columns(
        {"group": group, "term": term, "variance": variance, "sd": sd, "correlation": correlation}
    )


def _cond_blocks(model) -> list[np.ndarray] | None:
    """Each random-effect structure's conditional covariance blocks, (levels, k, k)
    (lme4's ``postVar``), by :func:`~glmm_steps.engines.condvar.conditional_covariances`
    from the engine's sparse system; None where that method does not apply (a term
    repeated within a group, e.g. (1 | g) + (1 | g), needs its covariances summed, or
    a structure it declines): the caller then asks mixedlm for the variances alone."""
    structures = model.matrices.random_structures
    names = [(s.grouping_factor, t) for s in structures for t in s.term_names]
    if len(set(names)) != len(names):
        return None
    # mixedlm 1.3.0 keeps the factored system it used for vcov() here (lmer: scale
    # sigma^2; glmer: PIRLS weights folded in, scale 1).
    if hasattr(model, "_weighted_projection"):
        system = model._weighted_projection
        precision, lam, scale = system.random_factor.precision, system.lambda_matrix, model.sigma**2
    else:
        system = model._working_random_system
        precision, lam, scale = system.precision, system.Lambda, 1.0
    return conditional_covariances(precision, lam, [(s.n_levels, s.n_terms) for s in structures], float(scale))


def _cond_variances(model, blocks: list[np.ndarray] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Conditional variances of the random effects, by group and term (what
    ``model.ranef(condVar=True).condVar`` returns), the diagonals of
    :func:`_cond_blocks` (``blocks`` when already computed): mixedlm's own method is
    quadratic in the number of levels."""
    structures = model.matrices.random_structures
    blocks = blocks if blocks is not None else _cond_blocks(model)
    if blocks is None:
        return model.ranef(condVar=True).condVar
    out: dict[str, dict[str, np.ndarray]] = {}
    for s, v in zip(structures, blocks):
        for j, term in enumerate(s.term_names):
            out.setdefault(s.grouping_factor, {})[term] = v[:, j, j]
    return out


def _ranef_cov(
    model, blocks: list[np.ndarray] | None, names: dict[str, str], columns: dict[str, str] | None = None
) -> pd.DataFrame | None:
    """The conditional covariances between a level's random effects (FitResult's
    ``ranef_cov``: group, level, term_a, term_b, covariance; one row per level and pair,
    for terms with more than one effect per level, as an intercept and a slope); None
    when ``blocks`` (:func:`_cond_blocks`) are not available."""
    if blocks is None:
        return None
    columns = columns or {}
    parts = []
    for s, v in zip(model.matrices.random_structures, blocks):
        for i in range(s.n_terms):
            for j in range(i + 1, s.n_terms):
                parts.append(
                    pd.DataFrame(
                        {
                            "group": _group_name(s.grouping_factor, names),
                            "level": _levels(s),
                            "term_a": columns.get(s.term_names[i], s.term_names[i]),
                            "term_b": columns.get(s.term_names[j], s.term_names[j]),
                            "covariance": v[:, i, j],
                        }
                    )
                )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RANEF_COV_COLUMNS)


def _levels(structure) -> np.ndarray:
    """A term's levels as text, in the order of its random effects."""
    levels = np.empty(structure.n_levels, dtype=object)
    levels[np.fromiter(structure.level_map.values(), dtype=np.intp)] = [str(k) for k in structure.level_map]
    return levels


def _ranef(
    model, names: dict[str, str], columns: dict[str, str] | None = None, blocks: list[np.ndarray] | None = None
) -> pd.DataFrame:
    """Conditional modes with conditional SDs, one row per group, term and level, in
    the order of mixedlm's ``tidy(effects="ran_vals")``, built column-wise (that
    method makes a dict per row: minutes for 100,000 levels). ``names`` renames
    groups to lme4's names (``cask:batch`` for a nested factor), ``columns`` the
    engine's safe column names to lme4's term names (see :func:`engine_inputs`);
    ``blocks``: :func:`_cond_blocks` when already computed."""
    columns = columns or {}
    values = model.ranef()
    variances = _cond_variances(model, blocks)
    levels = {}
    for s in model.matrices.random_structures:
        levels.setdefault(s.grouping_factor, _levels(s))
    parts = []
    for group, terms in values.items():
        for term, estimate in terms.items():
            n = len(estimate)
            parts.append(
                pd.DataFrame(
                    {
                        "group": np.repeat(_group_name(group, names), n),
                        "level": levels[group],
                        "term": np.repeat(columns.get(term, term), n),
                        "estimate": np.asarray(estimate, dtype=float),
                        "cond_sd": np.sqrt(np.maximum(np.asarray(variances[group][term], dtype=float), 0.0)),
                    }
                )
            )
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


def _hessian(model, deviance=None, singular: bool | None = None) -> tuple[bool | None, str | None]:
    """(hessian_ok, message) for the deviance at the optimum over the parameters the
    optimizer moved: theta, plus beta for GLMMs fitted jointly (as lme4 checks).
    Skipped (None) above HESSIAN_MAX_NOBS rows, where it would cost as much as the fit.
    ``deviance``: the model's deviance function (mixedlm's ``as_function`` when not
    given), ``singular``: the model's ``isSingular()`` when the caller has it."""
    from mixedlm.estimation.reml import _build_theta_bounds

    if model.nobs() > HESSIAN_MAX_NOBS:
        return None, f"Hessian not checked: more than {HESSIAN_MAX_NOBS} rows"
    theta = np.asarray(model.theta, dtype=float)
    lower = np.array(
        [
            lo if lo is not None else -np.inf
            for lo, _ in _build_theta_bounds(model.matrices.random_structures, len(theta))
        ]
    )
    free = ~((lower == 0) & (np.abs(theta) < BOUNDARY_TOL))
    par = theta
    if getattr(model, "joint_fit", False):
        beta = np.asarray(model.beta, dtype=float)
        par = np.r_[theta, beta]
        free = np.r_[free, np.ones(len(beta), dtype=bool)]
        lower = np.r_[lower, np.full(len(beta), -np.inf)]
    singular = bool(model.isSingular()) if singular is None else singular
    return check_hessian(deviance or model.as_function("deviance"), par, free, lower, singular=singular)


def _ddf_parts(model, spec: ModelSpec, parts) -> tuple[dict[str, np.ndarray], list[str]]:
    """The df parts marginal means and predictions of a gaussian fit take (FitResult's
    fields): Kenward-Roger's adjusted covariance and ``P``/``W`` when its t tests are
    Kenward-Roger's (``parts``, as emmeans' ``lmer.df = "kenward-roger"``), else
    Satterthwaite's (vcov's Jacobian in the variance parameters and their covariance,
    :mod:`glmm_steps.inference`), those of its t tests when they are Satterthwaite's,
    else computed here. Empty for GLMMs and ``inference: wald`` (asymptotic, as
    emmeans) and, with a note, above HESSIAN_MAX_NOBS rows, where the derivatives cost
    more than the fit. Returns (fields, notes)."""
    from glmm_steps.engines.mixedlm_inference import satterthwaite
    from glmm_steps.inference import KenwardRogerParts, SatterthwaiteParts

    if spec.family != "gaussian" or spec.inference == "wald":
        return {}, []
    if isinstance(parts, KenwardRogerParts):
        return {"vcov_adjusted": parts.vcov_adj, "kr_P": parts.P, "kr_W": parts.W}, []
    if not isinstance(parts, SatterthwaiteParts):
        if model.nobs() > HESSIAN_MAX_NOBS:
            return {}, [
                f"Satterthwaite df not computed (more than {HESSIAN_MAX_NOBS} rows): "
                "marginal means and predictions use the normal reference"
            ]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parts = satterthwaite(model)
        except (np.linalg.LinAlgError, FloatingPointError, ValueError) as e:
            return {}, [f"Satterthwaite df not computed ({e}): marginal means use the normal reference"]
    return {"vcov_jacobian": parts.jac, "vcov_varpar": parts.vcov_varpar}, []


def fit(
    frame: pd.DataFrame,
    spec: ModelSpec,
    formula: Formula,
    *,
    random_effects: bool = True,
    design: ModelMatrix | None = None,
    ddf: bool = False,
    start: Covariance | None = None,
) -> FitResult:
    """Fit ``spec`` to ``frame`` (from :func:`glmm_steps.data.model_frame`) with mixedlm;
    ``random_effects=False`` leaves ``ranef`` empty (the conditional variances cost more
    than the fit itself). ``design`` is the model matrix of :func:`glmm_steps.model_matrix.build`
    (built here with default factor coding when not given). ``start``: where a gaussian
    model's optimizer starts (:func:`engine_fit`).

    ``ddf=True`` also computes the df parts of a gaussian fit that marginal means and
    predictions take their df from (:func:`_ddf_parts`).

    Returns a FitResult; engine warnings (singular fit, convergence) are recorded
    in ``warnings``. Exceptions propagate: the caller records them."""
    import mixedlm

    design = design if design is not None else build(formula, frame)
    printed = io.StringIO()
    # mixedlm reports some checks (a rank-deficient design, dropped columns) by printing
    # them: capture those with the warnings so they land in fit_stats.json.
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
        warnings.simplefilter("always")
        model, column_names, group_names, family_fit = engine_fit(frame, spec, formula, design, start=start)
    names = [column_names.get(n, n) for n in model.matrices.fixed_names]
    observed = design.response
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
    beta = np.asarray(model.beta, dtype=float)
    if spec.family == "gamma":
        # mixedlm's own checks would differentiate its (unit-dispersion) objective.
        deviance_fn = family_fit["gamma_objective"]
        params = np.r_[np.asarray(model.theta, dtype=float), beta]
        free = np.r_[np.asarray(model.theta) > BOUNDARY_TOL, np.ones(len(beta), dtype=bool)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            message = mixedlm_gamma.gradient_message(deviance_fn, params, free)
        gradient = [message] if message else []
    else:
        gradient = [m for m in mixedlm.checkConv(model, check_singular=False).messages if m.startswith("Gradient")]
    converged = converged and not gradient
    # The covariance blocks once, for the singularity flag and the variance components
    # alike (as a study refit builds them).
    covariances = _relative_covariances(model)
    singular = _singular(covariances)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deviance evaluations next to the optimum may warn; the result says it
        hessian_ok, hessian_msg = _hessian(model, deviance_fn, singular) if converged else (None, None)
    varcorr = _varcorr(model, group_names, column_names, covariances)
    # mixedlm's singular-fit warning says "variance components estimated as zero" even
    # when a correlation is at +-1: say which parameter is on the boundary instead.
    caught_text = [
        boundary_message(varcorr) if str(w.message).startswith(_MIXEDLM_SINGULAR) else str(w.message) for w in caught
    ]
    if singular and not any(m.startswith("boundary (singular) fit") for m in caught_text):
        caught_text.append(boundary_message(varcorr))
    messages = user_names(
        caught_text
        + [ln.strip() for ln in printed.getvalue().splitlines() if ln.strip()]
        + gradient
        + ([hessian_msg] if hessian_msg and hessian_ok is False else []),
        group_names,
        column_names,
    )
    notes = [hessian_msg] if hessian_ok is None and hessian_msg else []
    sigma = None
    if spec.family == "gamma":
        sigma = mixedlm_gamma.gamma_sigma(deviance_fn, np.r_[np.asarray(model.theta, dtype=float), beta])
    # lme4's vcov() of a Gamma GLMM is sigma^2 times mixedlm's unit-dispersion one:
    # the Wald tests and the anova use that one
    vcov = np.asarray(model.vcov(), dtype=float) * (1.0 if sigma is None else sigma**2)
    # mixedlm drops a column it finds collinear (a constant covariate): test what was fitted
    fitted_names = set(names)
    terms = {
        t: kept
        for t, cols in design.term_columns.items()
        if t != "(Intercept)" and (kept := [c for c in cols if c in fitted_names])
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deviance evaluations next to the optimum; failures are reported
        fixef, anova_table, test, test_messages, parts = fixed_effect_inference(
            model, spec, names, terms, frame, vcov=vcov
        )
    messages += test_messages
    loglik, npar = float(model.logLik().value), int(model.npar())
    dispersion: dict[str, float] = {}
    if spec.family == "negative_binomial":
        # theta is a parameter of the likelihood too: lme4 counts it in AIC/BIC.
        nb_theta = family_fit["nb_theta"]
        dispersion = {"theta": float(nb_theta)}
        npar += 1
        notes.append(f"theta estimated as lme4's glmer.nb ({family_fit['nb_evals']} glmer fits)")
        varcorr = pd.concat(
            [
                varcorr,
                pd.DataFrame(
                    [{"group": "Residual", "term": "theta", "variance": nb_theta, "sd": np.nan, "correlation": np.nan}]
                ),
            ],
            ignore_index=True,
        )
    if spec.family == "gamma":
        # model.deviance is lme4's Laplace deviance here; the dispersion is a parameter.
        loglik, npar = -0.5 * float(model.deviance), npar + 1
        dispersion = {"sigma": sigma, "shape": 1.0 / sigma**2}
        # lme4's VarCorr scales a model with a residual scale by sigma^2 (as for lmer),
        # Gamma GLMMs included: report what R reports.
        varcorr = varcorr.assign(variance=varcorr["variance"] * sigma**2, sd=varcorr["sd"] * sigma)
        varcorr = pd.concat(
            [
                varcorr,
                pd.DataFrame(
                    [
                        {
                            "group": "Residual",
                            "term": "(Intercept)",
                            "variance": sigma**2,
                            "sd": sigma,
                            "correlation": np.nan,
                        }
                    ]
                ),
            ],
            ignore_index=True,
        )
    aic, bic = float(model.AIC()), float(model.BIC())
    if dispersion:
        aic, bic = -2 * loglik + 2 * npar, -2 * loglik + np.log(int(model.nobs())) * npar
    optional = {}
    if random_effects:
        blocks = _cond_blocks(model)
        optional["ranef"] = _ranef(model, group_names, column_names, blocks)
        optional["ranef_cov"] = _ranef_cov(model, blocks, group_names, column_names)
    if spec.intervals == "profile":

        def refit_ml():
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                return engine_model(frame, spec, formula, design, reml=False)[0]

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optional["intervals"], profile_messages = profile_intervals(
                model, spec, refit_ml, names, group_names, column_names
            )
        messages += profile_messages
    if ddf:
        ddf_fields, ddf_notes = _ddf_parts(model, spec, parts)
        optional.update(ddf_fields)
        notes += ddf_notes
    return FitResult(
        spec=spec,
        engine_version=mixedlm.__version__,
        fixef=fixef,
        test=test,
        anova=anova_table,
        vcov=vcov,
        varcorr=varcorr,
        **optional,
        frame=frame,
        observed=observed,
        fitted=fitted,
        fitted_marginal=marginal,
        nobs=int(model.nobs()),
        ngroups={_group_name(str(k), group_names): int(v) for k, v in model.ngrps().items()},
        loglik=loglik,
        aic=aic,
        bic=bic,
        deviance=_deviance(model, spec),
        npar=npar,
        dispersion=dispersion,
        converged=converged,
        singular=singular,
        hessian_ok=hessian_ok,
        warnings=messages,
        notes=notes,
        optimizer=str(getattr(model, "optimizer", "")),
    )


# The warnings mixedlm's lmer() and glmer() add after optimizing (lmer_fit.py,
# glmer_fit.py), which their optimizers do not.
_NOT_CONVERGED = "Model failed to converge. Consider increasing maxiter or trying a different optimizer."
_PIRLS_NOT_CONVERGED = (
    "Model failed to converge: the inner PIRLS solver did not converge. "
    "Consider increasing pirls_maxiter or inspecting the response and model specification."
)
_SINGULAR = "Model is singular (boundary fit). Some variance components are estimated as zero or near-zero."


_NO_RANEF = pd.DataFrame(columns=RANEF_COLUMNS)
_NO_ANOVA = pd.DataFrame(columns=ANOVA_COLUMNS)
_NO_INTERVALS = pd.DataFrame(columns=INTERVAL_COLUMNS)


# The families a Refitter refits: lmer, and glmer's binomial and Poisson (one glmer
# fit per replicate; the negative binomial's theta search and the Gamma GLMM's own
# objective are fitted in full).
REFIT_FAMILIES = ("gaussian", "binomial", "poisson")


class Refitter:
    """One mixed model's structure, refitted to new responses (lme4's ``refit``, as
    simr does): the formula, model frame and matrices are built once, from ``frame``.
    A linear mixed model also keeps mixedlm's optimizer with its response-free products
    (``LMMOptimizer.with_response``, which mixedlm's own bootstrap refits with); a
    binomial or Poisson GLMM gets a glmer optimizer of the template's matrices with the
    new response (as mixedlm's ``refit``; its native problem holds the response). Each
    call optimizes afresh with lmer()'s or glmer()'s optimizer settings, so its numbers
    are those of a full :func:`fit` of the same data from the same start: given
    ``start`` (a study's true covariances, see :func:`start_theta`), there, as lme4's
    ``refit`` starts at the model's own parameters, which in simr are the
    simulation's (a GLMM without glmer's nAGQ = 0 stage; a fit that does not converge
    from there redone from the default start, as :func:`engine_fit` does); else at
    mixedlm's default start. Either way a replicate's numbers do not depend on which replicate built the
    template. Only what
    a study's tables read is computed per call: fixed effects and
    standard errors (and a linear model's Satterthwaite or Kenward-Roger tests),
    variance components, logLik, convergence (optimizer flag, gradient and Hessian
    checks, as :func:`fit`) and singularity; no fitted values or conditional modes."""

    def __init__(
        self,
        frame: pd.DataFrame,
        spec: ModelSpec,
        formula: Formula,
        design: ModelMatrix | None = None,
        start: Covariance | None = None,
    ):
        import mixedlm

        if spec.family not in REFIT_FAMILIES or formula.trials or formula.offset or formula.response != formula.outcome:
            raise ValueError(
                f"Refitter supports {', '.join(REFIT_FAMILIES)} models of a plain response without trials or offset"
            )
        design = design if design is not None else build(formula, frame)
        text, data, self.column_names, self.group_names = engine_inputs(formula, design, frame)
        self.glmm = spec.family != "gaussian"
        printed = io.StringIO()
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
            warnings.simplefilter("always")
            if self.glmm:
                self.family = _family(spec.family, spec.link)
                self.model = mixedlm.glmer(text, data, family=self.family, nAGQ=spec.nagq)
            else:
                self.model = mixedlm.lmer(text, data, REML=spec.reml)
                self.control = self.model.control
        # What lmer() says about the structure (too few levels, dropped columns) holds for
        # every replicate; what it says about this fit's optimum (singular, not converged)
        # does not: each refit says that for itself.
        self.structure_warnings = [
            str(w.message) for w in caught if not str(w.message).startswith((_NOT_CONVERGED[:24], _SINGULAR[:24]))
        ]
        self.structure_printed = [ln.strip() for ln in printed.getvalue().splitlines() if ln.strip()]
        self.spec, self.frame = spec, frame
        self.names = [self.column_names.get(n, n) for n in self.model.matrices.fixed_names]
        self.version = mixedlm.__version__
        structures = self.model.matrices.random_structures
        self.start = None if start is None else start_theta(structures, self.group_names, self.column_names, start)
        if self.glmm:
            self.control = glmer_control(started=False)  # what glmer() fits with when given none
        ctrl = self.control
        # The matrices the template fitted (after mixedlm's model checks), and the
        # optimizer call lmer() or glmer() makes.
        self.settings = {
            "method": ctrl.optimizer,
            "maxiter": ctrl.maxiter,
            "options": ctrl.get_scipy_options(optimizer=ctrl.optimizer, maxiter=ctrl.maxiter),
            "restart_edge": ctrl.restart_edge,
        }
        if not self.glmm:
            from mixedlm.estimation.reml import LMMOptimizer

            self.optimizer = LMMOptimizer(self.model.matrices, REML=spec.reml, use_rust=ctrl.use_rust)
            self.settings["use_analytic_gradient"] = ctrl.use_analytic_gradient

    def _refit(self, response: np.ndarray):
        """The refitted mixedlm result and the optimizer that fitted it (its deviance
        evaluator, for the checks and tests), as lmer() and glmer() fit, from the start
        the class docstring describes (never the template's optimum: a replicate's
        numbers do not depend on which replicate built the template)."""
        response = np.asarray(response, dtype=float)
        template, ctrl = self.model, self.control
        if self.glmm:
            import dataclasses

            from mixedlm.estimation.laplace import GLMMOptimizer
            from mixedlm.models.glmer import GlmerResult

            matrices = dataclasses.replace(template.matrices, y=response)

            def optimized(start):
                optimizer = GLMMOptimizer(
                    matrices,
                    self.family,
                    nAGQ=template.nAGQ,
                    pirls_maxiter=ctrl.pirls_maxiter,
                    pirls_tol=ctrl.tolPwrss,
                    nAGQ0initStep=ctrl.nAGQ0initStep and start is None,  # as glmer_control
                )
                return optimizer, optimizer.optimize(start=start, **self.settings)

            # As a full fit from the same start does (_model_from_start).
            optimizer, opt = from_start(optimized, self.start, lambda pair: pair[1])
            model = GlmerResult(
                formula=template.formula,
                matrices=matrices,
                family=self.family,
                theta=opt.theta,
                beta=opt.beta,
                u=opt.u,
                deviance=opt.deviance,
                converged=opt.converged,
                n_iter=opt.n_iter,
                nAGQ=template.nAGQ,
                pirls_converged=opt.pirls_converged,
                pirls_maxiter=optimizer.pirls_maxiter,
                pirls_tol=optimizer.pirls_tol,
                joint_fit=opt.joint_fit,
                message=opt.message,
                optimizer=self.settings["method"],
            )
            return model, optimizer
        from mixedlm.models.lmer import LmerResult

        def optimized(start):
            optimizer = self.optimizer.with_response(response)
            return optimizer, optimizer.optimize(start=start, **self.settings)

        optimizer, opt = from_start(optimized, self.start, lambda pair: pair[1])
        model = LmerResult(
            formula=template.formula,
            matrices=optimizer.matrices,
            theta=opt.theta,
            beta=opt.beta,
            sigma=opt.sigma,
            u=opt.u,
            deviance=opt.deviance,
            REML=template.REML,
            converged=opt.converged,
            n_iter=opt.n_iter,
            gradient_norm=opt.gradient_norm,
            at_boundary=opt.at_boundary,
            message=opt.message,
            function_evals=opt.function_evals,
            optimizer=opt.optimizer,
            control=ctrl,
        )
        return model, optimizer

    def __call__(self, response: np.ndarray) -> FitResult:
        """Refit to ``response`` (one value per row of the template frame, same order);
        returns a FitResult as :func:`fit` with ``random_effects=False`` gives it,
        without fitted values, AIC/BIC or deviance. A linear model's ``vcov`` is
        sigma^2 times the inverse of the fixed effects' information at the optimum, from
        the optimizer's own evaluation (mixedlm's ``vcov()`` refactors the system to get
        the same matrix, equal to about 1e-13); a GLMM's is mixedlm's ``vcov()``, as a
        full fit's."""
        import mixedlm

        printed = io.StringIO()
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
            warnings.simplefilter("always")
            model, optimizer = self._refit(response)
        ctrl = self.control
        converged = bool(model.converged)
        covariances = _relative_covariances(model)
        singular = _singular(covariances)  # at its default tol, 1e-4, lmer()'s boundary_tol too
        at_boundary = singular if ctrl.boundary_tol == 1e-4 else _singular(covariances, ctrl.boundary_tol)
        # The warnings lmer() and glmer() add after their optimizer (the optimizer does not).
        not_converged = _NOT_CONVERGED
        if self.glmm and not model.pirls_converged:
            not_converged = _PIRLS_NOT_CONVERGED
        lmer_warnings = ([not_converged] if ctrl.check_conv and not converged else []) + (
            [_SINGULAR] if ctrl.check_singular and at_boundary else []
        )
        gradient = [m for m in mixedlm.checkConv(model, check_singular=False).messages if m.startswith("Gradient")]
        converged = converged and not gradient
        # The Hessian check of a full fit, on the same deviance function: mixedlm's
        # as_function("deviance") is a new optimizer's objective (a GLMM fitted jointly:
        # its joint objective in theta and beta) on the same matrices.
        deviance = optimizer.joint_objective() if getattr(model, "joint_fit", False) else optimizer.objective
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hessian_ok, hessian_msg = _hessian(model, deviance, singular) if converged else (None, None)
        varcorr = _varcorr(model, self.group_names, self.column_names, covariances)
        # In the order a full fit records them, the singular-fit warning saying which
        # parameter is on the boundary as there (see fit).
        caught_text = [
            boundary_message(varcorr) if m.startswith(_MIXEDLM_SINGULAR) else m
            for m in self.structure_warnings + [str(w.message) for w in caught] + lmer_warnings
        ]
        if singular and not any(m.startswith("boundary (singular) fit") for m in caught_text):
            caught_text.append(boundary_message(varcorr))
        messages = user_names(
            caught_text
            + self.structure_printed
            + [ln.strip() for ln in printed.getvalue().splitlines() if ln.strip()]
            + gradient
            + ([hessian_msg] if hessian_msg and hessian_ok is False else []),
            self.group_names,
            self.column_names,
        )
        notes = [hessian_msg] if hessian_ok is None and hessian_msg else []
        if self.glmm:
            vcov = np.asarray(model.vcov(), dtype=float)
        else:
            core = optimizer._evaluate_core(np.asarray(model.theta, dtype=float))
            if core is None:
                raise FloatingPointError("the random-effects system is singular at the estimates")
            info = np.asarray(core.fixed_information, dtype=float)
            vcov = float(model.sigma) ** 2 * np.linalg.inv((info + info.T) / 2)
        if self.glmm or self.spec.inference == "wald":  # a GLMM's tests are Wald z, as glmer's
            fixef = tables.from_columns(
                {"term": self.names, "estimate": model.beta, "std_error": np.sqrt(np.diag(vcov))}
            )
            test = TESTS["wald"]
        else:
            # The refitted lmer is a whole model: its Satterthwaite or Kenward-Roger tests
            # come from it as a full fit's do (fixed_effect_inference; no type III table,
            # which a study does not read).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deviance evaluations next to the optimum
                fixef, _, test, test_messages, _ = fixed_effect_inference(
                    model, self.spec, self.names, {}, self.frame, vcov=vcov, evaluator=optimizer
                )
            messages += [m for m in test_messages if m not in messages]
        return FitResult(
            spec=self.spec,
            engine_version=self.version,
            fixef=fixef,
            test=test,
            npar=int(model.npar()),
            varcorr=varcorr,
            # shared, never written: an empty table per replicate costs 0.5 ms
            ranef=_NO_RANEF,
            anova=_NO_ANOVA,
            intervals=_NO_INTERVALS,
            nobs=int(model.nobs()),
            loglik=float(model.logLik().value),
            converged=converged,
            singular=singular,
            hessian_ok=hessian_ok,
            warnings=messages,
            notes=notes,
            vcov=vcov,
            optimizer=str(getattr(model, "optimizer", "")),
        )
