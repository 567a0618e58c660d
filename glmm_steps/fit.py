"""The fit step: read a data file, fit one model with its engine, record failures.

A fit that raises or does not converge never stops the workflow: the returned
FitResult carries ``error``/``converged=False`` and the warning text, and the
extract step writes them into ``fit_stats.json`` and the run summary.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from glmm_steps import data as data_mod
from glmm_steps import fitfile, model_matrix
from glmm_steps import formula as formula_mod
from glmm_steps import residuals as residuals_mod
from glmm_steps.answers import add_answers
from glmm_steps.engines import engine_version, get_engine
from glmm_steps.engines.base import FitResult, ModelSpec
from glmm_steps.errors import DataError, GlmmError
from glmm_steps.variance_explained import null_formula


def fit_model(
    frame: pd.DataFrame,
    spec: ModelSpec,
    where: str = "data",
    factors=(),
    drop_missing: bool = False,
    *,
    random_effects: bool = True,
    state: dict | None = None,
    answers: dict | None = None,
    start=None,
) -> FitResult:
    """Fit ``spec`` to the data frame ``frame`` (all columns; only the formula's are used).
    ``factors`` is the dataset's ``factors:`` list (column names, or mappings that also set
    a factor's levels, reference level and contrasts); ``drop_missing`` allows
    dropping rows with a missing value (else they are an error). ``random_effects=False``
    skips the conditional modes and their variances (most of a small fit's time, and
    unused by a study); every other number is the same either way. ``state``: a fit's
    ``transform_state`` to code the rows exactly as that fit did (a refit of its rows by
    another engine or by ML), instead of computing levels, centres and coefficients anew.
    ``answers`` (the model's config entry; None: skip, as refits for verify and compare
    do) asks for the answers (:func:`glmm_steps.answers.add_answers`): ICC and R², the
    effect-plot table, and the tables of its ``predict:`` and ``emmeans:`` keys.
    ``start``: the true covariances a study's fit starts its optimizer at
    (:func:`glmm_steps.batch.true_covariance`; None: the engine's default start).

    Returns a FitResult whose ``notes`` say what was done to the data. Data problems
    (missing column, text response, a response the family cannot model, ...) raise
    DataError; what the engines raise when a model cannot be fitted (see
    :func:`engine_errors`) is caught and recorded in the result; any other exception
    (a KeyError, TypeError, ... of this project's own code) propagates."""
    formula = formula_mod.parse(spec.formula)
    model_frame, notes = data_mod.model_frame(
        frame, formula, where, factors, family=spec.family, drop_missing=drop_missing
    )
    design = model_matrix.build(formula, model_frame, factors, state=state, where=where)
    began = time.perf_counter()
    try:
        result = get_engine(spec.engine)(
            model_frame,
            spec,
            formula,
            random_effects=random_effects,
            design=design,
            ddf=answers is not None,
            start=start,
        )
    except GlmmError:
        raise
    except engine_errors() as e:  # an engine failure is a result to record, not a crash
        result = _failed(spec, f"{type(e).__name__}: {e}", model_frame)
    result.notes = notes + result.notes
    result.transform_state = design.state
    result.term_columns = design.term_columns
    result.wall_time_s = time.perf_counter() - began
    if result.ok and spec.residual_nsim > 0:
        _add_residuals(result, design)
    if answers is not None:
        add_answers(
            result,
            formula,
            design,
            answers,
            factors,
            null_intercept=lambda: _null_intercept(model_frame, spec, formula, factors, where),
        )
    return result


def _add_residuals(result: FitResult, design: model_matrix.ModelMatrix) -> None:
    """Simulation-based residuals and their tests, here where the fitted model is: a
    failure to simulate is a note, never a failed fit."""
    spec = result.spec
    if result.nobs > residuals_mod.MAX_NOBS:
        result.notes.append(f"simulation residuals skipped: more than {residuals_mod.MAX_NOBS:,} rows")
        return
    try:
        result.scaled_residuals, result.diagnostics = residuals_mod.diagnose(
            result, spec.residual_nsim, spec.residual_seed, spec.residual_simulate, design
        )
    except (GlmmError, ValueError, FloatingPointError, np.linalg.LinAlgError) as e:
        # e.g. a mean numpy cannot draw from (NaN fitted values of a fit gone wrong)
        result.notes.append(f"simulation residuals not computed: {e}")
        return
    result.notes += result.diagnostics["notes"]


def engine_errors() -> tuple[type[BaseException], ...]:
    """The exception types the engines raise for a model they cannot fit: ValueError
    (numpy/scipy's LinAlgError is one; mixedlm's checks of a non-finite theta or
    deviance), RuntimeError (mixedlm's "did not produce a valid fit", the statsmodels
    engine's "every optimizer failed"), ArithmeticError (FloatingPointError, overflow,
    division by zero) and mixedlm's ModelCheckError (its lme4-style model checks).
    Imported on call, when the engine is already loaded."""
    from mixedlm.models.checks import ModelCheckError

    return ValueError, RuntimeError, ArithmeticError, ModelCheckError


def _null_intercept(frame: pd.DataFrame, spec: ModelSpec, formula, factors, where: str) -> float:
    """The intercept of ``spec``'s null model (same response and random effects, no
    covariates), which a Poisson model's ICC/R² need."""
    text = null_formula(formula)
    null = formula_mod.parse(text)
    design = model_matrix.build(null, frame, factors, where=where)
    fit = get_engine(spec.engine)(frame, replace(spec, formula=text), null, random_effects=False, design=design)
    if not fit.ok:
        raise ValueError(fit.error)
    return float(fit.fixef["estimate"].iloc[0])


def _failed(spec: ModelSpec, error: str, frame: pd.DataFrame | None = None) -> FitResult:
    return FitResult(
        spec=spec,
        engine_version=engine_version(spec.engine),
        frame=frame,
        nobs=0 if frame is None else len(frame),
        error=error,
        warnings=[f"fit failed: {error}"],
    )


def fit_file(
    data_path: str | Path, spec: ModelSpec, factors=(), drop_missing: bool = False, answers: dict | None = None
) -> FitResult:
    """The fit step: read the columns ``spec`` needs from ``data_path`` and fit it (see
    :func:`fit_model`).

    A data problem found here is recorded as a failed fit, not raised: for a data file
    the config check has refused it before any job ran, so it comes from a simulated
    replicate (e.g. a rare outcome drawn all zero), and one such replicate must not
    stop a simulation study or leave a hole in the run summary. ``answers``: the
    model's config entry (its ``predict:`` and ``emmeans:``)."""
    formula = formula_mod.parse(spec.formula)
    try:
        frame = data_mod.read_data(data_path, columns=formula.columns + model_matrix.factor_columns(factors))
        return fit_model(frame, spec, where=str(data_path), factors=factors, drop_missing=drop_missing, answers=answers)
    except DataError as e:
        return _failed(spec, f"DataError: {e}")


def save_fit(result: FitResult, path: str | Path) -> None:
    """Write a FitResult for the extract, verify and compare steps: a zip of JSON,
    Arrow and ``.npy`` members (glmm_steps.fitfile), which loads without the engine
    and whose reading cannot run code, unlike a pickle."""
    fitfile.save(result, path)


def load_fit(path: str | Path) -> FitResult:
    """Read a FitResult written by :func:`save_fit`; raises fitfile.FitFileError for a
    file that is not one."""
    return fitfile.load(FitResult, path)
