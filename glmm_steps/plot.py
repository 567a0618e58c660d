"""Figures a reader understands without the code: data and fit ("trajectories"),
caterpillar, diagnostics.

Each figure function takes tidy tables (as written by :mod:`glmm_steps.extract`, CSV
or Parquet) and returns the matplotlib figure, unsaved, so a test can read what is
drawn; :func:`plot_fit` writes them with :func:`save_png`. matplotlib runs headless
(Agg) and PNGs carry no timestamps, so the same tables give the same bytes. Layouts are
"constrained", so titles (wrapped to the figure's width), tick labels and legends stay
inside the canvas.

Large fits are drawn from a sample or a summary, never point by point, and the title
says which: ``MAX_PANELS`` panels and ``MAX_UNITS_PER_PANEL`` units per panel of
repeated measures, ``MAX_GROUP_LINES`` group lines over at most ``MAX_POINTS``
observations of cross-sectional data, ``MAX_UNITS`` levels evenly spaced in rank in a
caterpillar panel, and above ``MAX_POINTS`` points hexagonal bins for the residuals
and ``QQ_QUANTILES`` quantiles for a QQ plot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special  # not scipy.stats: 0.4 s to import, in every plot job

from glmm_steps.data import as_factor
from glmm_steps.figures import figure, message, plt, save_png, wrapped_title
from glmm_steps.formula import Formula
from glmm_steps.tables import read_table

PLOTS = ("trajectories", "caterpillar", "diagnostics")
MAX_UNITS = 200  # more caterpillar rows than this are unreadable
MAX_PANELS = 20  # outer groups (or units) drawn as panels of the data-and-fit plot
MAX_UNITS_PER_PANEL = 10  # one colour each (tab10)
MAX_GROUP_LINES = 20  # predicted lines of cross-sectional data
MAX_LABELS = 100  # a caterpillar panel with more levels drops its (overlapping) level names
MAX_POINTS = 20_000  # more points than this are drawn as bins or quantiles
QQ_QUANTILES = 1000


def choose_axes(formula: Formula, predictions: pd.DataFrame) -> tuple[str, str, str | None] | None:
    """Pick (x, unit, colour) for the data-and-fit plot, or None if the model has none.

    ``unit`` is the grouping factor with the most levels (a patient, a school),
    ``colour`` the one with the fewest (hospital) when there are two or more, and
    ``x`` the first fixed covariate, numeric or categorical, that varies within a unit."""
    groups = sorted(formula.grouping_factors, key=lambda g: predictions[g].nunique())
    if not groups:
        return None
    unit = groups[-1]
    colour = groups[0] if len(groups) > 1 else None
    for x in formula.fixed_variables:
        if x in predictions and x not in formula.grouping_factors:
            if (predictions.groupby(unit, observed=True)[x].nunique() > 1).any():
                return x, unit, colour
    return None


def is_repeated(predictions: pd.DataFrame, x: str, unit: str) -> bool:
    """True when ``x`` is a repeated measure within ``unit`` (visits of a patient, days
    of a subject): a unit is seen at most once at each value of ``x``, and the values
    recur across units. Pupils in schools scored on a test are not: many pupils of a
    school share a score, and joining them into a line would draw a meaningless zig-zag."""
    counts = predictions.groupby([unit, x], observed=True).size()
    duplicated = float((counts - 1).sum()) / max(len(predictions), 1)
    return duplicated <= 0.1 and predictions[x].nunique() <= len(predictions) / 2


def _positions(values: pd.Series, categorical: bool) -> tuple[np.ndarray, list[str] | None]:
    """Where each value sits on the x axis, and the tick labels of a categorical axis
    (its levels in natural order, one tick each; None for a numeric axis)."""
    if not categorical:
        return values.to_numpy(dtype=float), None
    factor = as_factor(values)
    return factor.codes.astype(float), [str(level) for level in factor.categories]


def _ylabel(formula: Formula, family: str) -> str:
    """The response as the plot shows it: a cbind response as its proportion of trials."""
    if formula.trials:
        s, other = formula.trials
        return f"{s} / {other}" if formula.trials_total else f"{s} / ({s} + {other})"
    return {
        "gaussian": formula.response,
        "binomial": f"P({formula.response} = 1)",
        "poisson": f"{formula.response} (count)",
        "negative_binomial": f"{formula.response} (count)",
    }.get(family, formula.response)


def _sample(levels, limit: int) -> tuple[list, str]:
    """``levels`` (in order), or a random sample of ``limit`` of them in the same order,
    and the note that says so."""
    levels = list(levels)
    if len(levels) <= limit:
        return levels, ""
    keep = set(np.random.default_rng(0).choice(len(levels), size=limit, replace=False).tolist())
    return [lv for i, lv in enumerate(levels) if i in keep], f"{limit} of {len(levels):,} shown, a random sample"


def trajectories(predictions: pd.DataFrame, formula: Formula, family: str, title: str, factors=()):
    """The data with the model's fit, or a message figure when the model has no
    covariate that varies within a group. Returns the figure (unsaved).

    When ``x`` is a repeated measure of the innermost unit (:func:`is_repeated`), one
    panel per outer group (hospital), or per unit when there is one grouping factor
    (a subject, a herd), shows each unit's observed values and its predicted curve
    (random effects included) in the unit's colour, and the population curve (fixed
    effects only) in black. Otherwise (pupils in schools) the observations are grey
    points and each school's predicted line is drawn for a sample of schools.
    A factor covariate (in ``factors``, or text) gets a categorical axis."""
    axes = choose_axes(formula, predictions)
    if axes is None:
        return message("No data-and-fit plot: the model has no covariate that varies within a group.", title)
    x, unit, colour = axes
    categorical = x in factors or not pd.api.types.is_numeric_dtype(predictions[x])
    pos, ticks = _positions(predictions[x], categorical)
    data = predictions.assign(_x=pos)
    if is_repeated(predictions, x, unit):
        return _panels(data, x, unit, colour, ticks, formula, family, title)
    return _scatter(data, x, unit, ticks, formula, family, title)


def _panels(
    data: pd.DataFrame, x: str, unit: str, colour: str | None, ticks, formula: Formula, family: str, title: str
):
    """Repeated measures: one panel per outer group (or per unit), see :func:`trajectories`."""
    panel_by = colour or unit
    panels, note = _sample(as_factor(data[panel_by]).categories, MAX_PANELS)
    ncols = min(len(panels), 5)
    nrows = -(-len(panels) // ncols)
    fig = figure(2.6 * ncols + 0.6, 2.3 * nrows + 1.6)
    axs = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    one_unit = panel_by == unit
    observed_as_lines = family == "gaussian" and not one_unit
    pop = data.groupby("_x")["fitted_marginal"].mean()
    unit_note = ""
    for ax, level in zip(axs.flat, panels):
        rows = data[data[panel_by] == level]
        units, unit_note = _sample(pd.unique(rows[unit]), MAX_UNITS_PER_PANEL)
        palette = _colours(units)
        for u in units:
            r = rows[rows[unit] == u].sort_values("_x")
            if observed_as_lines:
                ax.plot(r["_x"], r["observed"], color=palette[u], lw=1, alpha=0.6, marker="o", ms=2.5)
            elif one_unit:
                ax.plot(r["_x"], r["observed"], "o", color=palette[u], ms=4)
            ax.plot(r["_x"], r["fitted"], color=palette[u], ls="--", lw=1.1)
        if not observed_as_lines and not one_unit:
            means = rows.groupby("_x")["observed"].mean()
            ax.plot(means.index, means.to_numpy(), "o", color="black", mfc="white", ms=5, zorder=3)
        ax.plot(pop.index, pop.to_numpy(), color="black", lw=2, zorder=4)
        ax.set_title(f"{panel_by} {level}", fontsize=9)
        ax.tick_params(labelsize=8)
    for i, ax in enumerate(axs.flat):
        if i >= len(panels):
            ax.axis("off")
        elif i + ncols >= len(panels):  # the lowest panel of its column carries the x axis
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel(x, fontsize=9)
    _x_ticks(axs, ticks)
    fig.supylabel(_ylabel(formula, family), fontsize=10)
    if one_unit:
        observed = plt.Line2D([], [], color="grey", marker="o", ls="", label=f"observed ({unit})")
    elif observed_as_lines:
        observed = plt.Line2D([], [], color="grey", marker="o", ms=2.5, lw=1, label=f"observed, one line per {unit}")
    else:
        observed = plt.Line2D(
            [], [], color="black", mfc="white", marker="o", ls="", label=f"observed mean per {panel_by} and {x}"
        )
    handles = [
        observed,
        plt.Line2D([], [], color="grey", ls="--", label=f"predicted per {unit} (fixed + random effects)"),
        plt.Line2D([], [], color="black", lw=2, label="population (fixed effects only)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    notes = ([f"{panel_by}: {note}"] if note else []) + ([f"{unit} per panel: {unit_note}"] if unit_note else [])
    wrapped_title(fig, title + ("\n" + "; ".join(notes) if notes else ""))
    return fig


def _scatter(data: pd.DataFrame, x: str, unit: str, ticks, formula: Formula, family: str, title: str):
    """Cross-sectional data: every observation a grey point, each unit's predicted line
    (for a sample of units), the population line in black; see :func:`trajectories`."""
    fig = figure(9, 6.2)
    ax = fig.add_subplot()
    points = data
    notes = []
    if len(points) > MAX_POINTS:
        points = points.sample(MAX_POINTS, random_state=0)
        notes.append(f"{MAX_POINTS:,} of {len(data):,} observations drawn, a random sample")
    jitter = 0.0
    if ticks is not None:
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(points))
    ax.scatter(points["_x"] + jitter, points["observed"], s=6, color="0.55", alpha=0.35, lw=0)
    units, note = _sample(as_factor(data[unit]).categories, MAX_GROUP_LINES)
    if note:
        notes.append(f"{unit} lines: {note}")
    palette = _colours(units)
    for u in units:
        line = data[data[unit] == u].groupby("_x")["fitted"].mean()
        ax.plot(line.index, line.to_numpy(), color=palette[u], lw=1.1, alpha=0.9)
    pop = data.groupby("_x")["fitted_marginal"].mean()
    ax.plot(pop.index, pop.to_numpy(), color="black", lw=2.5)
    _x_ticks(np.array([[ax]]), ticks)
    ax.set_xlabel(x)
    ax.set_ylabel(_ylabel(formula, family))
    handles = [
        plt.Line2D([], [], color="0.55", marker="o", ls="", ms=4, label="observed"),
        plt.Line2D([], [], color="tab:blue", lw=1.1, label=f"predicted per {unit} (fixed + random effects)"),
        plt.Line2D([], [], color="black", lw=2.5, label="population (fixed effects only)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    wrapped_title(fig, title + ("\n" + "; ".join(notes) if notes else ""))
    return fig


def _x_ticks(axs: np.ndarray, ticks: list[str] | None) -> None:
    """A categorical axis gets one tick per level, labelled with the level."""
    if ticks is not None:
        for ax in axs.flat:
            ax.set_xticks(range(len(ticks)))
            ax.set_xticklabels(ticks, rotation=0 if len(ticks) <= 6 else 90)
            ax.set_xlim(-0.5, len(ticks) - 0.5)


def _colours(levels) -> dict:
    cmap = plt.get_cmap("tab10" if len(levels) <= 10 else "tab20")
    return {lv: cmap(i % cmap.N) for i, lv in enumerate(levels)}


# The scale of a GLMM's random effects (its link), for the caterpillar's axis.
_LINK_SCALE = {"binomial": " (log-odds scale)", "poisson": " (log scale)", "negative_binomial": " (log scale)"}


def caterpillar(random_effects: pd.DataFrame, title: str, family: str = "gaussian"):
    """Each grouping factor's conditional modes, sorted, with 95% intervals
    (estimate +/- 1.96 conditional SD); one panel per group and term, on the scale of
    ``family``'s link. Returns the figure."""
    panels = list(random_effects.groupby(["group", "term"], sort=False))
    if not panels:
        return message("The fit has no random effects to show.", title)
    height = min(14.0, 2.6 + 0.12 * max(len(rows) for _, rows in panels))
    fig = figure(max(4.4 * len(panels), 7.0), height)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, ((group, term), rows) in zip(axes[0], panels):
        _caterpillar_panel(ax, rows, group, term)
        ax.set_xlabel("deviation from the population value" + _LINK_SCALE.get(family, ""))
    wrapped_title(fig, title + "\nconditional modes with 95% intervals (+/- 1.96 conditional SD)")
    return fig


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


