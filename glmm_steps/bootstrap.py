"""Parametric bootstrap intervals, as lme4's ``bootMer`` + ``confint(type = "perc")``.

``intervals: bootstrap`` with ``bootstrap: {n, seed, batch_size}`` in a model's
config: each replicate simulates a new response from the fitted model (new random
effects and residuals, as ``bootMer(use.u = FALSE)``), refits the model to it with
the same design (the engine reuses the model's matrices), and records every fixed
effect and, on lme4's sd/cor scale, every variance component. Replicates are seeded
as a study's are (replicate *i* gets :func:`glmm_steps.study.replicate_seed` of
``seed`` and *i*, so it keeps its seed if ``n`` grows) and cut into batches of
``batch_size``, one job each (:func:`batch_to_file`); :func:`intervals_to_file`
collects the batches into percentile limits, counting the refits that failed
(no estimates) and those that did not converge (kept, as bootMer keeps them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glmm_steps import study, tables
from glmm_steps.engines.base import INTERVAL_COLUMNS, REFIT_COLUMNS, ModelSpec
from glmm_steps.errors import ConfigError

DEFAULTS = {"n": 1000, "seed": 1, "batch_size": 250}
SUMMARY_COLUMNS = INTERVAL_COLUMNS + ["n_estimated", "n_failed", "n_not_converged", "n_replicates"]


def settings(entry: dict[str, Any]) -> dict[str, int]:
    """A model entry's ``bootstrap`` mapping with its defaults filled in."""
    return {**DEFAULTS, **(entry.get("bootstrap") or {})}


def check(name: str, entry: dict[str, Any]) -> None:
    """Refuse a bootstrap the model cannot have, naming the key: the engine must be
    mixedlm (it refits with the model's own matrices), and ``bootstrap`` is read only
    with ``intervals: bootstrap``."""
    wants = entry.get("intervals") == "bootstrap"
    if entry.get("bootstrap") is not None and not wants:
        raise ConfigError(f"models.{name}.bootstrap", "is read only with intervals: bootstrap")
    if wants and entry.get("engine", "mixedlm") != "mixedlm":
        raise ConfigError(
            f"models.{name}.intervals",
            f"bootstrap intervals are computed with engine mixedlm only, not {entry.get('engine')}",
        )


def batch_names(entry: dict[str, Any]) -> list[str]:
    """The batch names (``0-249``, ...) of a model entry's bootstrap."""
    s = settings(entry)
    return [study.batch_name(a, b) for a, b in study.batch_ranges(int(s["n"]), int(s["batch_size"]))]


def batch_replicates(entry: dict[str, Any], batch: str) -> list[tuple[int, int]]:
    """(index, seed) of each replicate of ``batch`` of a model entry's bootstrap."""
    first, last = study.parse_batch_name(batch)
    seed = int(settings(entry)["seed"])
    return [(i, study.replicate_seed(seed, i)) for i in range(first, last + 1)]


def batch_to_file(
    data_path: str | Path,
    model: str,
    entry: dict[str, Any],
    factors,
    drop_missing: bool,
    replicates: list[tuple[int, int]],
    output: str | Path,
) -> pd.DataFrame:
    """The bootstrap_batch step: fit the model to ``data_path`` (as the fit step does),
    then simulate and refit each (index, seed) of ``replicates``; write the long table
    REFIT_COLUMNS (one row per replicate and parameter; a failed refit is one row
    with status ``failed`` and its error) to ``output``. Returns it."""
    from glmm_steps import data as data_mod
    from glmm_steps import formula as formula_mod
    from glmm_steps import model_matrix
    from glmm_steps.engines.mixedlm_bootstrap import refits

    spec = ModelSpec.from_config(model, entry)
    formula = formula_mod.parse(spec.formula)
    frame = data_mod.read_data(data_path, columns=formula.columns + tuple(factors))
    frame, _ = data_mod.model_frame(
        frame, formula, str(data_path), factors, family=spec.family, drop_missing=drop_missing
    )
    design = model_matrix.build(formula, frame, factors, where=str(data_path))
    table = refits(frame, spec, formula, design, replicates)
    tables.write_result(table, output)
    return table


def percentile_intervals(refit_table: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Percentile limits per parameter from the batches' refits (SUMMARY_COLUMNS):
    the (1 - level)/2 and (1 + level)/2 quantiles of the estimates (numpy's linear
    interpolation between order statistics), with the counts of replicates that gave
    an estimate, failed, and did not converge."""
    replicates = refit_table.drop_duplicates("replicate")
    n = len(replicates)
    n_failed = int((replicates["status"] == "failed").sum())
    n_not_converged = int((replicates["status"] == "not_converged").sum())
    rows = []
    estimated = refit_table[refit_table["status"] != "failed"]
    for (effect, group, term), part in estimated.groupby(["effect", "group", "term"], sort=False):
        x = part["estimate"].to_numpy(dtype=float)
        x = x[np.isfinite(x)]
        low, high = np.quantile(x, [(1 - level) / 2, (1 + level) / 2]) if len(x) else (np.nan, np.nan)
        rows.append([effect, group, term, float(low), float(high), len(x), n_failed, n_not_converged, n])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def intervals_to_file(batch_paths: list[str | Path], output: str | Path) -> pd.DataFrame:
    """The bootstrap step: read every batch table, write the percentile limits
    (:func:`percentile_intervals`) to ``output``. Returns them."""
    parts = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in batch_paths]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=REFIT_COLUMNS)
    table["group"] = table["group"].fillna("")
    out = percentile_intervals(table)
    tables.write_result(out, output)
    return out


def read_intervals(path: str | Path) -> tuple[pd.DataFrame, str]:
    """A bootstrap.csv as a FitResult's ``intervals`` table, and a note counting the
    refits (``bootstrap: 998 of 1000 refits gave estimates, 2 failed, 0 did not converge``)."""
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    table["group"] = table["group"].fillna("")
    if not len(table):
        return pd.DataFrame(columns=INTERVAL_COLUMNS), "bootstrap: no refit gave estimates"
    first = table.iloc[0]
    n = int(first["n_replicates"])
    note = (
        f"bootstrap: {n - int(first['n_failed'])} of {n} refits gave estimates, {int(first['n_failed'])} failed, "
        f"{int(first['n_not_converged'])} did not converge"
    )
    return table[INTERVAL_COLUMNS], note
