"""Parametric bootstrap refits of a mixedlm fit (see :mod:`glmm_steps.bootstrap`).

Responses are simulated here rather than by mixedlm's ``simulate()``, which draws 0/1
outcomes for a binomial model fitted to proportions with trials as weights (the form
the engine fits ``cbind(s, f)`` in); each refit is mixedlm's ``refit(newresp)``, which
reuses the model's design matrices, weights and offset.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pandas as pd

from glmm_steps.engines.base import REFIT_COLUMNS, ModelSpec
from glmm_steps.engines.mixedlm_engine import engine_model
from glmm_steps.engines.mixedlm_profile import _SdCor
from glmm_steps.formula import Formula
from glmm_steps.model_matrix import ModelMatrix


def simulate_response(model, family: str, rng: np.random.Generator) -> np.ndarray:
    """One response drawn from the fitted model with new random effects (bootMer's
    ``use.u = FALSE``): gaussian y = X beta + Z Lambda u sigma + sigma e; binomial
    successes ~ Binomial(trials, p) as proportions (trials are the prior weights);
    Poisson counts."""
    from mixedlm.estimation.reml import _build_lambda

    m = model.matrices
    theta = np.asarray(model.theta, dtype=float)
    u = rng.standard_normal(m.n_random)
    scale = float(model.sigma) if family == "gaussian" else 1.0
    eta = m.X @ np.asarray(model.beta, dtype=float) + m.offset
    if m.n_random:
        eta = eta + scale * (m.Z @ (_build_lambda(theta, m.random_structures) @ u))
    if family == "gaussian":
        return eta + scale * rng.standard_normal(m.n_obs)
    if family == "poisson":
        return rng.poisson(np.exp(eta)).astype(float)
    p = 1.0 / (1.0 + np.exp(-eta))
    trials = np.rint(np.asarray(m.weights, dtype=float)).astype(np.int64)
    return rng.binomial(trials, p) / trials


def _estimates(fit, sdcor: _SdCor, names: list[str], gaussian: bool) -> list[tuple[str, str, str, float]]:
    sigma = float(fit.sigma) if gaussian else 1.0
    rows = [("fixed", "", n, float(b)) for n, b in zip(names, np.asarray(fit.beta, dtype=float))]
    rows += [
        ("ran_pars", g, t, float(v))
        for (g, t), v in zip(sdcor.labels, sdcor.from_theta(np.asarray(fit.theta, dtype=float), sigma))
    ]
    if gaussian:
        rows.append(("ran_pars", "Residual", "(Intercept)", sigma))
    return rows


def refits(
    frame: pd.DataFrame, spec: ModelSpec, formula: Formula, design: ModelMatrix, replicates: list[tuple[int, int]]
) -> pd.DataFrame:
    """Fit ``spec`` to ``frame`` coded as ``design`` (the fit step's model matrix), then
    for each (index, seed) simulate a response
    (``numpy.random.default_rng(seed)``) and refit. Returns REFIT_COLUMNS rows: per
    replicate its estimates (status ``ok`` or ``not_converged``), or one row with
    status ``failed`` and the error."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        model, column_names, group_names = engine_model(frame, spec, formula, design)
    names = [column_names.get(n, n) for n in model.matrices.fixed_names]
    sdcor = _SdCor(model.matrices.random_structures, group_names, column_names)
    gaussian = spec.family == "gaussian"
    rows = []
    for index, seed in replicates:
        try:
            y = simulate_response(model, spec.family, np.random.default_rng(seed))
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                fit = model.refit(y)
            status = "ok" if bool(fit.converged) else "not_converged"
            rows += [[index, seed, status, "", *r] for r in _estimates(fit, sdcor, names, gaussian)]
        except Exception as e:  # a failed refit is a result to count, not a crash
            rows.append([index, seed, "failed", f"{type(e).__name__}: {e}", "", "", "", np.nan])
    return pd.DataFrame(rows, columns=REFIT_COLUMNS)