def diagnostics(
    predictions: pd.DataFrame, random_effects: pd.DataFrame, family: str, title: str, trials: np.ndarray | None = None
):
    """Residuals against fitted values, a normal QQ plot of the residuals, and a
    normal QQ plot of each grouping factor's random effects (standardised).
    Returns the figure.

    Binomial and Poisson models show Pearson residuals, (observed - fitted) /
    sqrt(variance); the others raw residuals (negative binomial and Gamma ones are
    judged by the simulation-based residual plot, glmm_steps.residual_plot)."""
    resid = _pearson(predictions, family, trials)
    kind = "Pearson residual" if family in ("binomial", "poisson") else "residual"
    groups = list(random_effects.groupby(["group", "term"], sort=False))
    ncols = 2 + len(groups)
    fig = figure(max(4.0 * ncols, 8.0), 4.6)
    axes = fig.subplots(1, ncols, squeeze=False)
    _residual_panel(axes[0][0], predictions["fitted"].to_numpy(dtype=float), resid, kind)
    _qq(axes[0][1], resid, f"normal QQ: {kind}s")
    for ax, ((group, term), rows) in zip(axes[0][2:], groups):
        _qq(ax, rows["estimate"].to_numpy(dtype=float), f"normal QQ: {group} {term}")
    wrapped_title(fig, title)
    return fig


