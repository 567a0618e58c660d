import hashlib
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest
from matplotlib.text import Text

from glmm_steps import extract
from glmm_steps import plot as plot_module
from glmm_steps.engines.base import ModelSpec
from glmm_steps.fit import fit_model
from glmm_steps.formula import parse
from glmm_steps.plot import choose_axes, figures, is_repeated, plot_fit, plt
from tests.conftest import REFERENCE

PLOTS = ("trajectories", "caterpillar", "diagnostics")


def _tables(fit, tmp_path, seed=123):
    outputs = {
        k: tmp_path / f"{k}.{'json' if k == 'fit_stats' else 'csv'}"
        for k in ("fixed_effects", "variance_components", "random_effects", "predictions", "fit_stats")
    }
    stats = extract.extract(fit, outputs, seed=seed)
    return outputs, stats


def _figures(data, model, dataset, formula, family, tmp_path, factors=(), seed=None):
    """The unsaved figures of one fit, drawn from its tidy tables as the plot step does."""
    fit = fit_model(data, ModelSpec(model, dataset, formula, family), factors=factors)
    tables, stats = _tables(fit, tmp_path, seed=seed)
    return figures(tables["predictions"], tables["random_effects"], stats, factors)


def _panels(fig):
    """The axes that draw something (not the blank cells of a grid)."""
    return [ax for ax in fig.axes if ax.axison]


