"""Tables for people: a CSV result as a small self-contained HTML page, so the
Snakemake report shows it as a table (it offers a CSV only as a download).

Numbers are shown to 6 significant digits (the CSV keeps 10); an empty cell stays
empty. Only the first ``MAX_ROWS`` rows are shown, and the page says so.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

MAX_ROWS = 1000
_STYLE = (
    "body{font-family:sans-serif;font-size:13px;margin:1em}"
    "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:2px 8px}"
    "th{background:#f0f0f0;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}"
)


def _cell(value) -> tuple[str, bool]:
    """A cell's text and whether it is a number (right-aligned)."""
    if isinstance(value, bool) or value is None:
        return ("" if value is None else str(value)), False
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return "", True
        return (f"{value:.6g}" if isinstance(value, float) else str(value)), True
    return str(value), False


def table_html(table: pd.DataFrame, title: str, note: str = "") -> str:
    """``table`` as an HTML page titled ``title`` (``note`` below the title)."""
    shown = table.head(MAX_ROWS)
    if len(table) > MAX_ROWS:
        note = (note + " " if note else "") + f"First {MAX_ROWS:,} of {len(table):,} rows; all are in the CSV."
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    rows = []
    for record in shown.itertuples(index=False):
        cells = []
        for value in record:
            text, numeric = _cell(value.item() if hasattr(value, "item") else value)
            cells.append(f'<td class="n">{html.escape(text)}</td>' if numeric else f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h3>{html.escape(title)}</h3>"
        + (f"<p>{html.escape(note)}</p>" if note else "")
        + f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>\n"
    )


def tables_to_html(tables: dict[str, tuple[str | Path, str]]) -> None:
    """Write each CSV as an HTML table: ``tables`` maps an output path to (CSV path,
    title). Empty cells in the CSV stay empty (not "nan")."""
    for out, (csv_path, title) in tables.items():
        frame = pd.read_csv(csv_path, keep_default_na=False, na_values=[""])
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(table_html(frame, title, note=f"From {csv_path}."))
