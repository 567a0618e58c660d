"""The statsmodels engine: an independent second implementation beside mixedlm.

Gaussian models are fitted by statsmodels' ``MixedLM`` (REML or ML, with the same
log-likelihood definitions as lme4). Binomial and Poisson models are fitted only when
the config asks for the Bayesian approximation (``approximation: variational``), by
``BinomialBayesMixedGLM`` / ``PoissonBayesMixedGLM`` and variational Bayes: not maximum
likelihood, no log-likelihood, and every output says so.

How an lme4 formula maps onto MixedLM. MixedLM has one grouping factor (``groups``)
whose random effects may be correlated (``exog_re``), plus variance components
(``exog_vc``): sets of columns within each group that share one variance and are
independent of everything else. So

- one factor: ``(1 + x | g)`` is groups g with exog_re [1, x]; ``(1 + x || g)`` is
  groups g with exog_re [1] and a component for x;
- nested factors, b within a: groups a, and b's intercepts a component (one column per
  level of b inside each a);
- crossed factors: one group holding every row, and every factor a component.

A correlated term with several columns must be exog_re, so it is expressible only on
the grouping factor, with every other factor nested within it; :func:`layout` raises a
GlmmError naming the term otherwise (the config check calls it before any job runs).
Design matrices come from :mod:`glmm_steps.model_matrix`, the builder both engines
share, so both fit the same columns under the same names.

Optimization. statsmodels' default ``fit()`` can stop far from the optimum: on the
reference study (tests/reference/data/bp_study_seed123.csv) it stops at REML logLik
-1545.92 with a hospital variance of 18.0, where lme4 reaches -1543.35 with 6.07, and
``method="lbfgs"`` stops at -1543.91 with a patient variance of 0.006 instead of 0.98.
So every optimizer in OPTIMIZERS is run from statsmodels' start, the best logLik is
kept and polished by a gradient method from there, and the gradient of the profiled
log-likelihood is checked at the end. All of it goes to ``FitResult.details``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from glmm_steps.engines.base import RANEF_COLUMNS, RANEF_COV_COLUMNS, VARCORR_COLUMNS, FitResult, ModelSpec
from glmm_steps.engines.boundary import boundary_message
from glmm_steps.errors import GlmmError
from glmm_steps.formula import Formula, RandomTerm
from glmm_steps.model_matrix import ModelMatrix, build

# Tried in this order from statsmodels' default start; the best logLik wins. powell and
# nm (derivative-free) reach lme4's optimum where the gradient methods stop early.
OPTIMIZERS = ("powell", "nm", "lbfgs", "bfgs")
# A gradient method restarted from the best optimum tightens it to this tolerance.
POLISH = "bfgs"
POLISH_GTOL = 1e-8
# The fit counts as converged when every component of the gradient of the profiled
# log-likelihood (in statsmodels' square-root parameterization, where a variance on
# its zero boundary also has a zero gradient) is below this.
GRADIENT_TOL = 1e-3
# A relative standard deviation below this is a variance on its boundary (lme4's
# isSingular() tolerance on theta).
SINGULAR_TOL = 1e-4
# Variational Bayes starts from random values: a fixed seed makes a fit reproducible.
BAYES_SEED = 0
# statsmodels' default priors of the Bayesian GLMMs, recorded in every such fit.
FIXED_PRIOR_SD = 2.0
LOG_SD_PRIOR_SD = 1.0


@dataclass(frozen=True)
class Layout:
    """How a formula's random terms map onto MixedLM: ``groups`` is the lme4 name of
    the factor used as MixedLM's groups (None: one group holding every row);
    ``re_term`` is the index of the term fitted as MixedLM's correlated random
    effects (None: every random column is a variance component)."""

    groups: str | None
    re_term: int | None


def _structural_columns(term: RandomTerm) -> int:
    return int(term.intercept) + len(term.slopes)


def needs_nesting(formula: Formula) -> bool:
    """Whether :func:`layout` can refuse ``formula`` depending on how its grouping
    factors nest: a correlated term with several columns, and more than one factor."""
    return len({t.group_name for t in formula.random}) > 1 and any(
        t.correlated and _structural_columns(t) > 1 for t in formula.random
    )


def layout(
    formula: Formula,
    family: str,
    contains: Callable[[str, str], bool] | None,
    n_columns: Callable[[int], int] | None = None,
) -> Layout:
    """Decide how ``formula`` is fitted by statsmodels, or raise GlmmError naming the
    term it cannot express.

    ``contains(outer, inner)`` says whether every level of grouping factor ``inner``
    lies within one level of ``outer`` (lme4 names); None when the data are not known,
    in which case the nesting a correlated term needs is not checked.
    ``n_columns(i)`` is the number of random-effect columns of term ``i`` (a factor
    slope has several); by default intercept plus slopes."""
    terms = formula.random
    width = n_columns or (lambda i: _structural_columns(terms[i]))
    blocks = [i for i, t in enumerate(terms) if t.correlated and width(i) > 1]
    if family != "gaussian":
        if blocks:
            raise GlmmError(
                f"engine statsmodels cannot fit {terms[blocks[0]]}: its Bayesian GLMMs have "
                "independent random effects only; write it with || or use engine: mixedlm"
            )
        if formula.offset:
            raise GlmmError(
                "engine statsmodels cannot fit offset(): its Bayesian GLMMs take no offset; use engine: mixedlm"
            )
        if formula.trials:
            raise GlmmError(
                "engine statsmodels cannot fit a cbind() response: its Bayesian "
                "binomial GLMM takes 0/1 outcomes only; use engine: mixedlm"
            )
        return Layout(groups=None, re_term=None)
    if len(blocks) > 1:
        raise GlmmError(
            f"engine statsmodels cannot fit {terms[blocks[1]]} beside {terms[blocks[0]]}: MixedLM "
            "has correlated random effects for one term only; write one of them with || "
            "or use engine: mixedlm"
        )
    factors = list(dict.fromkeys(t.group_name for t in terms))
    if blocks:
        outer = terms[blocks[0]].group_name
        for other in factors:
            if other != outer and contains is not None and not contains(outer, other):
                raise GlmmError(
                    f"engine statsmodels cannot fit {terms[blocks[0]]}: correlated random "
                    f"effects need every other grouping factor nested within '{outer}', "
                    f"and '{other}' is not; write the term with || or use engine: mixedlm"
                )
        return Layout(groups=outer, re_term=blocks[0])
    if contains is None:
        return Layout(groups=None, re_term=None)
    # Any factor containing all others can be the groups; more groups means smaller
    # per-group matrices, so prefer the one that splits the data finest.
    outer = next((f for f in factors if all(o == f or contains(f, o) for o in factors)), None)
    if outer is None:
        return Layout(groups=None, re_term=None)
    single = [i for i, t in enumerate(terms) if t.group_name == outer and width(i) == 1]
    return Layout(groups=outer, re_term=single[0] if single else None)


def nested(outer: np.ndarray, inner: np.ndarray) -> bool:
    """True when every level of ``inner`` (integer codes per row) lies within a single
    level of ``outer``."""
    pairs = np.unique(np.column_stack([inner, outer]), axis=0)
    return len(pairs) == len(np.unique(inner))


def group_codes(frame: pd.DataFrame, term: RandomTerm) -> np.ndarray:
    """Integer level codes per row of ``term``'s grouping factor (an interaction
    ``a:b`` is the combination of its columns)."""
    return frame.groupby(list(term.group), observed=True, sort=True).ngroup().to_numpy()


def containment(frame: pd.DataFrame, formula: Formula) -> Callable[[str, str], bool]:
    """The ``contains(outer, inner)`` test of :func:`layout` for the grouping columns
    in ``frame`` (lme4 group names of ``formula``)."""
    codes = {t.group_name: group_codes(frame, t) for t in formula.random}
    return lambda outer, inner: nested(codes[outer], codes[inner])


# ---- the random-effect design -------------------------------------------------------


@dataclass
class _Term:
    """One random term as built by mixedlm: level code per row, level labels, the
    term's column names and values (rows x columns)."""

    term: RandomTerm
    codes: np.ndarray
    levels: list[str]
    names: list[str]
    values: np.ndarray


