"""Figures a reader understands without the code: trajectories, caterpillar, diagnostics.

Each function takes tidy tables (as written by :mod:`glmm_steps.extract`, CSV or
Parquet) and a PNG path, so plots can be redrawn from results alone. matplotlib runs
headless (Agg) and PNGs carry no timestamps, so the same tables give the same bytes.

Large fits are drawn from a sample or a summary, never point by point (a plot of
100,000 patient lines is unreadable and slow to draw), and each panel's title says
which: ``MAX_UNITS`` sampled trajectories, ``MAX_UNITS`` levels evenly spaced in
rank in a caterpillar panel, and above ``MAX_POINTS`` points hexagonal bins for the
residuals and ``QQ_QUANTILES`` quantiles for a QQ plot.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from glmm_steps.formula import Formula  # noqa: E402
from glmm_steps.tables import read_table  # noqa: E402

MAX_UNITS = 200  # more trajectory lines or caterpillar rows than this are unreadable
MAX_LABELS = 100  # a caterpillar panel with more levels drops its (overlapping) level names
MAX_POINTS = 20_000  # more points than this are drawn as bins or quantiles
QQ_QUANTILES = 1000
_PNG_META = {"Software": None}


def save_png(fig, path: str | Path) -> None:
    """Write ``fig`` to ``path`` as a PNG without a timestamp or software tag (the same
    figure gives the same bytes), creating the folder, and close it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata=_PNG_META)
    plt.close(fig)


def message_figure(text: str, path: str | Path, title: str = "") -> None:
    """A PNG that states why there is no plot (a failed fit, no repeated covariate)."""
    fig, ax = plt.subplots(figsize=(7, 2.5))
    ax.axis("off")
    if title:
        ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=11)
    save_png(fig, path)


def choose_axes(formula: Formula, predictions: pd.DataFrame) -> tuple[str, str, str | None] | None:
    """Pick (x, unit, colour) for a trajectory plot, or None if the model has none.

    ``unit`` is the grouping factor with the most levels (one line per patient),
    ``colour`` the one with the fewest (hospital) when there are two or more, and
    ``x`` the first numeric fixed covariate that varies within a unit (the visit)."""
    groups = sorted(formula.grouping_factors, key=lambda g: predictions[g].nunique())
    if not groups:
        return None
    unit = groups[-1]
    colour = groups[0] if len(groups) > 1 else None
    for x in formula.fixed_variables:
        if x in predictions and pd.api.types.is_numeric_dtype(predictions[x]):
            if (predictions.groupby(unit, observed=True)[x].nunique() > 1).any():
                return x, unit, colour
    return None


def _colours(levels) -> dict:
    cmap = plt.get_cmap("tab10" if len(levels) <= 10 else "tab20")
    return {lv: cmap(i % cmap.N) for i, lv in enumerate(levels)}


def trajectories(predictions: pd.DataFrame, x: str, unit: str, colour: str | None,
                 response: str, family: str, path: str | Path, title: str) -> None:
    """Observed and predicted trajectories per unit (patient), coloured by the outer
    group (hospital); the population curve (fixed effects only) in black.

    Gaussian: observed values as solid lines, predictions dashed (the lme4 tutorial's
    plot). Binomial/Poisson: individual 0/1 or counts are unreadable as lines, so
    observed means per ``colour`` group and ``x`` are points, predictions dashed."""
    units = np.asarray(pd.unique(predictions[unit]))
    note = ""
    if len(units) > MAX_UNITS:
        keep = set(np.random.default_rng(0).choice(units, size=MAX_UNITS, replace=False))
        data = predictions[predictions[unit].isin(keep)]
        note = f" ({MAX_UNITS} of {len(units):,} {unit} shown, a random sample)"
    else:
        data = predictions
    ckeys = list(pd.unique(data[colour])) if colour else [None]
    palette = _colours(ckeys)
    fig, ax = plt.subplots(figsize=(9, 6))
    for (cval, _u), rows in data.sort_values(x).groupby([colour or unit, unit], observed=True, sort=False):
        col = palette[cval] if colour else "tab:blue"
        if family == "gaussian":
            ax.plot(rows[x], rows["observed"], color=col, alpha=0.45, lw=1)
        ax.plot(rows[x], rows["fitted"], color=col if family != "gaussian" else "tab:orange",
                ls="--", alpha=0.55, lw=0.9)
    if family != "gaussian" and colour:
        means = data.groupby([colour, x], observed=True)["observed"].mean().reset_index()
        for cval, rows in means.groupby(colour, observed=True):
            ax.plot(rows[x], rows["observed"], "o", color=palette[cval], ms=5, alpha=0.9)
    pop = predictions.groupby(x)["fitted_marginal"].mean()
    ax.plot(pop.index, pop.to_numpy(), color="black", lw=2.5)
    handles = [
        plt.Line2D([], [], color="black", lw=2.5, label="population mean (fixed effects only)"),
        plt.Line2D([], [], color="tab:orange" if family == "gaussian" else "grey", ls="--",
                   label=f"predicted per {unit} (with random effects)"),
    ]
    if family == "gaussian":
        handles.insert(0, plt.Line2D([], [], color="grey", label=f"observed, one line per {unit}"))
    else:
        handles.insert(0, plt.Line2D([], [], color="grey", marker="o", ls="",
                                     label=f"observed mean per {colour} and {x}" if colour else "observed mean"))
    if colour and len(ckeys) <= 20:
        handles += [plt.Line2D([], [], color=palette[c], lw=3, label=f"{colour} {c}") for c in ckeys]
    ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ylabel = {"gaussian": response, "binomial": f"P({response} = 1)"}.get(family, f"mean {response}")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(title + note)
    fig.tight_layout()
    save_png(fig, path)


