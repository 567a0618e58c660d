"""Calibration of the simulation-based residual tests, as a simulation study run by the
real snakemake: replicates of correctly specified models (gaussian, binomial, Poisson)
must reject at no more than their level, within Monte-Carlo error, and replicates of
overdispersed counts (negative binomial truth, theta 2) fitted as Poisson must be
flagged by the dispersion test at least 90% of the time.

Design (every dataset): 30 groups x 6 values of x (180 rows), a random intercept of SD
0.5 and a slope of 0.1 per x; each study model fitted with `residuals: {nsim: 250}`.
The negative binomial and Gamma fits cost 10-20 s per replicate here (no compiled
path in mixedlm), too much for the suite; the README gives their measured rates.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml
from conftest import run_snakemake

pytestmark = pytest.mark.slow

ALPHA = 0.05
REPLICATES = 60
POWER_REPLICATES = 30
SIMULATE = "conditional"


def _dataset(outcome: dict, replicates: int, seed: int) -> dict:
    return {
        "replicates": replicates,
        "base_seed": seed,
        "batch_size": replicates // 2,
        "simulate": {
            "levels": [{"name": "g", "n": 30}],
            "repeated": {"name": "x", "values": [0, 1, 2, 3, 4, 5]},
            "outcomes": {"y": {"coefficients": {"x": 0.1}, "random_sd": {"g": 0.5}, **outcome}},
        },
    }


CONFIG = {
    "datasets": {
        "cal_gaussian": _dataset({"family": "gaussian", "intercept": 1.0, "residual_sd": 1.0}, REPLICATES, 1),
        "cal_binomial": _dataset({"family": "binomial", "intercept": 0.0, "trials": 5}, REPLICATES, 2),
        "cal_poisson": _dataset({"family": "poisson", "intercept": 1.0}, REPLICATES, 3),
        "power_nb": _dataset({"family": "negative_binomial", "intercept": 1.0, "theta": 2.0}, POWER_REPLICATES, 4),
    },
    "models": {
        "cal_gaussian_lmm": {"dataset": "cal_gaussian", "formula": "y ~ x + (1 | g)", "reml": False},
        "cal_binomial_glmm": {
            "dataset": "cal_binomial",
            "formula": "cbind(y, y_failures) ~ x + (1 | g)",
            "family": "binomial",
        },
        "cal_poisson_glmm": {"dataset": "cal_poisson", "formula": "y ~ x + (1 | g)", "family": "poisson"},
        "power_nb_as_poisson": {"dataset": "power_nb", "formula": "y ~ x + (1 | g)", "family": "poisson"},
    },
}
for _m in CONFIG["models"].values():
    _m["residuals"] = {"nsim": 250, "simulate": SIMULATE}


@pytest.fixture(scope="module")
def fits(tmp_path_factory) -> pd.DataFrame:
    workdir = tmp_path_factory.mktemp("calibration")
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    run_snakemake(workdir, "all", "--configfile", str(config))
    tables = sorted((workdir / "results" / "studies").rglob("fits.csv"))
    return pd.concat([pd.read_csv(t) for t in tables], ignore_index=True)


def _rate(fits: pd.DataFrame, model: str, column: str) -> tuple[float, int]:
    rows = fits[(fits["model"] == model) & (fits["status"] != "failed")]
    return float((rows[column] < ALPHA).mean()), len(rows)


@pytest.mark.parametrize("model", ["cal_gaussian_lmm", "cal_binomial_glmm", "cal_poisson_glmm"])
@pytest.mark.parametrize("test", ["uniformity_p", "dispersion_p"])
def test_correct_model_rejects_at_most_at_its_level(fits: pd.DataFrame, model: str, test: str) -> None:
    rate, n = _rate(fits, model, test)
    assert n >= REPLICATES - 2, f"{model}: only {n} fitted replicates"
    # one-sided: conditional simulation makes the tests conservative (see the README)
    assert rate <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / n), f"{model} {test}: rejects {rate:.3f} of {n}"


def test_overdispersed_counts_are_flagged(fits: pd.DataFrame) -> None:
    rate, n = _rate(fits, "power_nb_as_poisson", "dispersion_p")
    assert n == POWER_REPLICATES and rate >= 0.9, f"dispersion test power {rate:.3f} over {n} replicates"
    ratios = fits.loc[fits["model"] == "power_nb_as_poisson", "dispersion_ratio"]
    assert (ratios > 1).all()