def _design(frame: pd.DataFrame, formula: Formula, design: ModelMatrix):
    """The fixed-effect matrix (lme4's names), the response and the random terms of
    ``design`` (from :func:`glmm_steps.model_matrix.build`, the builder both engines
    share); mixedlm's matrix code only lays the random columns out by level."""
    from mixedlm import parse_formula
    from mixedlm.matrices.design import build_model_matrices

    from glmm_steps.engines.mixedlm_engine import engine_inputs

    text, data, column_names, _ = engine_inputs(formula, design, frame)
    mm = build_model_matrices(parse_formula(text), data)
    if len(mm.random_structures) != len(formula.random):
        raise GlmmError(
            f"formula {formula.text!r}: mixedlm built {len(mm.random_structures)} "
            f"random terms, expected {len(formula.random)}"
        )
    Z = mm.Z.tocsr()
    rows = np.arange(mm.n_obs)
    terms, offset = [], 0
    for term, st in zip(formula.random, mm.random_structures):
        codes = np.asarray(st.level_indices, dtype=np.int64)
        t = st.n_terms
        values = np.column_stack([np.asarray(Z[rows, offset + codes * t + j]).ravel() for j in range(t)])
        levels = [str(k) for k, _ in sorted(st.level_map.items(), key=lambda kv: kv[1])]
        terms.append(_Term(term, codes, levels, [column_names.get(n, n) for n in st.term_names], values))
        offset += st.n_levels * t
    return design.fixed_frame(), np.asarray(design.response, dtype=float), terms


