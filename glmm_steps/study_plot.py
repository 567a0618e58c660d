"""Figures of a simulation study: estimates around the truth, coverage, power by design.

Each takes the tables of :mod:`glmm_steps.recovery` (per-replicate estimates and the
recovery table), so the figures can be redrawn from results alone. Design points sit
on the x axis in sweep order.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from glmm_steps.figures import message_figure, plt, save_png, wrapped_axes_title, wrapped_title

NOMINAL = 0.95


def _panels(n: int, width: float = 4.0, height: float = 3.4):
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _design_axis(ax, designs: list[str]) -> None:
    ax.set_xticks(range(len(designs)))
    long = max(map(len, designs)) > 12 or len(designs) > 4
    ax.set_xticklabels(designs, rotation=30 if long else 0, ha="right" if long else "center", fontsize=8)
    ax.set_xlim(-0.6, len(designs) - 0.4)


def _label(effect: str, group: str, term: str) -> str:
    return term if effect == "fixed" else f"{group}: {term}"


def estimates_plot(
    estimates: pd.DataFrame, table: pd.DataFrame, designs: list[str], path: str | Path, title: str
) -> None:
    """One panel per parameter: the distribution of its estimates over replicates per
    design point (box and points), the true value (red bar) and the mean (black dot)."""
    params = list(dict.fromkeys(map(tuple, table[["effect", "group", "term"]].to_numpy().tolist())))
    params = [p for p in params if p[2]]
    if estimates.empty or not params:
        message_figure("No estimates: every replicate's fit failed.", path, title)
        return
    fig, axes = _panels(len(params))
    rng = np.random.default_rng(0)  # jitter only; fixed so the same tables give the same PNG
    for ax, (effect, group, term) in zip(axes, params):
        rows = estimates[(estimates["effect"] == effect) & (estimates["group"] == group) & (estimates["term"] == term)]
        for x, design in enumerate(designs):
            values = rows.loc[rows["design"] == design, "estimate"].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            if len(values):
                ax.boxplot(values, positions=[x], widths=0.5, showfliers=False, medianprops={"color": "tab:blue"})
                ax.scatter(x + rng.uniform(-0.18, 0.18, len(values)), values, s=4, alpha=0.25, color="tab:blue")
                ax.plot(x, values.mean(), "o", color="black", ms=4)
            else:
                ax.text(
                    x,
                    0.5,
                    "no estimates",
                    transform=ax.get_xaxis_transform(),
                    rotation=90,
                    ha="center",
                    va="center",
                    color="0.5",
                    fontsize=8,
                )
            summary = table[
                (table["design"] == design)
                & (table["effect"] == effect)
                & (table["group"] == group)
                & (table["term"] == term)
            ]
            truth = summary["true_value"].iloc[0] if len(summary) else np.nan
            if np.isfinite(truth):
                ax.hlines(truth, x - 0.35, x + 0.35, color="tab:red", lw=2.2)
        _design_axis(ax, designs)
        ax.set_title(_label(effect, group, term), fontsize=10)
        ax.set_ylabel("estimate")
    handles = [
        plt.Line2D([], [], color="tab:red", lw=2.2, label="true value"),
        plt.Line2D([], [], color="black", marker="o", ls="", label="mean estimate"),
    ]
    fig.legend(handles=handles, loc="upper right", fontsize=8, frameon=False)
    wrapped_title(fig, title + "\nestimates over replicates around the true value", fontsize=11)
    fig.tight_layout()
    save_png(fig, path)


def coverage_plot(table: pd.DataFrame, designs: list[str], path: str | Path, title: str) -> None:
    """One panel per fixed effect: the coverage of the 95% Wald interval per design point
    with its Monte-Carlo error (+/- 1.96 MCSE) against the nominal 95%."""
    rows = table[table["coverage"].notna()]
    terms = list(dict.fromkeys(rows["term"]))
    if not terms:
        message_figure("No coverage: no replicate gave a confidence interval.", path, title)
        return
    fig, axes = _panels(len(terms))
    for ax, term in zip(axes, terms):
        r = rows[rows["term"] == term].set_index("design").reindex(designs)
        x = np.arange(len(designs))
        ax.errorbar(x, r["coverage"], yerr=1.96 * r["coverage_mcse"], fmt="o", color="tab:blue", capsize=4)
        ax.axhline(NOMINAL, color="tab:red", lw=1, ls="--")
        low = np.nanmin((r["coverage"] - 1.96 * r["coverage_mcse"]).to_numpy(dtype=float))
        ax.set_ylim(min(0.8, low - 0.02), 1.005)
        _design_axis(ax, designs)
        ax.set_title(term, fontsize=10)
        ax.set_ylabel("coverage of the 95% interval")
    wrapped_title(fig, title + "\ncoverage with Monte-Carlo error (+/- 1.96 MCSE); dashed: nominal 95%", fontsize=11)
    fig.tight_layout()
    save_png(fig, path)


def power_plot(table: pd.DataFrame, designs: list[str], path: str | Path, title: str) -> None:
    """Power (share of replicates with p < alpha) of each named fixed effect by design
    point, with +/- 1.96 Monte-Carlo SE; one line per effect."""
    rows = table[table["power"].notna()]
    if rows.empty:
        message_figure("No power: the study names no fixed effect to test.", path, title)
        return
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(designs) + 3), 4.4))
    x = np.arange(len(designs))
    for term, r in rows.groupby("term", sort=False):
        r = r.set_index("design").reindex(designs)
        ax.errorbar(x, r["power"], yerr=1.96 * r["power_mcse"], fmt="o-", capsize=4, label=term)
    alpha = float(rows["alpha"].iloc[0])
    ax.axhline(0.8, color="0.6", lw=0.8, ls=":")
    ax.set_ylim(-0.02, 1.02)
    _design_axis(ax, designs)
    ax.set_ylabel(f"power (share with p < {alpha:g})")
    ax.legend(fontsize=8, frameon=False)
    wrapped_axes_title(ax, title + "\npower by design, +/- 1.96 Monte-Carlo SE (dotted: 0.8)", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)


def _title(table: pd.DataFrame) -> str:
    model = table["model"].iloc[0] if len(table) else ""
    n = int(table["n_replicates"].max()) if len(table) else 0
    return f"{model}: {n} replicates per design"


def draw_all(estimates: pd.DataFrame, table: pd.DataFrame, designs: list[str], outputs: dict[str, str]) -> None:
    """Draw the estimates, coverage and power PNGs of one study model (``outputs`` keys)."""
    title = _title(table)
    estimates_plot(estimates, table, designs, outputs["estimates"], title)
    coverage_plot(table, designs, outputs["coverage"], title)
    power_plot(table, designs, outputs["power"], title)


def study_plots_to_files(
    estimate_paths: list[str],
    fit_paths: list[str],
    outputs: dict[str, str],
    alpha: float,
    power_terms: list[str] | None,
    designs: dict[str, dict[str, float]],
    target_power: float | None = None,
) -> None:
    """The study plots step: from a study model's batch tables (the tables of
    :func:`glmm_steps.recovery.study_tables`, same arguments), draw the estimates,
    coverage and power PNGs (:func:`draw_all`) and the power curve
    (:func:`glmm_steps.power.power_curve_plot`), at the ``outputs`` keys."""
    from glmm_steps import power
    from glmm_steps.recovery import study_tables

    estimates, table, powers = study_tables(estimate_paths, fit_paths, alpha, power_terms, designs, target_power)
    draw_all(estimates, table, list(designs), outputs)
    power.power_curve_plot(powers, outputs["power_curve"], _title(table))
