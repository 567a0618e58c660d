"""Sample size from a study: power by design point with Monte-Carlo intervals, and the
smallest swept size whose power reaches a target.

From a study model's recovery table (:mod:`glmm_steps.recovery`, with a column per
swept key), one row per design point and tested fixed effect: the power (share of all
replicates with p < alpha), its Monte-Carlo SE and 95% Wilson interval (it stays inside
0..1 when power is near 0 or 1, where the normal interval does not). With
``target_power`` and one swept key (the size), ``smallest_size`` is, per effect, the
smallest swept value whose power reaches the target, and ``reaches_target`` marks the
rows that do; the interval of that row is the answer's Monte-Carlo uncertainty (with
``smallest_size_sure`` the smallest value whose interval lies wholly above the target).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

Z_95 = 1.959963984540054
NAN = float("nan")


def wilson(hits: float, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion ``hits / n`` (NaN for n = 0)."""
    if n == 0:
        return NAN, NAN
    p = hits / n
    centre = (p + Z_95**2 / (2 * n)) / (1 + Z_95**2 / n)
    half = Z_95 * math.sqrt(p * (1 - p) / n + Z_95**2 / (4 * n * n)) / (1 + Z_95**2 / n)
    # Clipped to 0..1 and to contain p (rounding can leave 1 - 1e-16 above p = 1).
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def power_table(recovery: pd.DataFrame, swept: list[str], target_power: float | None = None) -> pd.DataFrame:
    """The power table of one study model: model, design, the ``swept`` key columns,
    term, n_replicates, power, power_mcse, power_low, power_high (95% Wilson), and with
    ``target_power`` (which needs exactly one swept key) target_power, reaches_target,
    smallest_size and smallest_size_sure per term (NaN when no swept size reaches it)."""
    rows = recovery[recovery["power"].notna()].copy()
    columns = ["model", "design", *swept, "term", "n_replicates", "power", "power_mcse"]
    out = rows[columns].reset_index(drop=True)
    bounds = [wilson(p * n, int(n)) for p, n in zip(out["power"], out["n_replicates"])]
    out["power_low"] = [b[0] for b in bounds]
    out["power_high"] = [b[1] for b in bounds]
    if target_power is None:
        return out
    size = swept[0]
    out["target_power"] = target_power
    out["reaches_target"] = out["power"] >= target_power
    smallest, sure = {}, {}
    for term, r in out.groupby("term", sort=False):
        hit = r.loc[r["reaches_target"], size]
        smallest[term] = float(hit.min()) if len(hit) else NAN
        hit = r.loc[r["power_low"] >= target_power, size]
        sure[term] = float(hit.min()) if len(hit) else NAN
    out["smallest_size"] = out["term"].map(smallest)
    out["smallest_size_sure"] = out["term"].map(sure)
    return out


def summary_lines(table: pd.DataFrame) -> list[str]:
    """One line per tested effect of a power table with a target: the smallest swept
    size that reaches it, the power there with its interval, e.g. ``bp_power time:
    hospital_id.n = 20 reaches power 0.8 (power 0.83, 95% MC interval 0.79-0.86)``."""
    if "target_power" not in table.columns or table.empty:
        return []
    size = table.columns[table.columns.get_loc("term") - 1]
    lines = []
    for term, r in table.groupby("term", sort=False):
        target = float(r["target_power"].iloc[0])
        model = r["model"].iloc[0]
        smallest = r["smallest_size"].iloc[0]
        if not np.isfinite(smallest):
            best = r.loc[r["power"].idxmax()]
            lines.append(
                f"{model} {term}: no swept {size} reaches power {target:g} (largest power "
                f"{best['power']:.3f} at {size} = {best[size]:g})"
            )
            continue
        row = r[r[size] == smallest].iloc[0]
        lines.append(
            f"{model} {term}: {size} = {smallest:g} reaches power {target:g} (power {row['power']:.3f}, "
            f"95% MC interval {row['power_low']:.3f}-{row['power_high']:.3f})"
        )
    return lines


def power_curve_plot(table: pd.DataFrame, path: str | Path, title: str) -> None:
    """Power against the swept size (or design point, without one numeric size key),
    with 95% Monte-Carlo intervals, one line per tested effect; with a target, a dashed
    line at it and the smallest size reaching it marked."""
    from glmm_steps.figures import message_figure, plt, save_png, wrapped_axes_title

    if table.empty:
        message_figure("No power: the study names no fixed effect to test.", path, title)
        return
    term_at = table.columns.get_loc("term")
    swept = list(table.columns[2:term_at])
    numeric = len(swept) == 1 and pd.api.types.is_numeric_dtype(table[swept[0]])
    designs = list(dict.fromkeys(table["design"]))
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    starred = False
    for term, r in table.groupby("term", sort=False):
        x = r[swept[0]].to_numpy(dtype=float) if numeric else np.array([designs.index(d) for d in r["design"]])
        err = np.vstack([r["power"] - r["power_low"], r["power_high"] - r["power"]])
        line = ax.errorbar(x, r["power"], yerr=err, fmt="o-", capsize=4, label=term)
        if "smallest_size" in r.columns and np.isfinite(r["smallest_size"].iloc[0]) and numeric:
            at = r[r[swept[0]] == r["smallest_size"].iloc[0]].iloc[0]
            ax.plot([at[swept[0]]], [at["power"]], marker="*", ms=14, color=line[0].get_color(), ls="none")
            starred = True
    if "target_power" in table.columns:
        ax.axhline(float(table["target_power"].iloc[0]), color="0.5", lw=0.9, ls="--")
    if numeric:
        ax.set_xlabel(swept[0])
    else:
        ax.set_xticks(range(len(designs)))
        ax.set_xticklabels(designs, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("power")
    ax.legend(fontsize=8, frameon=False)
    # The legend of the target's marks only where they are drawn.
    target = ""
    if "target_power" in table.columns:
        target = " (dashed: the target; " + (
            "star: the smallest size reaching it)" if starred else "no swept size reaches it)"
        )
    wrapped_axes_title(ax, title + "\npower with 95% Monte-Carlo intervals" + target, fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
