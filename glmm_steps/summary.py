"""The run summary: one row per fit with its status, so no failure goes unnoticed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

COLUMNS = ["model", "dataset", "seed", "family", "method", "engine", "nobs", "logLik", "AIC",
           "converged", "singular", "status", "warnings", "error"]


def summarize(fit_stats_paths: list[str | Path]) -> pd.DataFrame:
    """Read each ``fit_stats.json`` and return one row per fit (columns COLUMNS;
    warnings joined with ' | ')."""
    rows = []
    for p in fit_stats_paths:
        rec = json.loads(Path(p).read_text())
        row = {c: rec.get(c) for c in COLUMNS}
        row["warnings"] = " | ".join(rec.get("warnings") or [])
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)