def _inside(fig):
    """The title, each drawn panel (with its tick labels and axis labels) and each legend
    lie within the figure. Returns the texts of the title and legends."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    parts = [fig._suptitle] if fig._suptitle else []
    parts += fig.legends + [t for t in fig.texts if t.get_text()] + _panels(fig)
    for part in parts:
        b = part.get_tightbbox(renderer) if hasattr(part, "axison") else part.get_window_extent(renderer)
        assert b.x0 >= box.x0 - 1 and b.x1 <= box.x1 + 1 and b.y0 >= box.y0 - 1 and b.y1 <= box.y1 + 1, part
    return [fig._suptitle] + [t for legend in fig.legends for t in legend.get_texts()]


def _texts(fig):
    return [t.get_text() for t in fig.findobj(plt.Text) if t.get_text()]


def test_repeated_measures_one_panel_per_hospital_each_patient_its_colour(bp_data, tmp_path):
    figs = _figures(
        bp_data,
        "bp_lmm",
        "bp_study",
        "bp ~ time + (1 | hospital_id) + (1 | patient_id)",
        "gaussian",
        tmp_path,
        seed=123,
    )
    fig = figs["trajectories"]
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == [f"hospital_id {h}" for h in range(1, 11)]
    for ax, (_, rows) in zip(panels, bp_data.groupby("hospital_id")):
        lines = ax.get_lines()
        # per patient an observed and a predicted line (same colour), then the population line
        assert len(lines) == 2 * rows["patient_id"].nunique() + 1
        observed, predicted = lines[0:-1:2], lines[1:-1:2]
        assert all(o.get_color() == p.get_color() and p.get_linestyle() == "--" for o, p in zip(observed, predicted))
        assert len({o.get_color() for o in observed}) == rows["patient_id"].nunique()
        assert sum(len(o.get_xdata()) for o in observed) == len(rows)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [
        "observed, one line per patient_id",
        "predicted per patient_id (fixed + random effects)",
        "population (fixed effects only)",
    ]
    for f in figs.values():
        _inside(f)
        plt.close(f)


def test_glmm_with_one_grouping_factor_draws_its_data_on_a_categorical_axis(tmp_path):
    cbpp = pd.read_csv(REFERENCE / "data" / "cbpp.csv")
    figs = _figures(
        cbpp,
        "cbpp_glmm",
        "cbpp",
        "cbind(incidence, size - incidence) ~ period + (1 | herd)",
        "binomial",
        tmp_path,
        factors=["period"],
    )
    fig = figs["trajectories"]
    fig.canvas.draw()  # tick labels get their text when drawn
    panels = _panels(fig)
    assert len(panels) == cbpp["herd"].nunique() == 15
    for ax, (herd, rows) in zip(panels, cbpp.groupby("herd")):
        assert ax.get_title() == f"herd {herd}"
        points = [ln for ln in ax.get_lines() if ln.get_linestyle() == "None"]
        assert len(points) == 1
        assert sorted(points[0].get_ydata()) == pytest.approx(sorted(rows["incidence"] / rows["size"]))
        assert list(ax.get_xticks()) == [0, 1, 2, 3]  # one tick per period, none between
    labelled = [[t.get_text() for t in ax.get_xticklabels()] for ax in panels]
    assert [labels for labels in labelled if labels] == [["1", "2", "3", "4"]] * 5  # the bottom row's
    # random effects of a binomial GLMM are on the log-odds scale, and the axis says so
    assert figs["caterpillar"].axes[0].get_xlabel() == "deviation from the population value (log-odds scale)"
    texts = _texts(fig)
    assert "incidence / size" in texts
    assert not any("_prop" in t for t in texts)  # no column the user never wrote
    for f in figs.values():
        _inside(f)
        plt.close(f)


def test_cross_sectional_data_are_points_with_school_lines_not_zigzags(tmp_path):
    exam = pd.read_csv(REFERENCE / "data" / "Exam_students.csv")
    assert not is_repeated(exam, "standLRT", "school")
    figs = _figures(exam, "exam_lmm", "exam", "normexam ~ standLRT + (1 | school)", "gaussian", tmp_path)
    fig = figs["trajectories"]
    (ax,) = _panels(fig)
    (points,) = ax.collections
    assert len(points.get_offsets()) == len(exam)
    lines = ax.get_lines()
    assert len(lines) == 20 + 1  # a sample of 20 of 65 schools, and the population line
    for line in lines:
        x = line.get_xdata()
        assert (x[1:] > x[:-1]).all()  # one value per x: a fitted line, never a zig-zag through pupils
    assert "20 of 65 shown" in fig._suptitle.get_text()
    _inside(fig)
    for f in figs.values():
        plt.close(f)


def test_long_titles_are_wrapped_inside_the_figure(bp_data, tmp_path):
    name = "adverse_events_glmm_with_a_much_longer_model_name_than_usual"
    figs = _figures(
        bp_data,
        name,
        "bp_study",
        "adverse_events ~ time + (1 | hospital_id) + (1 | patient_id)",
        "poisson",
        tmp_path,
        seed=123,
    )
    for f in figs.values():
        texts = _inside(f)
        assert any(name in t.get_text() for t in texts)
        plt.close(f)


@pytest.mark.parametrize(
    "formula, family",
    [
        ("bp ~ time + (1 | hospital_id) + (1 | patient_id)", "gaussian"),
        ("hypertension ~ time + (1 | hospital_id) + (1 | patient_id)", "binomial"),
    ],
)
def test_plots_drawn_and_reproducible(bp_data, tmp_path, formula, family):
    fit = fit_model(bp_data, ModelSpec("m", "bp_study", formula, family))
    tables, stats = _tables(fit, tmp_path)
    digests = []
    for run in ("a", "b"):
        outs = {p: tmp_path / run / f"{p}.png" for p in PLOTS}
        plot_fit(tables["predictions"], tables["random_effects"], stats, outs)
        for p in PLOTS:
            img = mpimg.imread(outs[p])
            assert img.shape[0] > 300 and img.shape[1] > 500
            assert img[..., :3].std() > 0.05  # not a blank canvas
        digests.append([hashlib.sha256(outs[p].read_bytes()).hexdigest() for p in PLOTS])
    assert digests[0] == digests[1]


def test_choose_axes_picks_visit_patient_hospital(bp_data):
    f = parse("bp ~ time + (1 | hospital_id) + (1 | patient_id)")
    assert choose_axes(f, bp_data) == ("time", "patient_id", "hospital_id")
    # a covariate constant within every unit gives no trajectory
    data = bp_data.assign(site_size=bp_data["hospital_id"] * 10)
    assert choose_axes(parse("bp ~ site_size + (1 | hospital_id)"), data) is None


def test_failed_fit_gets_explanatory_pngs(bp_data, tmp_path, monkeypatch):
    """A failed fit's three PNGs say so: each figure carries the failure and the engine's
    error text, under the model's title. The text is read from the matplotlib figure
    as it is saved (save_png is the one PNG writer), so the PNG itself is unchanged."""
    fit = fit_model(bp_data.assign(huge=bp_data["bp"] * 1e200), ModelSpec("m", "d", "huge ~ time + (1 | hospital_id)"))
    tables, stats = _tables(fit, tmp_path)
    assert stats["error"]
    drawn, save_png = {}, plot_module.save_png

    def save_and_record(fig, path):
        drawn[Path(path).stem] = [t.get_text() for t in fig.findobj(Text) if t.get_text()]
        save_png(fig, path)

    monkeypatch.setattr(plot_module, "save_png", save_and_record)
    outs = {p: tmp_path / f"{p}.png" for p in PLOTS}
    plot_fit(tables["predictions"], tables["random_effects"], stats, outs)
    assert sorted(drawn) == sorted(PLOTS)
    for p in PLOTS:
        # the text is wrapped to the figure's width: compare it word by word
        assert any(t.split() == f"No plot: the fit failed. {stats['error']}".split() for t in drawn[p]), drawn[p]
        assert any(t.startswith("m: huge ~ time + (1 | hospital_id)") for t in drawn[p]), drawn[p]
        assert mpimg.imread(outs[p])[..., :3].std() > 0.01  # the text is on the canvas


def test_save_png_draws_a_tight_layout_figure_once_for_the_same_bytes(tmp_path, monkeypatch):
    """save_png gives the bytes matplotlib's own savefig gives, and after tight_layout
    draws the figure once (savefig alone draws it twice: a layout pass first)."""
    from matplotlib.figure import Figure

    from glmm_steps import figures

    def figure():
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot([0, 1, 2], [1, 3, 2], "o-")
        ax.set_title("a title")
        fig.tight_layout()
        return fig

    draws, draw = [], Figure.draw
    monkeypatch.setattr(Figure, "draw", lambda self, renderer: (draws.append(1), draw(self, renderer))[1])
    plain = figure()
    plain.savefig(tmp_path / "plain.png", dpi=110, metadata={"Software": None})
    plt.close(plain)
    assert len(draws) == 2
    draws.clear()
    figures.save_png(figure(), tmp_path / "saved.png")
    assert len(draws) == 1
    assert (tmp_path / "saved.png").read_bytes() == (tmp_path / "plain.png").read_bytes()