@dataclass
class _Component:
    """A variance component: column ``column`` of random term ``term`` (an index into
    the formula's terms), one independent effect per level of its factor."""

    term: int
    column: int
    group: str
    name: str
    codes: np.ndarray
    levels: list[str]
    values: np.ndarray


def _components(terms: list[_Term], re_term: int | None) -> list[_Component]:
    return [
        _Component(i, j, t.term.group_name, name, t.codes, t.levels, t.values[:, j])
        for i, t in enumerate(terms)
        if i != re_term
        for j, name in enumerate(t.names)
    ]


def _group_blocks(comp: _Component, group_rows: list[np.ndarray]):
    """The component's columns within each group: a rows x levels-present matrix, and
    the level indices of its columns."""
    mats, cols = [], []
    for rows in group_rows:
        codes = comp.codes[rows]
        present = np.unique(codes)
        m = np.zeros((len(rows), len(present)))
        m[np.arange(len(rows)), np.searchsorted(present, codes)] = comp.values[rows]
        mats.append(m)
        cols.append(present)
    return mats, cols


# ---- gaussian: MixedLM ----------------------------------------------------------------


def _attempt(model, reml: bool, method: str, **kwargs):
    """One statsmodels fit; returns (result or None, record for the details)."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = model.fit(reml=reml, method=method, **kwargs)
        except Exception as e:  # one optimizer failing is a recorded attempt, not a failed fit
            return None, {
                "method": method,
                "logLik": None,
                "converged": False,
                "error": f"{type(e).__name__}: {e}",
                "seconds": round(time.perf_counter() - start, 3),
            }
    record = {
        "method": method,
        "logLik": float(res.llf),
        "converged": bool(res.converged),
        "seconds": round(time.perf_counter() - start, 3),
    }
    messages = sorted({str(w.message) for w in caught})
    if messages:
        record["warnings"] = messages
    return res, record


def _optimize(model, reml: bool):
    """Fit ``model`` with every optimizer in OPTIMIZERS, keep the best logLik, polish
    it, and measure the gradient there. Returns (result, name of the winning run,
    a record of every run, largest absolute gradient component)."""
    attempts, results = [], []
    for method in OPTIMIZERS:
        res, record = _attempt(model, reml, method)
        attempts.append(record)
        # A run can end at a degenerate point with logLik +inf (nm on sleepstudy): not an optimum.
        if res is not None and np.isfinite(res.llf):
            results.append((res, method))
    if not results:
        raise RuntimeError("every optimizer failed: " + "; ".join(a.get("error", "") for a in attempts))
    best, chosen = max(results, key=lambda r: r[0].llf)
    polished, record = _attempt(model, reml, POLISH, start_params=best.params_object.copy(), gtol=POLISH_GTOL)
    record["method"] = f"{POLISH} from {chosen}"
    attempts.append(record)
    if polished is not None and np.isfinite(polished.llf) and polished.llf >= best.llf:
        best, chosen = polished, record["method"]
    model.reml = reml
    packed = best.params_object.get_packed(use_sqrt=True, has_fe=False)
    gradient = np.asarray(model.score(packed, profile_fe=True), dtype=float)
    return best, chosen, attempts, float(np.max(np.abs(gradient))) if gradient.size else 0.0


def _codes_of(terms: list[_Term], group: str) -> np.ndarray:
    return next(t.codes for t in terms if t.term.group_name == group)


def _offset(frame: pd.DataFrame, formula: Formula) -> np.ndarray:
    if not formula.offset:
        return np.zeros(len(frame))
    off = frame[formula.offset].to_numpy(dtype=float)
    return np.log(off) if formula.offset_log else off


def _relative_cov(cov_rel: np.ndarray, comp_var: np.ndarray, widths: list[int]) -> np.ndarray:
    """One group's covariance of its random effects, relative to the residual
    variance: the correlated block, then each component's variance per column."""
    q = len(cov_rel) + sum(widths)
    D = np.zeros((q, q))
    k = len(cov_rel)
    D[:k, :k] = cov_rel
    diag = np.repeat(comp_var, widths) if widths else np.zeros(0)
    D[k:, k:] = np.diag(diag)
    return D