def caterpillar(random_effects: pd.DataFrame, path: str | Path, title: str) -> None:
    """Each grouping factor's conditional modes, sorted, with 95% intervals
    (estimate +/- 1.96 conditional SD); one panel per group and term."""
    panels = list(random_effects.groupby(["group", "term"], sort=False))
    if not panels:
        message_figure("The fit has no random effects to show.", path, title)
        return
    height = min(14.0, 2.0 + 0.12 * max(len(rows) for _, rows in panels))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), height), squeeze=False)
    for ax, ((group, term), rows) in zip(axes[0], panels):
        _caterpillar_panel(ax, rows, group, term)
    fig.suptitle(title + "\nconditional modes with 95% intervals (+/- 1.96 conditional SD)", fontsize=11)
    fig.tight_layout()
    save_png(fig, path)


def _caterpillar_panel(ax, rows: pd.DataFrame, group: str, term: str) -> None:
    """One group's and term's conditional modes, sorted, with 95% intervals; above
    ``MAX_UNITS`` levels, ``MAX_UNITS`` of them evenly spaced in rank."""
    rows = rows.sort_values("estimate", kind="stable")
    note = ""
    if len(rows) > MAX_UNITS:
        # Levels evenly spaced in rank keep the extremes and the shape of the spread.
        note = f"\n({MAX_UNITS} of {len(rows):,} levels, evenly spaced in rank)"
        rows = rows.iloc[np.linspace(0, len(rows) - 1, MAX_UNITS).round().astype(int)]
    y = np.arange(len(rows))
    half = 1.96 * rows["cond_sd"].to_numpy()
    ax.errorbar(rows["estimate"], y, xerr=half, fmt="o", ms=3, color="tab:blue", ecolor="0.6", lw=0.8)
    ax.axvline(0, color="black", lw=0.8)
    if note or len(rows) > MAX_LABELS:
        ax.set_yticks([])
    else:
        ax.set_yticks(y)
        ax.set_yticklabels(rows["level"].astype(str), fontsize=6 if len(rows) > 30 else 8)
    ax.set_title(f"{group}: {term}{note}", fontsize=10)
    ax.set_xlabel("deviation from the population value")
    ax.set_ylabel(f"{group} (sorted)")


def _pearson(predictions: pd.DataFrame, family: str, trials: np.ndarray | None = None) -> np.ndarray:
    mu = predictions["fitted"].to_numpy(dtype=float)
    y = predictions["observed"].to_numpy(dtype=float)
    if family == "binomial":
        n = 1.0 if trials is None else trials
        var = mu * (1 - mu) / n
    elif family == "poisson":
        var = mu
    else:
        return y - mu
    with np.errstate(divide="ignore", invalid="ignore"):
        return (y - mu) / np.sqrt(var)


