import hashlib
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from matplotlib.text import Text

from glmm_steps import extract
from glmm_steps import plot as plot_module
from glmm_steps.engines.base import ModelSpec
from glmm_steps.fit import fit_model
from glmm_steps.formula import parse
from glmm_steps.plot import choose_axes, plot_fit

PLOTS = ("trajectories", "caterpillar", "diagnostics")


def _tables(fit, tmp_path):
    outputs = {k: tmp_path / f"{k}.{'json' if k == 'fit_stats' else 'csv'}" for k in
               ("fixed_effects", "variance_components", "random_effects", "predictions", "fit_stats")}
    stats = extract.extract(fit, outputs, seed=123)
    return outputs, stats


@pytest.mark.parametrize("formula, family", [
    ("bp ~ time + (1 | hospital_id) + (1 | patient_id)", "gaussian"),
    ("hypertension ~ time + (1 | hospital_id) + (1 | patient_id)", "binomial"),
])
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
        assert any(t == f"No plot: the fit failed.\n{stats['error']}" for t in drawn[p]), drawn[p]
        assert any(t.startswith("m: huge ~ time + (1 | hospital_id)") for t in drawn[p]), drawn[p]
        assert mpimg.imread(outs[p])[..., :3].std() > 0.01  # the text is on the canvas