def _gls(X: np.ndarray, y: np.ndarray, beta: np.ndarray, scale: float, group_rows, Z, D):
    """lme4's vcov of the fixed effects (scale * (X'V^-1 X)^-1, V relative to the
    residual variance), and per group the conditional modes of the random effects and
    their conditional covariance matrix given beta. Written without inverting D, so a
    variance on its boundary (a singular fit) is fine."""
    p = X.shape[1]
    xtvix = np.zeros((p, p))
    modes, cond_var = [], []
    for rows, z, d in zip(group_rows, Z, D):
        x, r = X[rows], y[rows] - X[rows] @ beta
        ztz = z.T @ z
        # (I + D Z'Z)^-1 D is symmetric and gives every term below.
        m = np.linalg.solve(np.eye(len(d)) + d @ ztz, d)
        ztx = z.T @ x
        xtvix += x.T @ x - ztx.T @ m @ ztx
        modes.append(m @ (z.T @ r))
        cond_var.append(scale * (d - m @ ztz @ d))
    return scale * np.linalg.inv(xtvix), modes, cond_var


def _singular(cov_rel: np.ndarray, comp_var: np.ndarray) -> bool:
    """A relative standard deviation (lme4's theta) on its zero boundary."""
    if len(comp_var) and np.sqrt(np.maximum(comp_var, 0)).min() < SINGULAR_TOL:
        return True
    if len(cov_rel):
        try:
            return bool(np.abs(np.diag(np.linalg.cholesky(cov_rel))).min() < SINGULAR_TOL)
        except np.linalg.LinAlgError:
            return True
    return False


def _varcorr(
    terms: list[_Term], re_term: int | None, cov: np.ndarray, comp_var: np.ndarray, residual: float | None
) -> pd.DataFrame:
    """VarCorr rows in formula order: a term's variances, then its correlations
    (covariance in ``variance``), and last the residual (gaussian only)."""
    rows, c = [], 0
    for i, t in enumerate(terms):
        g = t.term.group_name
        if i == re_term:
            sd = np.sqrt(np.maximum(np.diag(cov), 0))
            for j, name in enumerate(t.names):
                rows.append({"group": g, "term": name, "variance": cov[j, j], "sd": sd[j], "correlation": np.nan})
            for a in range(len(t.names)):
                for b in range(a + 1, len(t.names)):
                    cor = cov[a, b] / (sd[a] * sd[b]) if sd[a] * sd[b] > 0 else np.nan
                    rows.append(
                        {
                            "group": g,
                            "term": f"cor({t.names[a]},{t.names[b]})",
                            "variance": cov[a, b],
                            "sd": np.nan,
                            "correlation": cor,
                        }
                    )
            continue
        for name in t.names:
            v = float(comp_var[c])
            rows.append({"group": g, "term": name, "variance": v, "sd": np.sqrt(max(v, 0.0)), "correlation": np.nan})
            c += 1
    if residual is not None:
        rows.append(
            {
                "group": "Residual",
                "term": "(Intercept)",
                "variance": residual,
                "sd": np.sqrt(residual),
                "correlation": np.nan,
            }
        )
    return pd.DataFrame(rows, columns=VARCORR_COLUMNS)


