"""The answers a fit gives beyond its estimates, computed where the fit lives (the fit
step): ICC and Nakagawa's R² (:mod:`glmm_steps.variance_explained`), the effect-plot
table (marginal means over the first covariate, by the first factor's levels),
predictions for new rows (:mod:`glmm_steps.predict`) and marginal means with their
contrasts (:mod:`glmm_steps.emmeans`). Each is stored on the FitResult as plain
values; the answers step writes them out and plots them, never touching the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from glmm_steps import emmeans as emmeans_mod
from glmm_steps import predict as predict_mod
from glmm_steps.errors import ConfigError, GlmmError
from glmm_steps.formula import Formula
from glmm_steps.model_matrix import ModelMatrix
from glmm_steps.variance_explained import problem, variance_explained

EFFECTS_COLUMNS = ["covariate", "x", "factor", "level", "estimate", "std_error", "df", "conf_low", "conf_high", "scale"]
# Points along the covariate's observed range in the effect plot.
EFFECT_POINTS = 25


def effects(result, formula: Formula, factors=()) -> pd.DataFrame:
    """Marginal means over the model's first fixed-effect covariate (EFFECT_POINTS values
    from its smallest to its largest fitted value), one curve per level of the first
    fixed-effect factor (other factors averaged over, other covariates at their means),
    with their confidence intervals: EFFECTS_COLUMNS. Without a covariate, one point per
    factor level (``x`` empty); with neither, an empty table."""
    state = result.transform_state
    fixed_cols = [c for v in formula.fixed_variables for c in _columns(formula, v)]
    covs = [c for c in emmeans_mod.covariates(formula, state) if c in fixed_cols]
    facs = [c for c in dict.fromkeys(s["column"] for s in state.get("factors", {}).values()) if c in fixed_cols]
    if not covs and not facs:
        return pd.DataFrame(columns=EFFECTS_COLUMNS)
    spec: dict[str, Any] = {"specs": [], "by": [], "pairs": False}
    if covs:
        x = result.frame[covs[0]].astype(float)
        spec["specs"] = [covs[0]]
        spec["at"] = {covs[0]: list(np.linspace(x.min(), x.max(), EFFECT_POINTS))}
        if facs:
            spec["by"] = [facs[0]]
    else:
        spec["specs"] = [facs[0]]
    emm, _ = emmeans_mod.marginal_means(result, formula, spec, factors)
    return pd.DataFrame(
        {
            "covariate": covs[0] if covs else "",
            "x": emm[covs[0]].astype(float) if covs else np.nan,
            "factor": facs[0] if facs else "",
            "level": emm[facs[0]].astype(str) if facs else "",
            **{c: emm[c] for c in ("estimate", "std_error", "df", "conf_low", "conf_high", "scale")},
        },
        columns=EFFECTS_COLUMNS,
    )


def _columns(formula: Formula, label: str) -> list[str]:
    from glmm_steps.formula import columns_of

    node = formula.variables.get(label)
    return columns_of(node) if node is not None else [label]


def add_answers(
    result,
    formula: Formula,
    design: ModelMatrix,
    entry: dict[str, Any],
    factors=(),
    null_intercept: Callable[[], float] | None = None,
) -> None:
    """Fill ``result``'s answer fields (see FitResult) for the model's config ``entry``
    (its ``predict`` and ``emmeans`` keys; absent: those tables stay None).
    ``null_intercept`` refits the null model for a Poisson model's ICC/R². A question
    the fit cannot answer (new rows its transforms cannot code) becomes a warning and
    an empty table, never a failed fit."""
    if not result.ok:
        result.variance_explained = variance_explained(result, formula, design)
        return
    intercept = None
    if result.spec.family == "poisson" and null_intercept is not None and problem(result, formula) is None:
        try:
            intercept = null_intercept()
        except Exception as e:  # a failed null fit leaves ICC/R² empty, with its reason
            result.warnings.append(f"ICC/R2: null model failed ({type(e).__name__}: {e})")
    result.variance_explained = variance_explained(result, formula, design, intercept)
    if result.vcov is None:
        return
    try:
        result.effects = effects(result, formula, factors)
    except (GlmmError, ValueError, np.linalg.LinAlgError) as e:
        result.warnings.append(f"effect plot table not computed: {e}")
        result.effects = pd.DataFrame(columns=EFFECTS_COLUMNS)
    if entry.get("predict"):
        try:
            rows = predict_mod.new_rows(entry["predict"])
            result.predictions_new = predict_mod.predict_new(result, formula, rows, entry["predict"], factors)
        except GlmmError as e:
            result.warnings.append(f"predict: {e}")
            result.predictions_new = pd.DataFrame()
    if entry.get("emmeans"):
        try:
            result.emmeans, result.contrasts = emmeans_mod.marginal_means(result, formula, entry["emmeans"], factors)
        except GlmmError as e:
            result.warnings.append(f"emmeans: {e}")
            result.emmeans = pd.DataFrame(columns=emmeans_mod.EMMEANS_COLUMNS)
            result.contrasts = pd.DataFrame(columns=emmeans_mod.CONTRAST_COLUMNS)


def write_answers(result, outputs: dict[str, str]) -> None:
    """Write the answer tables ``outputs`` names (keys: effects, predictions_new,
    emmeans, contrasts) from ``result``'s fields, CSV or Parquet by extension, numbers
    to 10 significant digits; a fit without the table (failed) writes it empty."""
    from glmm_steps import tables

    columns = {
        "effects": EFFECTS_COLUMNS,
        "emmeans": emmeans_mod.EMMEANS_COLUMNS,
        "contrasts": emmeans_mod.CONTRAST_COLUMNS,
        "predictions_new": ["predicted"],
    }
    for key, path in outputs.items():
        table = getattr(result, key)
        if table is None:
            table = pd.DataFrame(columns=columns[key])
        tables.write_table(table, path, digits=10)


def check(name: str, model: dict[str, Any], parsed: Formula, dataset: dict[str, Any], study: bool = False) -> None:
    """The config check of a model's ``predict:`` and ``emmeans:`` entries, before any
    job (ConfigError naming the key). For a data file the rows are coded with the
    transform state the fit will have (read from the file now), so an unknown level
    or a text value where the formula needs a number stops the run here; for a
    simulated dataset the columns are checked (its factors are numeric ids)."""
    if not (model.get("predict") or model.get("emmeans")):
        return
    key = f"models.{name}"
    if study:
        raise ConfigError(
            f"{key}.{'predict' if model.get('predict') else 'emmeans'}",
            "applies to per-seed fits, not to a simulation study",
        )
    if model.get("approximation"):
        raise ConfigError(
            f"{key}.{'predict' if model.get('predict') else 'emmeans'}",
            f"not available for a Bayesian approximation ({model['approximation']}): "
            "it has no covariance of the fixed effects to build intervals from",
        )
    if model.get("emmeans"):
        emmeans_mod.check(name, model["emmeans"], parsed, [])
    if not model.get("predict"):
        return
    state = None
    if "path" in dataset:
        from glmm_steps.data import model_frame, read_data
        from glmm_steps.model_matrix import build, factor_columns

        frame = read_data(dataset["path"], columns=list(parsed.columns) + list(factor_columns(dataset["factors"])))
        fitted, _ = model_frame(
            frame,
            parsed,
            dataset["path"],
            dataset["factors"],
            family=model["family"],
            drop_missing=dataset["drop_missing"],
        )
        state = build(parsed, fitted, dataset["factors"], where=dataset["path"]).state
    predict_mod.check(name, model["predict"], parsed, state, dataset.get("factors", ()))