def diagnostics(predictions: pd.DataFrame, random_effects: pd.DataFrame, family: str,
                path: str | Path, title: str, trials: np.ndarray | None = None) -> None:
    """Residuals against fitted values, a normal QQ plot of the residuals, and a
    normal QQ plot of each grouping factor's random effects (standardised).

    Binomial and Poisson models show Pearson residuals, (observed - fitted) /
    sqrt(variance); the others raw residuals (negative binomial and Gamma ones are
    judged by the simulation-based residual plot, glmm_steps.residual_plot)."""
    resid = _pearson(predictions, family, trials)
    kind = "Pearson residual" if family in ("binomial", "poisson") else "residual"
    groups = list(random_effects.groupby(["group", "term"], sort=False))
    ncols = 2 + len(groups)
    fig, axes = plt.subplots(1, ncols, figsize=(4.0 * ncols, 4.2), squeeze=False)
    _residual_panel(axes[0][0], predictions["fitted"].to_numpy(dtype=float), resid, kind)
    _qq(axes[0][1], resid, f"normal QQ: {kind}s")
    for ax, ((group, term), rows) in zip(axes[0][2:], groups):
        _qq(ax, rows["estimate"].to_numpy(dtype=float), f"normal QQ: {group} {term}")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_png(fig, path)



def _residual_panel(ax, fitted: np.ndarray, resid: np.ndarray, kind: str) -> None:
    """Residuals against fitted values: points, or above ``MAX_POINTS`` all of them in
    hexagonal bins (a million points are one blot and slow to draw)."""
    if len(resid) > MAX_POINTS:
        ok = np.isfinite(fitted) & np.isfinite(resid)
        ax.hexbin(fitted[ok], resid[ok], gridsize=60, bins="log", cmap="Blues", mincnt=1)
        ax.set_title(f"{kind}s vs fitted\n(all {ok.sum():,} in hexagonal bins, log count)", fontsize=10)
    else:
        ax.scatter(fitted, resid, s=6, alpha=0.5)
        ax.set_title(f"{kind}s vs fitted")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("fitted value")
    ax.set_ylabel(kind)

def _qq(ax, values: np.ndarray, title: str) -> None:
    values = np.sort(values[np.isfinite(values)])
    if len(values) < 2:
        ax.set_title(title + " (too few values)")
        return
    sd = values.std(ddof=1) or 1.0
    mean = values.mean()
    probs = (np.arange(1, len(values) + 1) - 0.5) / len(values)
    if len(values) > MAX_POINTS:
        title += f"\n({QQ_QUANTILES} quantiles of {len(values):,} values)"
        probs = (np.arange(1, QQ_QUANTILES + 1) - 0.5) / QQ_QUANTILES
        values = np.quantile(values, probs)
    theo = stats.norm.ppf(probs)
    ax.scatter(theo, (values - mean) / sd, s=8, alpha=0.6)
    lim = [theo.min(), theo.max()]
    ax.plot(lim, lim, color="black", lw=0.8)
    ax.set_xlabel("theoretical normal quantile")
    ax.set_ylabel("standardised sample quantile")
    ax.set_title(title, fontsize=10)


def plot_fit(predictions_path: str | Path, random_effects_path: str | Path,
             fit_stats: dict, outputs: dict[str, str | Path]) -> None:
    """The plot step: draw the trajectory, caterpillar and diagnostics PNGs
    (``outputs`` keys) of one fit from its tidy tables and ``fit_stats`` record.
    A failed fit, or one without a repeated covariate, gets a PNG that says so."""
    from glmm_steps.formula import parse

    title = f"{fit_stats['model']}: {fit_stats['formula']}\n{fit_stats['family']} ({fit_stats['method']}, " \
            f"{fit_stats.get('engine', 'mixedlm')}), " \
            f"{fit_stats['dataset']}" + (f", seed {fit_stats['seed']}" if fit_stats.get("seed") is not None else "")
    if fit_stats.get("error"):
        for key in ("trajectories", "caterpillar", "diagnostics"):
            message_figure(f"No plot: the fit failed.\n{fit_stats['error']}", outputs[key], title)
        return
    formula = parse(fit_stats["formula"])
    predictions = read_table(predictions_path)
    ranef = read_table(random_effects_path, csv_dtype={"level": str})
    axes = choose_axes(formula, predictions)
    if axes is None:
        message_figure("No trajectory plot: the model has no covariate that varies within a group.",
                       outputs["trajectories"], title)
    else:
        x, unit, colour = axes
        trajectories(predictions, x, unit, colour, formula.response, fit_stats["family"],
                     outputs["trajectories"], title)
    caterpillar(ranef, outputs["caterpillar"], title)
    trials = None
    if formula.trials:
        trials = formula.n_trials(predictions)
    diagnostics(predictions, ranef, fit_stats["family"], outputs["diagnostics"], title, trials)
