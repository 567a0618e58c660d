"""Plots of a fit's answers, drawn from the written tables (never from the model):
the effect plot (marginal means over the first covariate, one curve per level of the
first factor, with their confidence band) and the plot of a ``predict:`` entry's
predictions with their intervals. Axes carry the data's own column names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from glmm_steps.figures import message_figure, plt, save_png
from glmm_steps.tables import read_table

# Columns predict_new adds to the given rows: never an axis of the predictions plot.
_OUTPUT_COLUMNS = {
    "predicted",
    "std_error",
    "df",
    "conf_low",
    "conf_high",
    "new_levels",
    "predicted_link",
    "std_error_link",
    "conf_low_link",
    "conf_high_link",
}
MAX_CURVES = 12  # more factor levels than this are drawn without a legend


def plot_effects(table: pd.DataFrame, path: str | Path, response: str = "", title: str = "") -> None:
    """The effect plot of an effects table (glmm_steps.answers.EFFECTS_COLUMNS) to ``path``;
    ``response`` labels the y axis. An empty table gives a PNG saying why."""
    if table.empty:
        message_figure("no fixed-effect covariate or factor to plot", path, title)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    levels = list(dict.fromkeys(table["level"].fillna("").astype(str)))
    colours = plt.cm.tab10(np.linspace(0, 1, 10))
    has_x = table["x"].notna().any()
    for i, lv in enumerate(levels):
        part = table[table["level"].fillna("").astype(str) == lv]
        label = f"{part['factor'].iloc[0]} = {lv}" if lv else None
        c = colours[i % 10]
        if has_x:
            ax.plot(part["x"], part["estimate"], color=c, label=label)
            ax.fill_between(part["x"], part["conf_low"], part["conf_high"], color=c, alpha=0.18, linewidth=0)
        else:
            y = part["estimate"].to_numpy(dtype=float)
            ax.errorbar([i], y, yerr=[y - part["conf_low"], part["conf_high"] - y], fmt="o", color=c, capsize=4)
    if has_x:
        ax.set_xlabel(str(table["covariate"].iloc[0]))
    else:
        ax.set_xticks(range(len(levels)), levels)
        ax.set_xlabel(str(table["factor"].iloc[0]))
    scale = str(table["scale"].iloc[0])
    ax.set_ylabel(f"{response} ({'mean, response scale' if scale == 'response' else 'marginal mean'})")
    if has_x and len(levels) > 1 and len(levels) <= MAX_CURVES:
        ax.legend(frameon=False, fontsize=9)
    ax.set_title(f"{title}: marginal means with 95% intervals" if title else "marginal means with 95% intervals")
    fig.tight_layout()
    save_png(fig, path)


def plot_predictions(table: pd.DataFrame, path: str | Path, response: str = "", title: str = "") -> None:
    """The predictions of a ``predict:`` entry with their intervals, against the first
    numeric column of the given rows (else the row number), coloured by the first
    text column (at most MAX_CURVES colours)."""
    if table.empty or "predicted" not in table:
        message_figure("no predictions (see the fit's warnings)", path, title)
        return
    given = [c for c in table.columns if c not in _OUTPUT_COLUMNS]
    numeric = [c for c in given if pd.api.types.is_numeric_dtype(table[c])]
    text = [c for c in given if c not in numeric]
    x = table[numeric[0]].to_numpy(dtype=float) if numeric else np.arange(len(table), dtype=float)
    y = table["predicted"].to_numpy(dtype=float)
    groups = table[text[0]].astype(str) if text else pd.Series([""] * len(table))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.cm.tab10(np.linspace(0, 1, 10))
    keys = list(dict.fromkeys(groups))
    # groups predicted at the same x are nudged apart so their intervals stay readable
    span = float(np.ptp(x)) if len(x) > 1 and np.ptp(x) > 0 else 1.0
    step = 0.02 * span if len(keys) <= MAX_CURVES else 0.0
    for i, key in enumerate(keys):
        m = (groups == key).to_numpy()
        c = colours[i % 10]
        xs = x[m] + (i - (len(keys) - 1) / 2) * step
        label = f"{text[0]} = {key}" if text and len(keys) <= MAX_CURVES else None
        if "conf_low" in table:
            lo, hi = table["conf_low"].to_numpy(dtype=float)[m], table["conf_high"].to_numpy(dtype=float)[m]
            ax.errorbar(xs, y[m], yerr=[y[m] - lo, hi - y[m]], fmt="o", color=c, capsize=3, label=label)
        else:
            ax.plot(xs, y[m], "o", color=c, label=label)
    ax.set_xlabel(numeric[0] if numeric else "row")
    ax.set_ylabel(f"{response} (predicted)")
    if any(ax.get_legend_handles_labels()[1]):
        ax.legend(frameon=False, fontsize=9)
    ax.set_title(f"{title}: predictions" if title else "predictions")
    fig.tight_layout()
    save_png(fig, path)


def plot_table(kind: str, table_path: str | Path, path: str | Path, response: str = "", title: str = "") -> None:
    """Read ``table_path`` and draw ``kind`` (``effects`` or ``predictions_new``) to ``path``."""
    table = read_table(table_path)
    if kind == "effects":
        plot_effects(table, path, response, title)
    else:
        plot_predictions(table, path, response, title)
