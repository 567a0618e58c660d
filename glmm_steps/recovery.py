"""Parameter recovery: how well a study's fits recover the true values.

From a study model's batch tables (:mod:`glmm_steps.batch`), one row per design point
and parameter. With estimates x_1..x_n of a parameter whose true value is theta (the
replicates whose fit returned estimates; failed ones are counted in ``n_failed``):

- ``mean_estimate`` = mean(x); ``bias`` = mean(x) - theta; ``relative_bias`` = bias / theta
  (NaN when theta = 0); ``bias_mcse`` = empirical_sd / sqrt(n)
- ``empirical_sd`` = SD(x) (n - 1 denominator); ``mean_se`` = mean of the model's standard errors
- ``rmse`` = sqrt(mean((x - theta)^2))
- ``coverage`` = share of the model's 95% intervals that contain theta (Wald z, t with the
  ``inference`` df, or profile), ``coverage_mcse`` = sqrt(c (1 - c) / n)
- ``power`` (named fixed effects) = share of *all* replicates with p < alpha: a failed fit
  detects nothing, so failures lower power instead of vanishing; ``power_mcse`` likewise
- ``share_converged``, ``share_singular`` over all replicates of the design

These are the performance measures and Monte-Carlo standard errors of Morris, White and
Crowther (2019), "Using simulation studies to evaluate statistical methods", Stat Med 38.
Variance components (SD scale) have no standard error, so no power, and a coverage only
when the model asks for ``intervals: profile``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glmm_steps.columns import ESTIMATE_COLUMNS, FIT_COLUMNS

PARAMETER = ["effect", "group", "term"]
COLUMNS = [
    "model",
    "design",
    *PARAMETER,
    "true_value",
    "n_replicates",
    "n_failed",
    "n_estimated",
    "mean_estimate",
    "bias",
    "bias_mcse",
    "relative_bias",
    "empirical_sd",
    "mean_se",
    "rmse",
    "coverage",
    "coverage_mcse",
    "power",
    "power_mcse",
    "alpha",
    "share_converged",
    "share_singular",
]
NAN = float("nan")


def _share(hits: np.ndarray, n: int) -> tuple[float, float]:
    """A proportion out of ``n`` and its Monte-Carlo standard error."""
    if n == 0:
        return NAN, NAN
    p = float(np.sum(hits)) / n
    return p, math.sqrt(p * (1 - p) / n)


def _measures(rows: pd.DataFrame, n_replicates: int, alpha: float, with_power: bool) -> dict[str, float]:
    """The performance measures of one parameter in one design (module docstring)."""
    x = rows["estimate"].to_numpy(dtype=float)
    x = x[np.isfinite(x)]
    truth = rows["true_value"].dropna()
    theta = float(truth.iloc[0]) if len(truth) else NAN
    n = len(x)
    out: dict[str, float] = {"true_value": theta, "n_estimated": n}
    mean = float(x.mean()) if n else NAN
    sd = float(x.std(ddof=1)) if n > 1 else NAN
    se = rows["std_error"].to_numpy(dtype=float)
    se = se[np.isfinite(se)]
    out |= {
        "mean_estimate": mean,
        "bias": mean - theta,
        "bias_mcse": sd / math.sqrt(n) if n > 1 else NAN,
        "relative_bias": (mean - theta) / theta if theta else NAN,
        "empirical_sd": sd,
        "mean_se": float(se.mean()) if len(se) else NAN,
        "rmse": math.sqrt(float(np.mean((x - theta) ** 2))) if n else NAN,
    }
    low, high = rows["conf_low"].to_numpy(dtype=float), rows["conf_high"].to_numpy(dtype=float)
    has_ci = np.isfinite(low) & np.isfinite(high)
    if has_ci.any() and math.isfinite(theta):
        out["coverage"], out["coverage_mcse"] = _share((low <= theta) & (theta <= high), int(has_ci.sum()))
    else:
        out["coverage"] = out["coverage_mcse"] = NAN
    if with_power:
        out["power"], out["power_mcse"] = _share(rows["p_value"].to_numpy(dtype=float) < alpha, n_replicates)
    else:
        out["power"] = out["power_mcse"] = NAN
    return out


def summarise(
    estimates: pd.DataFrame,
    fits: pd.DataFrame,
    alpha: float = 0.05,
    power_terms: list[str] | None = None,
    designs: list[str] | None = None,
) -> pd.DataFrame:
    """The recovery table (COLUMNS) of one study model from its batch tables.

    ``estimates`` and ``fits`` have batch.ESTIMATE_COLUMNS and batch.FIT_COLUMNS;
    ``power_terms`` are the fixed effects with a power column (None: all but the
    intercept); ``designs`` orders the design points (default: as they appear in
    ``fits``). Every design point of ``fits`` gets rows even when all its replicates
    failed: the parameters seen in any design, with ``n_estimated`` 0."""
    designs = designs or list(dict.fromkeys(fits["design"]))
    params = list(dict.fromkeys(map(tuple, estimates[PARAMETER].to_numpy().tolist())))
    if power_terms is None:
        power_terms = [t for e, _, t in params if e == "fixed" and t != "(Intercept)"]
    model = fits["model"].iloc[0] if len(fits) else ""
    rows = []
    for design in designs:
        f = fits[fits["design"] == design]
        common = {
            "model": model,
            "design": design,
            "n_replicates": len(f),
            "n_failed": int((f["status"] == "failed").sum()),
            "alpha": alpha,
            "share_converged": float(f["converged"].astype(bool).mean()) if len(f) else NAN,
            "share_singular": float(f["singular"].astype(bool).mean()) if len(f) else NAN,
        }
        e = estimates[estimates["design"] == design]
        groups = {key: g for key, g in e.groupby(PARAMETER, sort=False)}
        for key in params or [("", "", "")]:
            found = groups.get(key, e.iloc[0:0])
            # A likelihood-ratio row (test: lrt) is a power row by construction.
            with_power = (key[0] == "fixed" and key[2] in power_terms) or key[0] == "lrt"
            rows.append({**common, **dict(zip(PARAMETER, key)), **_measures(found, len(f), alpha, with_power)})
    return pd.DataFrame(rows, columns=COLUMNS)


TEXT = ["model", "design", "effect", "group", "term", "status", "error", "warnings"]


def read_tables(paths: list[str | Path], columns: list[str]) -> pd.DataFrame:
    """Concatenate batch tables (CSV) with the given columns. Text columns stay text
    exactly as written (a fixed effect's empty group, a level named ``NA``); only an
    empty numeric cell is missing."""
    text = [c for c in columns if c in TEXT]
    frames = [
        pd.read_csv(
            p,
            dtype=dict.fromkeys(text, str),
            keep_default_na=False,
            na_values={c: [""] for c in columns if c not in text},
        )
        for p in paths
    ]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return table.reindex(columns=columns)


def study_tables(
    estimate_paths: list[str],
    fit_paths: list[str],
    alpha: float,
    power_terms: list[str] | None,
    designs: dict[str, dict[str, float]],
    target_power: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A study model's tables from its batch files: ``(estimates, recovery, power)``.
    ``estimates`` is the batches' rows (batch.ESTIMATE_COLUMNS); ``recovery`` is
    :func:`summarise` with a column per swept key after ``design`` (``designs`` maps
    each design point, in order, to its swept values); ``power`` is
    :func:`glmm_steps.power.power_table` of it (``target_power`` as there). The
    recovery step writes the tables and the study plots step draws them, each from
    the batch files, so the two jobs run side by side."""
    from glmm_steps import power

    estimates = read_tables(estimate_paths, ESTIMATE_COLUMNS)
    fits = read_tables(fit_paths, FIT_COLUMNS)
    table = summarise(estimates, fits, alpha, power_terms, list(designs))
    swept = list(dict.fromkeys(k for values in designs.values() for k in values))
    for i, key in enumerate(swept):
        table.insert(2 + i, key, table["design"].map(lambda d, k=key: designs[d].get(k, NAN)))
    return estimates, table, power.power_table(table, swept, target_power)


def recovery_to_files(
    estimate_paths: list[str],
    fit_paths: list[str],
    outputs: dict[str, str],
    alpha: float,
    power_terms: list[str] | None,
    designs: dict[str, dict[str, float]],
    target_power: float | None = None,
    provenance: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """The recovery step: read a study model's batch tables and write its recovery
    table (``outputs["table"]``) and power table (``outputs["power_table"]``), as
    :func:`study_tables` makes them from the same arguments; prints the target-power
    answer (:func:`glmm_steps.power.summary_lines`). With ``provenance`` (``model``,
    ``config_excerpt``, ``seeds``, ``inputs`` beyond the batch tables (a pilot's
    design file), ``results``, ``repo``), also writes the study's manifest
    (``outputs["manifest"]``, :func:`glmm_steps.provenance.build_manifest`): what made
    both tables, with the SHA-256 of the batch tables and of the tables themselves.
    Returns the recovery table."""
    from glmm_steps import power, tables
    from glmm_steps import provenance as provenance_mod

    _, table, powers = study_tables(estimate_paths, fit_paths, alpha, power_terms, designs, target_power)
    tables.write_result(table, outputs["table"])
    tables.write_result(powers, outputs["power_table"])
    if provenance is not None:
        manifest = provenance_mod.build_manifest(
            model=provenance["model"],
            version_key=None,
            config_excerpt=provenance["config_excerpt"],
            seeds=provenance["seeds"],
            inputs=[*provenance["inputs"], *estimate_paths, *fit_paths],
            outputs=[outputs["table"], outputs["power_table"]],
            repo=provenance["repo"],
            results=provenance["results"],
        )
        provenance_mod.write_manifest(manifest, outputs["manifest"])
    for line in power.summary_lines(powers):
        print(line)
    return table
