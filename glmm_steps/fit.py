"""The fit step: read a data file, fit one model with its engine, record failures.

A fit that raises or does not converge never stops the workflow: the returned
FitResult carries ``error``/``converged=False`` and the warning text, and the
extract step writes them into ``fit_stats.json`` and the run summary.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd

from glmm_steps import data as data_mod
from glmm_steps import formula as formula_mod
from glmm_steps import residuals as residuals_mod
from glmm_steps.engines import engine_version, get_engine
from glmm_steps.engines.base import FitResult, ModelSpec
from glmm_steps.errors import DataError, GlmmError


def fit_model(frame: pd.DataFrame, spec: ModelSpec, where: str = "data", factors=(),
              drop_missing: bool = False, *, random_effects: bool = True) -> FitResult:
    """Fit ``spec`` to the data frame ``frame`` (all columns; only the formula's are used).
    ``factors`` names numeric columns to treat as categorical; ``drop_missing`` allows
    dropping rows with a missing value (else they are an error). ``random_effects=False``
    skips the conditional modes and their variances (most of a small fit's time, and
    unused by a study); every other number is the same either way.

    Returns a FitResult whose ``notes`` say what was done to the data. Data problems
    (missing column, text response, a response the family cannot model, ...) raise
    DataError; anything the engine raises is caught and recorded in the result."""
    formula = formula_mod.parse(spec.formula)
    model_frame, notes = data_mod.model_frame(frame, formula, where, factors, family=spec.family,
                                              drop_missing=drop_missing)
    start = time.perf_counter()
    try:
        result = get_engine(spec.engine)(model_frame, spec, formula, random_effects=random_effects)
    except GlmmError:
        raise
    except Exception as e:  # an engine failure is a result to record, not a crash
        result = _failed(spec, f"{type(e).__name__}: {e}", model_frame)
    result.notes = notes + result.notes
    result.wall_time_s = time.perf_counter() - start
    if result.ok and spec.residual_nsim > 0:
        _add_residuals(result)
    return result


def _add_residuals(result: FitResult) -> None:
    """Simulation-based residuals and their tests, here where the fitted model is: a
    failure to simulate is a note, never a failed fit."""
    spec = result.spec
    if result.nobs > residuals_mod.MAX_NOBS:
        result.notes.append(f"simulation residuals skipped: more than {residuals_mod.MAX_NOBS:,} rows")
        return
    try:
        result.scaled_residuals, result.diagnostics = residuals_mod.diagnose(
            result, spec.residual_nsim, spec.residual_seed, spec.residual_simulate)
    except (GlmmError, ValueError, FloatingPointError, np.linalg.LinAlgError) as e:
        # e.g. a mean numpy cannot draw from (NaN fitted values of a fit gone wrong)
        result.notes.append(f"simulation residuals not computed: {e}")
        return
    result.notes += result.diagnostics["notes"]


def _failed(spec: ModelSpec, error: str, frame: pd.DataFrame | None = None) -> FitResult:
    return FitResult(
        spec=spec,
        engine_version=engine_version(spec.engine),
        frame=frame,
        nobs=0 if frame is None else len(frame),
        error=error,
        warnings=[f"fit failed: {error}"],
    )


def fit_file(data_path: str | Path, spec: ModelSpec, factors=(), drop_missing: bool = False) -> FitResult:
    """The fit step: read the columns ``spec`` needs from ``data_path`` and fit it (see
    :func:`fit_model`).

    A data problem found here is recorded as a failed fit, not raised: for a data file
    the config check has refused it before any job ran, so it comes from a simulated
    replicate (e.g. a rare outcome drawn all zero), and one such replicate must not
    stop a simulation study or leave a hole in the run summary."""
    formula = formula_mod.parse(spec.formula)
    try:
        frame = data_mod.read_data(data_path, columns=formula.columns + tuple(factors))
        return fit_model(frame, spec, where=str(data_path), factors=factors, drop_missing=drop_missing)
    except DataError as e:
        return _failed(spec, f"DataError: {e}")


def save_fit(result: FitResult, path: str | Path) -> None:
    """Write a FitResult for the extract step (a pickle of plain pandas/numpy values,
    no engine objects, so it loads without the engine)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(result, fh, protocol=5)


def load_fit(path: str | Path) -> FitResult:
    """Read a FitResult written by :func:`save_fit`."""
    with open(path, "rb") as fh:
        return pickle.load(fh)
