"""Recovery statistics on a hand-made study whose every number is worked out by hand."""

import math

import pandas as pd
import pytest

from glmm_steps import paths
from glmm_steps.columns import ESTIMATE_COLUMNS, FIT_COLUMNS
from glmm_steps.recovery import COLUMNS, read_tables, recovery_to_files, summarise
from glmm_steps.study_plot import study_plots_to_files

NAN = float("nan")


def _est(design, rep, effect, group, term, truth, est, se=NAN, low=NAN, high=NAN, p=NAN):
    return {
        "model": "m",
        "design": design,
        "replicate": rep,
        "seed": 100 + rep,
        "effect": effect,
        "group": group,
        "term": term,
        "true_value": truth,
        "estimate": est,
        "std_error": se,
        "statistic": est / se,
        "p_value": p,
        "conf_low": low,
        "conf_high": high,
    }


def _fit(design, rep, status, converged, singular):
    return {
        "model": "m",
        "design": design,
        "replicate": rep,
        "seed": 100 + rep,
        "status": status,
        "converged": converged,
        "singular": singular,
        "nobs": 10,
        "logLik": -1.0,
        "error": "boom" if status == "failed" else "",
        "warnings": "",
    }


@pytest.fixture()
def tables():
    # Design "a": 5 replicates, replicate 4 failed (no estimates), replicate 2 singular.
    # Slope x (true 1.0): estimates 0.5, 1.0, 1.5, 2.0; intervals cover 1.0 in replicates 0 and 1;
    # p < 0.05 in replicates 1, 2 and 3. SD of group g (true 2.0): 1, 3, 2, 2.
    rows = []
    for rep, (est, se, low, high, p) in enumerate(
        [
            (0.5, 0.5, -0.2, 1.2, 0.30),
            (1.0, 0.5, 0.6, 1.4, 0.01),
            (1.5, 0.25, 1.2, 1.8, 0.001),
            (2.0, 0.5, 1.1, 2.9, 0.04),
        ]
    ):
        rows.append(_est("a", rep, "fixed", "", "(Intercept)", 3.0, 3.0, 1.0, 1.0, 5.0, 0.01))
        rows.append(_est("a", rep, "fixed", "", "x", 1.0, est, se, low, high, p))
        rows.append(_est("a", rep, "ran_pars", "g", "sd__(Intercept)", 2.0, [1.0, 3.0, 2.0, 2.0][rep]))
    fits = [
        _fit("a", 0, "ok", True, False),
        _fit("a", 1, "ok", True, False),
        _fit("a", 2, "singular", True, True),
        _fit("a", 3, "ok", True, False),
        _fit("a", 4, "failed", False, False),
        # Design "b": both replicates failed.
        _fit("b", 5, "failed", False, False),
        _fit("b", 6, "failed", False, False),
    ]
    return pd.DataFrame(rows, columns=ESTIMATE_COLUMNS), pd.DataFrame(fits, columns=FIT_COLUMNS)


def test_measures_worked_by_hand(tables):
    table = summarise(*tables, alpha=0.05)
    assert list(table.columns) == COLUMNS
    x = table[(table["design"] == "a") & (table["term"] == "x")].iloc[0]
    assert (x["n_replicates"], x["n_failed"], x["n_estimated"]) == (5, 1, 4)
    assert x["mean_estimate"] == pytest.approx(1.25)
    assert x["bias"] == pytest.approx(0.25)
    assert x["relative_bias"] == pytest.approx(0.25)
    # deviations from the mean: -0.75, -0.25, 0.25, 0.75 -> sum of squares 1.25 over n - 1 = 3
    assert x["empirical_sd"] == pytest.approx(math.sqrt(1.25 / 3))
    assert x["bias_mcse"] == pytest.approx(math.sqrt(1.25 / 3) / 2)
    assert x["mean_se"] == pytest.approx((0.5 + 0.5 + 0.25 + 0.5) / 4)
    # errors from the truth: -0.5, 0, 0.5, 1.0 -> mean square 1.5 / 4
    assert x["rmse"] == pytest.approx(math.sqrt(1.5 / 4))
    assert x["coverage"] == pytest.approx(0.5)
    assert x["coverage_mcse"] == pytest.approx(math.sqrt(0.5 * 0.5 / 4))
    # 3 significant out of all 5 replicates: the failed one detects nothing
    assert x["power"] == pytest.approx(3 / 5)
    assert x["power_mcse"] == pytest.approx(math.sqrt(0.6 * 0.4 / 5))
    assert x["share_converged"] == pytest.approx(4 / 5) and x["share_singular"] == pytest.approx(1 / 5)


