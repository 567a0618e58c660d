"""The run summary: one row per fit with its status, so no failure goes unnoticed,
and for models with ``verify: true`` whether the two engines agree."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

COLUMNS = ["model", "dataset", "seed", "family", "method", "engine", "nobs", "logLik", "AIC",
           "converged", "singular", "hessian_ok", "status", "warnings", "notes", "error", "verification"]


def summarize(fit_stats_paths: list[str | Path], verification_paths: list[str | Path] = ()) -> pd.DataFrame:
    """Read each ``fit_stats.json`` and return one row per fit (columns COLUMNS;
    warnings and notes joined with ' | '). ``verification_paths`` are agreement tables
    (glmm_steps.verify), each beside the fit_stats.json of the fit it checks; a
    fit's ``verification`` is their verdict, ``agree`` or ``DISAGREE: ...``, and
    empty for fits not verified. A disagreement is also printed as a warning."""
    from glmm_steps.verify import read_table, verdict

    verdicts = {Path(v).parent: verdict(read_table(v)) for v in verification_paths}
    rows = []
    for p in fit_stats_paths:
        rec = json.loads(Path(p).read_text())
        row = {c: rec.get(c) for c in COLUMNS}
        row["warnings"] = " | ".join(rec.get("warnings") or [])
        row["notes"] = " | ".join(rec.get("notes") or [])
        row["verification"] = verdicts.get(Path(p).parent, "")
        if row["verification"].startswith("DISAGREE"):
            where = f"seed {rec['seed']}" if rec.get("seed") is not None else rec.get("data_path")
            print(f"warning: {rec.get('model')} ({where}): engines {row['verification']}")
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


def study_power_lines(plan) -> list[str]:
    """The answer of each study model with ``target_power`` whose power table exists
    (see :func:`glmm_steps.power.summary_lines`), for the end of a run."""
    from glmm_steps import paths
    from glmm_steps.power import summary_lines

    lines = []
    for model in plan.study_models:
        path = Path(paths.output_path("power", plan.results, model=model))
        if plan.config["models"][model].get("target_power") is not None and path.is_file():
            lines += ["power: " + line for line in summary_lines(pd.read_csv(path))]
    return lines
