"""Simulation-based (DHARMa) residuals: the definitions, the tests' notes on real data,
and the outputs (residuals.csv, fit_stats diagnostics, plots/residuals.png)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_families import REF, _fit

from glmm_steps import extract, residuals
from glmm_steps.engines.base import ModelSpec
from glmm_steps.fit import fit_model
from glmm_steps.residual_plot import residual_plot

GROUSE = "TICKS ~ YEAR + HEIGHT_c + (1 | LOCATION)"


def test_pit_residuals_randomise_ties_between_lower_and_upper_share() -> None:
    rng = np.random.default_rng(0)
    sims = np.array([[0, 0, 1, 1, 2, 3, 3, 3, 4, 5]] * 2000, dtype=float)
    res = residuals.scaled_residuals(np.full(2000, 3.0), sims, rng)
    # 5 of 10 below 3 and 8 at or below: uniform on (0.5, 0.8)
    assert res.min() >= 0.5 and res.max() <= 0.8 and abs(res.mean() - 0.65) < 0.01
    # continuous: the share below, no randomisation
    cont = residuals.scaled_residuals(np.array([0.355]), np.linspace(0, 1, 101)[None, :], rng)
    assert cont[0] == pytest.approx(36 / 101)


def test_scaled_residuals_are_uniform_for_counts_under_the_model() -> None:
    """With responses and simulations from the same Poisson means, the randomised
    residuals are uniform: KS does not reject and each decile holds about a tenth."""
    rng = np.random.default_rng(1)
    mu = np.exp(rng.normal(0, 1, size=5000))
    res = residuals.scaled_residuals(rng.poisson(mu), rng.poisson(mu[:, None], size=(5000, 250)), rng)
    assert residuals.test_uniformity(res)["p_value"] > 0.01
    assert np.allclose(np.histogram(res, bins=10, range=(0, 1))[0] / 5000, 0.1, atol=0.02)


def test_dispersion_statistic_is_dharmas() -> None:
    """testDispersion (type DHARMa): var(obs - fitted) / var(all simulations), over the
    mean of the same for each simulated column; overdispersed data give a ratio > 1."""
    rng = np.random.default_rng(2)
    fitted = np.full(400, 3.0)
    sims = rng.poisson(3.0, size=(400, 200)).astype(float)
    over = rng.negative_binomial(1.0, 1.0 / 4.0, size=400).astype(float)  # mean 3, variance 12
    d = residuals.test_dispersion(over, sims, fitted)
    expected = np.var(sims, ddof=1)
    manual = (np.var(over - fitted, ddof=1) / expected) / np.mean(np.var(sims - 3.0, axis=0, ddof=1) / expected)
    assert d["ratio"] == pytest.approx(manual)
    assert d["ratio"] > 3 and d["p_value"] == 0.0
    same = residuals.test_dispersion(rng.poisson(3.0, size=400).astype(float), sims, fitted)
    assert 0.8 < same["ratio"] < 1.2 and same["p_value"] > 0.05


def test_zero_inflation_and_outliers() -> None:
    rng = np.random.default_rng(3)
    sims = rng.poisson(2.0, size=(300, 250)).astype(float)
    obs = rng.poisson(2.0, size=300).astype(float)
    obs[:60] = 0  # many more zeros than Poisson(2) gives (about 41)
    z = residuals.test_zero_inflation(obs, sims)
    assert z["ratio"] > 1.3 and z["p_value"] < 0.01
    cont = rng.normal(size=(1000, 100))
    obs = rng.normal(size=1000)
    obs[:30] = 10.0  # far outside every simulation
    res = residuals.scaled_residuals(obs, cont, rng)
    o = residuals.test_outliers(res, cont, integer=False, rng=rng)
    assert o["type"] == "binomial" and o["outliers"] >= 30 and o["p_value"] < 1e-6


@pytest.fixture(scope="module")
def grouse_poisson():
    frame = pd.read_csv(REF / "data" / "grouseticks_year.csv")
    return fit_model(frame, ModelSpec(name="grouse_poisson", dataset="grouseticks", formula=GROUSE, family="poisson"))


def test_grouseticks_poisson_gets_the_overdispersion_note(grouse_poisson) -> None:
    d = grouse_poisson.diagnostics
    assert d["dispersion"]["ratio"] > 1.2 and d["dispersion"]["p_value"] < 0.01
    note = [n for n in grouse_poisson.notes if n.startswith("overdispersion")]
    assert note and note[0].endswith("consider family: negative_binomial"), grouse_poisson.notes
    assert f"ratio {d['dispersion']['ratio']:.3g}" in note[0]


@pytest.mark.slow
def test_grouseticks_negative_binomial_gets_no_dispersion_note() -> None:
    nb = _fit("grouseticks_nb")  # the lme4 reference fit (shared with test_families)
    res, d = residuals.diagnose(nb, seed=0)
    assert d["dispersion"]["p_value"] > 0.05 and d["uniformity"]["p_value"] > 0.05, d
    assert not any(n.startswith(("overdispersion", "underdispersion")) for n in d["notes"]), d["notes"]
    assert len(res) == nb.nobs


def test_residuals_are_seeded(grouse_poisson) -> None:
    again, d = residuals.diagnose(grouse_poisson, seed=0)
    assert np.array_equal(again, grouse_poisson.scaled_residuals) and d == grouse_poisson.diagnostics
    other, _ = residuals.diagnose(grouse_poisson, seed=1)
    assert not np.array_equal(other, again)


def test_marginal_simulation_redraws_the_random_effects(grouse_poisson) -> None:
    _, d = residuals.diagnose(grouse_poisson, nsim=100, mode="marginal")
    assert d["simulate"] == "marginal" and d["nsim"] == 100
    # the random effects' spread enters the simulations: no significant overdispersion left
    assert d["dispersion"]["p_value"] > 0.05


def test_outputs_residuals_csv_fit_stats_and_plot(grouse_poisson, tmp_path) -> None:
    outs = {
        t: tmp_path / f"{t}.csv"
        for t in ("fixed_effects", "variance_components", "random_effects", "predictions", "scaled_residuals")
    }
    outs["fit_stats"] = tmp_path / "fit_stats.json"
    record = extract.extract(grouse_poisson, outs)
    table = pd.read_csv(outs["scaled_residuals"])
    assert list(table.columns[-3:]) == ["observed", "fitted", "scaled_residual"] and len(table) == 403
    assert table["scaled_residual"].between(0, 1).all()
    stats = json.loads(outs["fit_stats"].read_text())
    assert stats["diagnostics"]["nsim"] == 250 and stats["diagnostics"]["dispersion"]["p_value"] == 0.0
    assert stats["dispersion"] == {} and record["diagnostics"]["notes"]
    png = tmp_path / "residuals.png"
    residual_plot(outs["scaled_residuals"], stats, png)
    assert png.stat().st_size > 10_000
    residual_plot(outs["scaled_residuals"], {**stats, "diagnostics": {}}, tmp_path / "none.png")
    assert (tmp_path / "none.png").stat().st_size > 1000


def test_every_plot_draws_a_gamma_fit(tmp_path) -> None:
    """The trajectory, caterpillar, diagnostics and residual plots of a Gamma fit."""
    from glmm_steps.plot import plot_fit

    fit = _fit("sleepstudy_gamma_log_tolpwrss")
    fit.scaled_residuals, fit.diagnostics = residuals.diagnose(fit, nsim=100)
    outs = {
        t: tmp_path / f"{t}.csv"
        for t in ("fixed_effects", "variance_components", "random_effects", "predictions", "scaled_residuals")
    }
    outs["fit_stats"] = tmp_path / "fit_stats.json"
    record = extract.extract(fit, outs)
    pngs = {p: tmp_path / f"{p}.png" for p in ("trajectories", "caterpillar", "diagnostics", "residuals")}
    plot_fit(outs["predictions"], outs["random_effects"], record, pngs)
    residual_plot(outs["scaled_residuals"], record, pngs["residuals"])
    assert all(p.stat().st_size > 10_000 for p in pngs.values())
    assert record["dispersion"]["sigma"] > 0 and record["link"] == "log"