def test_intercept_and_variance_components(tables):
    table = summarise(*tables).set_index(["design", "term"])
    icpt = table.loc[("a", "(Intercept)")]
    assert icpt["bias"] == 0 and icpt["coverage"] == 1 and math.isnan(icpt["power"])  # power: named terms only
    sd = table.loc[("a", "sd__(Intercept)")]
    assert sd["group"] == "g" and sd["bias"] == 0 and sd["rmse"] == pytest.approx(math.sqrt(0.5))
    assert math.isnan(sd["coverage"]) and math.isnan(sd["mean_se"]) and math.isnan(sd["power"])
    # only named terms get power; the intercept is significant in the 4 fits that ran, of 5
    named = summarise(*tables, power_terms=["(Intercept)"]).set_index(["design", "term"])
    assert named.loc[("a", "(Intercept)"), "power"] == pytest.approx(4 / 5)
    assert math.isnan(named.loc[("a", "x"), "power"])


def test_a_design_whose_every_fit_failed_is_kept(tables):
    table = summarise(*tables)
    b = table[table["design"] == "b"]
    assert list(b["term"]) == ["(Intercept)", "x", "sd__(Intercept)"]
    assert (b["n_replicates"] == 2).all() and (b["n_failed"] == 2).all() and (b["n_estimated"] == 0).all()
    assert b["mean_estimate"].isna().all() and (b["share_converged"] == 0).all()
    assert b.set_index("term").loc["x", "power"] == 0
    # with no estimate at all, each design still gets a row that counts its failures
    none = summarise(tables[0].iloc[0:0], tables[1])
    assert list(none["design"]) == ["a", "b"] and list(none["n_failed"]) == [1, 2]


def test_files_round_trip(tables, tmp_path):
    """Through CSV and back (as the recovery and study plots steps read batches) the
    numbers are the same, the empty group of a fixed effect stays empty, and the swept
    value becomes a column; the plots step draws its four figures from the same files."""
    estimates, fits = tables
    estimates.to_csv(tmp_path / "e.csv", index=False)
    fits.to_csv(tmp_path / "f.csv", index=False)
    assert read_tables([tmp_path / "e.csv"], ESTIMATE_COLUMNS)["group"].tolist()[:3] == ["", "", "g"]
    designs = {"a": {"levels.g.n": 4}, "b": {"levels.g.n": 8}}
    outputs = {"table": str(tmp_path / "recovery.csv"), "power_table": str(tmp_path / "power.csv")}
    table = recovery_to_files([str(tmp_path / "e.csv")], [str(tmp_path / "f.csv")], outputs, 0.05, None, designs)
    assert list(table["levels.g.n"]) == [4] * 3 + [8] * 3
    pd.testing.assert_frame_equal(table.drop(columns="levels.g.n"), summarise(*tables))
    powers = pd.read_csv(tmp_path / "power.csv")
    assert list(powers["levels.g.n"]) == [4, 8] and powers["power"].between(0, 1).all()
    plots = {p: str(tmp_path / f"{p}.png") for p in paths.RECOVERY_PLOTS}
    study_plots_to_files([str(tmp_path / "e.csv")], [str(tmp_path / "f.csv")], plots, 0.05, None, designs)
    for p in paths.RECOVERY_PLOTS:
        assert (tmp_path / f"{p}.png").stat().st_size > 1000


def test_power_curve_explains_its_target_marks_only_with_a_target(monkeypatch, tmp_path):
    """The power curve's title names the dashed target line and the star only when the
    study sets target_power (a plain study's curve had a legend for marks it lacked),
    and fits the figure (a long title line was cut off at its right edge)."""
    from matplotlib.text import Text

    from glmm_steps import figures, power

    titles = {}

    def record(fig, path):
        titles[path] = " ".join(" ".join(t.get_text() for t in fig.findobj(Text) if t.get_text()).split())
        renderer = fig.canvas.get_renderer()
        fig.canvas.draw()
        for ax in fig.axes:
            box = ax.title.get_window_extent(renderer)
            assert 0 <= box.x0 and box.x1 <= fig.bbox.width, (ax.title.get_text(), box, fig.bbox.width)
        figures.plt.close(fig)

    monkeypatch.setattr(figures, "save_png", record)
    recovery = pd.DataFrame(
        {
            "model": "m",
            "design": ["g.n=4", "g.n=8"],
            "g.n": [4, 8],
            "effect": "fixed",
            "group": "",
            "term": "x",
            "n_replicates": 100,
            "power": [0.5, 0.9],
            "power_mcse": [0.05, 0.03],
        }
    )
    for target in (None, 0.8):
        table = power.power_table(recovery, ["g.n"], target)
        power.power_curve_plot(table, f"curve-{target}", "m")
    assert "star" not in titles["curve-None"] and "dashed" not in titles["curve-None"]
    assert "star: the smallest size reaching it" in titles["curve-0.8"]
    # a target no swept size reaches: no star drawn, and the title says so
    power.power_curve_plot(power.power_table(recovery, ["g.n"], 0.95), "curve-0.95", "m")
    assert "star" not in titles["curve-0.95"] and "no swept size reaches it" in titles["curve-0.95"]
