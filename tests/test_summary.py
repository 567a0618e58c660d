"""summary.csv over everything on disk, the closing lines of a run, and the report's
HTML tables (fast: built from small files written here)."""

import json

import numpy as np
import pandas as pd

from glmm_steps.html_tables import MAX_ROWS, table_html, tables_to_html
from glmm_steps.summary import DISK_COLUMNS, closing_summary, summarize_results


def _fit(models, model, version, replicate, status="ok", error=None, warnings=()):
    folder = models / model / version / replicate
    folder.mkdir(parents=True)
    seed = int(replicate.removeprefix("seed-")) if replicate.startswith("seed-") else None
    (folder / "fit_stats.json").write_text(
        json.dumps(
            {
                "model": model,
                "dataset": "d",
                "seed": seed,
                "family": "gaussian",
                "status": status,
                "error": error,
                "warnings": list(warnings),
                "notes": [],
            }
        )
    )
    return folder


def test_summary_lists_every_fit_on_disk_and_marks_the_current(tmp_path):
    models = tmp_path / "models"
    _fit(models, "m", "aaaaaaaaaa", "seed-1")
    _fit(models, "m", "bbbbbbbbbb", "seed-1", status="failed", error="boom")
    _fit(models, "other", "cccccccccc", "file")
    (models / "m" / "latest").symlink_to("bbbbbbbbbb")  # repeats a version: not a row
    table = summarize_results(models, {"m": "bbbbbbbbbb", "other": "cccccccccc"})
    assert list(table.columns) == DISK_COLUMNS
    assert list(zip(table["model"], table["version"], table["current"])) == [
        ("m", "aaaaaaaaaa", False),
        ("m", "bbbbbbbbbb", True),
        ("other", "cccccccccc", True),
    ]
    path = tmp_path / "summary.csv"
    table.to_csv(path, index=False)
    study = tmp_path / "recovery.csv"
    pd.DataFrame(
        {"model": "s", "design": ["n=5", "n=5", "n=10"], "n_replicates": [20, 20, 20], "n_failed": [2, 2, 0]}
    ).to_csv(study, index=False)
    lines = closing_summary(path, "results", {"s": study}).splitlines()
    # the old version's fit is on disk but not this run's
    assert lines[0] == f"fitted 2 models, 2 fits: 1 failed, 1 ok (see {path})"
    assert lines[1] == "  m (seed 1): failed: boom"
    assert lines[2] == f"study s: 2 designs, 40 replicates, 2 failed (see {study})"
    assert lines[3] == "results in results/ (models/<model>/latest/, catalog.csv); logs in results/logs/"


def test_closing_summary_lists_at_most_ten_faults(tmp_path):
    models = tmp_path / "models"
    for seed in range(12):
        _fit(
            models,
            "m",
            "aaaaaaaaaa",
            f"seed-{seed}",
            status="singular",
            warnings=["boundary (singular) fit: the variance of (Intercept) for g is estimated as zero"],
        )
    path = tmp_path / "summary.csv"
    summarize_results(models, {"m": "aaaaaaaaaa"}).to_csv(path, index=False)
    lines = closing_summary(path, "r").splitlines()
    assert lines[0].startswith("fitted 1 model, 12 fits: 12 singular")
    assert (
        lines[1]
        == "  m (seed 0): singular: boundary (singular) fit: the variance of (Intercept) for g is estimated as zero"
    )
    assert len(lines) == 1 + 10 + 1 + 1 and lines[11] == f"  ... and 2 more in {path}"


def test_tables_are_html_tables(tmp_path):
    table = pd.DataFrame({"term": ["(Intercept)", "x<1"], "estimate": [1.234567891, np.nan], "n": [3, 4]})
    page = table_html(table, "fixed effects")
    assert page.count("<tr>") == 3 and page.count("<th>") == 3
    assert '<td class="n">1.23457</td>' in page and "<td>x&lt;1</td>" in page  # 6 digits, escaped
    assert '<td class="n"></td>' in page  # a missing value is an empty cell, not "nan"
    big = pd.DataFrame({"a": range(MAX_ROWS + 5)})
    page = table_html(big, "big")
    assert page.count("<tr>") == 1 + MAX_ROWS and f"First {MAX_ROWS:,} of {MAX_ROWS + 5:,} rows" in page
    csv = tmp_path / "t.csv"
    table.to_csv(csv, index=False)
    tables_to_html({tmp_path / "out" / "t.html": (csv, "T")})
    assert (tmp_path / "out" / "t.html").read_text().count("<tr>") == 3
