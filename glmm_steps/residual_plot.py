"""The simulation-based residual plot (``plots/residuals.png``), after DHARMa's
``plot.DHARMa``: a QQ plot of the scaled residuals against the uniform distribution
with the tests' results written on it, and the scaled residuals against the
rank-transformed predictions with their 0.25, 0.5 and 0.75 quantiles.

Drawn from ``residuals.csv`` and the ``diagnostics`` of ``fit_stats.json`` alone, so it
can be redrawn from results. DHARMa draws the quantiles by quantile regression
(qgam); here they are the quantiles of the residuals in bins of the ranked
predictions, which shows the same departures without a smoother's assumptions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from glmm_steps.figures import message, plt, save_png
from glmm_steps.plot import MAX_POINTS
from glmm_steps.tables import read_table

QUANTILES = (0.25, 0.5, 0.75)
BINS = 10  # bins of the ranked predictions for the quantile curves


def _rank(x: np.ndarray) -> np.ndarray:
    """DHARMa's rankTransform: average ranks scaled to (0, 1]."""
    ranks = pd.Series(x).rank(method="average").to_numpy()
    return ranks / ranks.max()


def _test_lines(diagnostics: dict) -> list[tuple[str, bool]]:
    """(text, significant) per test, for the QQ panel."""
    alpha, nsim = 0.05, diagnostics["nsim"]
    u, d, z, o = (diagnostics.get(k) for k in ("uniformity", "dispersion", "zero_inflation", "outliers"))

    def p(value: float) -> str:  # a simulation p value of 0 means below 1/nsim
        return f"p < {1 / nsim:.2g}" if value == 0 else f"p = {value:.3g}"

    lines = [
        (f"KS uniformity: D = {u['statistic']:.3f}, p = {u['p_value']:.3g}", u["p_value"] < alpha),
        (f"dispersion: ratio {d['ratio']:.3f}, {p(d['p_value'])}", d["p_value"] < alpha),
    ]
    if z:
        lines.append((f"zeros: observed/simulated {z['ratio']:.3f}, {p(z['p_value'])}", z["p_value"] < alpha))
    lines.append((f"outliers: {o['outliers']} ({o['type']} test), {p(o['p_value'])}", o["p_value"] < alpha))
    return lines


def residual_plot(residuals_path: str | Path, fit_stats: dict, path: str | Path) -> None:
    """Write :func:`residual_figure` to ``path`` (PNG)."""
    save_png(residual_figure(residuals_path, fit_stats), path)


def residual_figure(residuals_path: str | Path, fit_stats: dict):
    """The figure drawn from the scaled residuals table and the fit_stats record; a
    fit without simulation residuals (failed, or ``residuals: {nsim: 0}``) gets a
    figure that says why. Returns the figure."""
    title = (
        f"{fit_stats['model']}: {fit_stats['formula']}\n{fit_stats['family']} ({fit_stats.get('link')}), "
        f"{fit_stats['dataset']}" + (f", seed {fit_stats['seed']}" if fit_stats.get("seed") is not None else "")
    )
    diagnostics = fit_stats.get("diagnostics") or {}
    if fit_stats.get("error") or not diagnostics:
        why = (
            f"the fit failed: {fit_stats['error']}"
            if fit_stats.get("error")
            else "no simulation residuals for this fit (residuals.nsim is 0, or see the notes in fit_stats.json)"
        )
        return message(f"No residual plot: {why}", title)
    table = read_table(residuals_path)
    res = table["scaled_residual"].to_numpy(dtype=float)
    pred = _rank(table["fitted"].to_numpy(dtype=float))
    fig, (qq, vs) = plt.subplots(1, 2, figsize=(10, 4.6))

    expected = (np.arange(1, len(res) + 1) - 0.5) / len(res)
    observed = np.sort(res)
    if len(res) > MAX_POINTS:
        expected, observed = np.linspace(0, 1, 1001)[1:-1], np.quantile(res, np.linspace(0, 1, 1001)[1:-1])
    qq.scatter(expected, observed, s=6, alpha=0.6)
    qq.plot([0, 1], [0, 1], color="black", lw=0.8)
    for i, (text, bad) in enumerate(_test_lines(diagnostics)):
        qq.text(
            0.03,
            0.97 - 0.065 * i,
            text,
            transform=qq.transAxes,
            va="top",
            fontsize=8,
            color="tab:red" if bad else "black",
        )
    qq.set_xlabel("expected (uniform)")
    qq.set_ylabel("observed scaled residual")
    qq.set_title(
        f"QQ plot of scaled residuals ({diagnostics['simulate']}, {diagnostics['nsim']} simulations)", fontsize=10
    )

    if len(res) > MAX_POINTS:
        vs.hexbin(pred, res, gridsize=50, bins="log", cmap="Blues", mincnt=1)
    else:
        vs.scatter(pred, res, s=6, alpha=0.5)
    edges = np.linspace(0, 1, BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    which = np.clip(np.digitize(pred, edges[1:-1]), 0, BINS - 1)
    for q in QUANTILES:
        vs.axhline(q, color="grey", lw=0.8, ls="--")
        curve = [np.quantile(res[which == b], q) if np.any(which == b) else np.nan for b in range(BINS)]
        vs.plot(centres, curve, color="tab:red", lw=1.4)
    vs.set_xlim(0, 1)
    vs.set_ylim(0, 1)
    vs.set_xlabel("prediction (rank transformed)")
    vs.set_ylabel("scaled residual")
    vs.set_title("residuals vs predicted: quantiles 0.25 / 0.5 / 0.75 (red) per bin", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