def _ranef_rows(terms: list[_Term], term: int, column: int, levels, estimates, cond_var) -> list[dict]:
    """Rows of the random-effects table for column ``column`` of term ``term`` at
    ``levels`` (level codes), with a sort key."""
    t = terms[term]
    return [
        {
            "group": t.term.group_name,
            "level": t.levels[k],
            "term": t.names[column],
            "estimate": float(e),
            "cond_sd": float(np.sqrt(max(v, 0.0))),
            "_order": (term, int(k), column),
        }
        for k, e, v in zip(levels, estimates, cond_var)
    ]


def _ranef_table(rows: list[dict]) -> pd.DataFrame:
    """Random effects ordered by term (formula order), level, then column."""
    rows = sorted(rows, key=lambda r: r["_order"])
    return pd.DataFrame(rows, columns=RANEF_COLUMNS)


def _fit_lmm(
    frame: pd.DataFrame, spec: ModelSpec, formula: Formula, X: pd.DataFrame, y: np.ndarray, terms: list[_Term]
) -> FitResult:
    import statsmodels
    from statsmodels.regression.mixed_linear_model import MixedLM, VCSpec

    lay = layout(
        formula,
        "gaussian",
        lambda o, i: nested(_codes_of(terms, o), _codes_of(terms, i)),
        lambda i: terms[i].values.shape[1],
    )
    offset = _offset(frame, formula)
    n = len(y)
    groups = _codes_of(terms, lay.groups) if lay.groups is not None else np.zeros(n, dtype=np.int64)
    # statsmodels splits rows by sorted group label, keeping row order within a group.
    labels = np.unique(groups)
    group_rows = [np.flatnonzero(groups == g) for g in labels]
    re = terms[lay.re_term] if lay.re_term is not None else None
    comps = _components(terms, lay.re_term)
    blocks = [_group_blocks(c, group_rows) for c in comps]
    vc = VCSpec(
        [f"{c.group}|{c.name}" for c in comps],
        [[[c.levels[k] for k in cols] for cols in b[1]] for c, b in zip(comps, blocks)],
        [b[0] for b in blocks],
    )
    Xa, yo = X.to_numpy(), y - offset
    model = MixedLM(yo, Xa, groups=groups, exog_re=None if re is None else re.values, exog_vc=vc if comps else None)

    best, chosen, attempts, grad_max = _optimize(model, spec.reml)
    scale = float(best.scale)
    beta = np.asarray(best.fe_params, dtype=float)
    cov_rel = np.atleast_2d(np.asarray(best.cov_re_unscaled, dtype=float)) if re is not None else np.zeros((0, 0))
    comp_var = np.asarray(best.vcomp, dtype=float) / scale if comps else np.zeros(0)
    Z, D = [], []
    for g, rows in enumerate(group_rows):
        parts = ([re.values[rows]] if re is not None else []) + [b[0][g] for b in blocks]
        Z.append(np.hstack(parts))
        D.append(_relative_cov(cov_rel, comp_var, [len(b[1][g]) for b in blocks]))
    vcov, modes, cond_var = _gls(Xa, yo, beta, scale, group_rows, Z, D)

    fitted_marginal = Xa @ beta + offset
    fitted = fitted_marginal.copy()
    ranef_rows, cov_rows = [], []
    for g, (rows, z, b) in enumerate(zip(group_rows, Z, modes)):
        fitted[rows] += z @ b
        k = 0
        if re is not None:
            for j in range(len(re.names)):
                ranef_rows += _ranef_rows(terms, lay.re_term, j, [labels[g]], [b[j]], [cond_var[g][j, j]])
                t = terms[lay.re_term]
                cov_rows += [
                    (t.term.group_name, t.levels[labels[g]], t.names[i], t.names[j], cond_var[g][i, j])
                    for i in range(j)
                ]
            k = len(re.names)
        for c, blk in zip(comps, blocks):
            cols = blk[1][g]
            ranef_rows += _ranef_rows(
                terms, c.term, c.column, cols, b[k : k + len(cols)], np.diag(cond_var[g])[k : k + len(cols)]
            )
            k += len(cols)

    singular = _singular(cov_rel, comp_var)
    loglik = float(best.llf)
    npar = X.shape[1] + (len(cov_rel) * (len(cov_rel) + 1)) // 2 + len(comps) + 1
    warns = []
    if grad_max > GRADIENT_TOL:
        warns.append(
            f"gradient of the log-likelihood at the optimum is {grad_max:.2g} "
            f"(> {GRADIENT_TOL:g}): the optimizers may not have converged"
        )
    varcorr = _varcorr(terms, lay.re_term, cov_rel * scale, comp_var * scale, scale)
    if singular:
        warns.append(boundary_message(varcorr))
    details = {
        "model": "statsmodels MixedLM",
        "groups": lay.groups if lay.groups is not None else "(one group of all rows)",
        "correlated_random_effects": str(re.term) if re is not None else None,
        "variance_components": [f"{c.group}/{c.name}" for c in comps],
        "optimizers": attempts,
        "chosen": chosen,
        "gradient_max_abs": grad_max,
        "gradient_tol": GRADIENT_TOL,
    }
    return FitResult(
        spec=spec,
        engine_version=statsmodels.__version__,
        fixef=pd.DataFrame({"term": list(X.columns), "estimate": beta, "std_error": np.sqrt(np.diag(vcov))}),
        vcov=np.asarray(vcov, dtype=float),
        varcorr=varcorr,
        ranef=_ranef_table(ranef_rows),
        ranef_cov=pd.DataFrame(cov_rows, columns=RANEF_COV_COLUMNS),
        frame=frame,
        observed=y,
        fitted=fitted,
        fitted_marginal=fitted_marginal,
        nobs=n,
        ngroups={t.term.group_name: len(t.levels) for t in terms},
        loglik=loglik,
        aic=-2 * loglik + 2 * npar,
        bic=-2 * loglik + np.log(n) * npar,
        deviance=-2 * loglik,
        npar=npar,
        converged=grad_max <= GRADIENT_TOL,
        singular=singular,
        warnings=warns,
        optimizer=f"statsmodels MixedLM: {chosen} (best of {', '.join(OPTIMIZERS)})",
        details=details,
    )