def _residual_panel(ax, fitted: np.ndarray, resid: np.ndarray, kind: str) -> None:
    """Residuals against fitted values: points, or above ``MAX_POINTS`` all of them in
    hexagonal bins (a million points are one blot and slow to draw)."""
    if len(resid) > MAX_POINTS:
        ok = np.isfinite(fitted) & np.isfinite(resid)
        ax.hexbin(fitted[ok], resid[ok], gridsize=60, bins="log", cmap="Blues", mincnt=1)
        ax.set_title(f"{kind}s vs fitted\n(all {ok.sum():,} in hexagonal bins, log count)", fontsize=10)
    else:
        ax.scatter(fitted, resid, s=6, alpha=0.5)
        ax.set_title(f"{kind}s vs fitted", fontsize=10)
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
    theo = special.ndtri(probs)
    ax.scatter(theo, (values - mean) / sd, s=8, alpha=0.6)
    lim = [theo.min(), theo.max()]
    ax.plot(lim, lim, color="black", lw=0.8)
    ax.set_xlabel("theoretical normal quantile")
    ax.set_ylabel("standardised sample quantile")
    ax.set_title(title, fontsize=10)


def figures(
    predictions_path: str | Path,
    random_effects_path: str | Path,
    fit_stats: dict,
    factors=(),
    residuals_path: str | Path | None = None,
) -> dict:
    """The figures of one fit (unsaved), keyed ``trajectories``, ``caterpillar`` and
    ``diagnostics``, drawn from its tidy tables and ``fit_stats`` record; ``factors``
    are the dataset's factor columns (drawn on categorical axes). With
    ``residuals_path`` (its ``residuals.csv``) also ``residuals``, the simulation-based
    residual plot of :mod:`glmm_steps.residual_plot`. A failed fit gets figures that
    say why."""
    from glmm_steps.formula import parse

    out = {}
    if residuals_path is not None:
        from glmm_steps.residual_plot import residual_figure  # it draws with this module's helpers

        out["residuals"] = residual_figure(residuals_path, fit_stats)

    title = (
        f"{fit_stats['model']}: {fit_stats['formula']}\n{fit_stats['family']} ({fit_stats['method']}, "
        f"{fit_stats.get('engine', 'mixedlm')}), "
        f"{fit_stats['dataset']}" + (f", seed {fit_stats['seed']}" if fit_stats.get("seed") is not None else "")
    )
    if fit_stats.get("error"):
        return {key: message(f"No plot: the fit failed.\n{fit_stats['error']}", title) for key in PLOTS} | out
    formula = parse(fit_stats["formula"])
    predictions = read_table(predictions_path)
    ranef = read_table(random_effects_path, csv_dtype={"level": str})
    trials = formula.n_trials(predictions) if formula.trials else None
    return {
        "trajectories": trajectories(predictions, formula, fit_stats["family"], title, factors),
        "caterpillar": caterpillar(ranef, title, fit_stats["family"]),
        "diagnostics": diagnostics(predictions, ranef, fit_stats["family"], title, trials),
    } | out


def plot_fit(
    predictions_path: str | Path,
    random_effects_path: str | Path,
    fit_stats: dict,
    outputs: dict[str, str | Path],
    factors=(),
    residuals_path: str | Path | None = None,
) -> None:
    """The plot step: write the PNGs of :func:`figures` to ``outputs`` (same keys)."""
    for key, fig in figures(predictions_path, random_effects_path, fit_stats, factors, residuals_path).items():
        save_png(fig, outputs[key])
