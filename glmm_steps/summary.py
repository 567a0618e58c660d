"""The run summary: one row per fit with its status, so no failure goes unnoticed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

COLUMNS = ["model", "dataset", "seed", "family", "method", "engine", "nobs", "logLik", "AIC",
           "converged", "singular", "hessian_ok", "status", "warnings", "notes", "error"]


def summarize(fit_stats_paths: list[str | Path]) -> pd.DataFrame:
    """Read each ``fit_stats.json`` and return one row per fit (columns COLUMNS;
    warnings and notes joined with ' | ')."""
    rows = []
    for p in fit_stats_paths:
        rec = json.loads(Path(p).read_text())
        row = {c: rec.get(c) for c in COLUMNS}
        row["warnings"] = " | ".join(rec.get("warnings") or [])
        row["notes"] = " | ".join(rec.get("notes") or [])
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def status_line(summary_path: str | Path) -> str:
    """One line counting the fits of a run by status, e.g. ``fits: 8 ok, 1 failed
    (see results/summary.csv)``: printed at the end of a run so a failed fit, which
    never stops the run, is not missed."""
    table = pd.read_csv(summary_path)
    counts = table["status"].value_counts()
    parts = ", ".join(f"{n} {s}" for s, n in counts.items())
    return f"fits: {parts} (see {summary_path})"
