"""The run summary: one row per fit with its status, so no failure goes unnoticed,
and for models with ``verify: true`` whether the two engines agree.

``summary.csv`` covers every fit on disk (:func:`summarize_results`), as the catalog
covers every version: two configs sharing a results folder each add their rows and
mark which are theirs (``current``), instead of overwriting each other's summary.
:func:`closing_summary` is what a run prints at its end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

COLUMNS = [
    "model",
    "dataset",
    "seed",
    "family",
    "method",
    "engine",
    "nobs",
    "logLik",
    "AIC",
    "converged",
    "singular",
    "hessian_ok",
    "status",
    "warnings",
    "notes",
    "error",
    "verification",
    "icc_adjusted",
    "icc_conditional",
    "r2_marginal",
    "r2_conditional",
]
VARIANCE_EXPLAINED = ("icc_adjusted", "icc_conditional", "r2_marginal", "r2_conditional")
# summary.csv: which version each row belongs to, and whether it is the running config's.
DISK_COLUMNS = ["model", "version", "current"] + COLUMNS[1:] + ["path"]


def summarize(fit_stats_paths: list[str | Path], verification_paths: list[str | Path] = ()) -> pd.DataFrame:
    """Read each ``fit_stats.json`` and return one row per fit (columns COLUMNS;
    warnings and notes joined with ' | '; ICC and Nakagawa's R² from its
    ``variance_explained``, with the reason in ``notes`` where they are empty).
    ``verification_paths`` are agreement tables
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
        explained = rec.get("variance_explained") or {}
        row |= {k: explained.get(k) for k in VARIANCE_EXPLAINED}
        if explained.get("note"):
            row["notes"] = " | ".join(filter(None, [row["notes"], f"ICC/R2 not given: {explained['note']}"]))
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


def summarize_results(models_dir: str | Path, current: dict[str, str]) -> pd.DataFrame:
    """One row per fit on disk (``<models_dir>/<model>/<version>/<replicate>/fit_stats.json``),
    columns DISK_COLUMNS: :func:`summarize`'s, plus the ``version``, whether it is the
    ``current`` config's version of its model (``current`` maps model -> key), and the
    replicate folder's ``path``. Rows by model, version and replicate; the ``latest``
    links are skipped (they repeat a version)."""
    found = sorted(p for p in Path(models_dir).glob("*/*/*/fit_stats.json") if not p.parent.parent.is_symlink())
    checks = [p.parent / "verification.csv" for p in found if (p.parent / "verification.csv").is_file()]
    table = summarize(found, checks)
    table.insert(1, "version", [p.parent.parent.name for p in found])
    table.insert(2, "current", [current.get(p.parent.parent.parent.name) == p.parent.parent.name for p in found])
    table["path"] = [str(p.parent) for p in found]
    return table[DISK_COLUMNS]


def closing_summary(
    summary_path: str | Path, results: str | Path, studies: dict[str, str | Path] = (), max_listed: int = 10
) -> str:
    """The lines a run prints at its end: what the running config fitted (counts by
    status), which fits did not come out ok or whose engines disagree (up to
    ``max_listed``, with their error, first warning or the disagreement), each simulation study's replicates and failures (``studies`` maps
    a study model to its recovery.csv), and where the results are."""
    lines = []
    if Path(summary_path).is_file():
        table = pd.read_csv(summary_path, keep_default_na=False)
        if "current" in table:
            table = table[table["current"].astype(str) == "True"]
        models = table["model"].nunique()
        lines.append(
            f"fitted {models} model{'s' if models != 1 else ''}, {len(table)} fit{'s' if len(table) != 1 else ''}: "
            + status_line_of(table)
            + f" (see {summary_path})"
        )
        bad = table[(table["status"] != "ok") | table["verification"].astype(str).str.startswith("DISAGREE")]
        for _, row in bad.head(max_listed).iterrows():
            where = f"seed {int(float(row['seed']))}" if str(row["seed"]) not in ("", "nan") else "data file"
            if row["status"] == "ok":
                why = f"engines {row['verification']}"
            else:
                why = row["error"] or row["warnings"].split(" | ")[0] or row["verification"]
            lines.append(f"  {row['model']} ({where}): {row['status']}" + (f": {why[:150]}" if why else ""))
        if len(bad) > max_listed:
            lines.append(f"  ... and {len(bad) - max_listed} more in {summary_path}")
    for model, path in dict(studies).items():
        if not Path(path).is_file():
            continue
        rec = pd.read_csv(path)
        per_design = rec.groupby("design", sort=False)[["n_replicates", "n_failed"]].max()
        lines.append(
            f"study {model}: {len(per_design)} design{'s' if len(per_design) != 1 else ''}, "
            f"{int(per_design['n_replicates'].sum())} replicates, {int(per_design['n_failed'].sum())} failed "
            f"(see {path})"
        )
    lines.append(f"results in {results}/ (models/<model>/latest/, catalog.csv); logs in {results}/logs/")
    return "\n".join(lines)


def status_line_of(table: pd.DataFrame) -> str:
    """Fits counted by status, e.g. ``8 ok, 1 failed``."""
    return ", ".join(f"{n} {s}" for s, n in table["status"].value_counts().items()) or "none"


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