# ---- binomial / Poisson: Bayesian GLMMs -----------------------------------------------


def _fit_bayes(
    frame: pd.DataFrame, spec: ModelSpec, formula: Formula, X: pd.DataFrame, y: np.ndarray, terms: list[_Term]
) -> FitResult:
    import statsmodels
    from scipy import sparse
    from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM, PoissonBayesMixedGLM

    layout(formula, spec.family, None)  # raises for what these models cannot express
    comps = _components(terms, None)
    widths = [len(c.levels) for c in comps]
    starts = np.concatenate([[0], np.cumsum(widths)])
    n = len(y)
    Z = sparse.csr_array(
        (
            np.concatenate([c.values for c in comps]),
            (np.tile(np.arange(n), len(comps)), np.concatenate([s + c.codes for s, c in zip(starts, comps)])),
        ),
        shape=(n, int(starts[-1])),
    )
    cls = BinomialBayesMixedGLM if spec.family == "binomial" else PoissonBayesMixedGLM
    model = cls(
        y,
        X.to_numpy(),
        exog_vc=Z,
        ident=np.repeat(np.arange(len(comps)), widths),
        vcp_p=LOG_SD_PRIOR_SD,
        fe_p=FIXED_PRIOR_SD,
        fep_names=list(X.columns),
        vcp_names=[f"{c.group}|{c.name}" for c in comps],
        vc_names=[f"{c.group}|{c.name}|{lv}" for c in comps for lv in c.levels],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = model.fit_vb(rng=BAYES_SEED)
    opt = res.optim_retvals
    fe, vc_mean, vc_sd = (np.asarray(a, dtype=float) for a in (res.fe_mean, res.vc_mean, res.vc_sd))
    sd = np.exp(np.asarray(res.vcp_mean, dtype=float))
    eta_marginal = X.to_numpy() @ fe
    inverse = model.family.link.inverse
    ranef_rows = []
    for c, start in zip(comps, starts):
        k = np.arange(len(c.levels))
        ranef_rows += _ranef_rows(terms, c.term, c.column, k, vc_mean[start + k], vc_sd[start + k] ** 2)
    details = {
        "model": cls.__name__,
        "approximation": spec.approximation,
        "not_maximum_likelihood": "posterior estimates under the priors below; no log-likelihood",
        "prior": {
            "fixed_effects": f"normal(0, {FIXED_PRIOR_SD:g})",
            "log_sd": f"normal(0, {LOG_SD_PRIOR_SD:g}) for the log of each random-effect sd",
        },
        "estimates": (
            "posterior means (fixed effects, random effects), exp(posterior mean of "
            "log sd) for each sd; std_error is the posterior sd of the mean-field "
            "approximation, which understates uncertainty"
        ),
        "seed": BAYES_SEED,
        "optimizer_success": bool(opt.success),
        "optimizer_message": str(opt.message),
        "log_sd_posterior": [
            {"group": c.group, "term": c.name, "mean": float(m), "sd": float(s)}
            for c, m, s in zip(comps, res.vcp_mean, res.vcp_sd)
        ],
    }
    return FitResult(
        spec=spec,
        engine_version=statsmodels.__version__,
        fixef=pd.DataFrame({"term": list(X.columns), "estimate": fe, "std_error": np.asarray(res.fe_sd, dtype=float)}),
        varcorr=_varcorr(terms, None, np.zeros((0, 0)), sd**2, None),
        ranef=_ranef_table(ranef_rows),
        frame=frame,
        observed=y,
        fitted=inverse(eta_marginal + Z @ vc_mean),
        fitted_marginal=inverse(eta_marginal),
        nobs=n,
        ngroups={t.term.group_name: len(t.levels) for t in terms},
        npar=X.shape[1] + len(comps),
        converged=bool(opt.success),
        singular=False,
        warnings=sorted({str(w.message) for w in caught}),
        optimizer=f"statsmodels {cls.__name__}.fit_vb",
        details=details,
    )


def fit(
    frame: pd.DataFrame,
    spec: ModelSpec,
    formula: Formula,
    *,
    random_effects: bool = True,
    design: ModelMatrix | None = None,
    ddf: bool = False,
    start=None,
) -> FitResult:
    """Fit ``spec`` to ``frame`` (from :func:`glmm_steps.data.model_frame`) with
    statsmodels: MixedLM for gaussian models, a Bayesian GLMM for binomial/Poisson
    models with ``spec.approximation`` set. Raises GlmmError for a formula statsmodels
    cannot express; other exceptions propagate (the caller records them).
    ``random_effects=False`` leaves ``ranef`` empty, as the mixedlm engine does (here
    they cost little, so they are computed and dropped). ``design``: the shared model
    matrix (built here with default factor coding when not given). ``ddf`` is accepted
    for the engine interface and ignored: statsmodels' marginal means and predictions
    are asymptotic (normal reference). So is ``start`` (a study's true covariances,
    where the mixedlm engine starts its optimizer): statsmodels starts from its own
    values."""
    X, y, terms = _design(frame, formula, design if design is not None else build(formula, frame))
    if spec.family == "gaussian":
        result = _fit_lmm(frame, spec, formula, X, y, terms)
    elif spec.approximation is None:
        raise GlmmError(
            f"engine statsmodels fits {spec.family} models only by a Bayesian "
            "approximation: set approximation: variational"
        )
    else:
        result = _fit_bayes(frame, spec, formula, X, y, terms)
    if not random_effects:
        result.ranef, result.ranef_cov = pd.DataFrame(columns=RANEF_COLUMNS), None
    return result
