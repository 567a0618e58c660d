import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from glmm_steps.config import load_config
from glmm_steps.simulate import Design, Level, Outcome, simulate, simulate_to_files


@pytest.fixture(scope="module")
def design(root):
    return load_config(root / "config" / "config.yaml").designs["bp_study"]


def test_design_shape_and_ids(design):
    data, truth = simulate(design, 123)
    assert list(data.columns) == ["hospital_id", "patient_id", "time", "bp", "hypertension", "adverse_events"]
    assert len(data) == 500 == design.nrows
    assert data["hospital_id"].nunique() == 10
    assert data["patient_id"].nunique() == 100
    # every patient sits in exactly one hospital and is seen at visits 1..5
    assert (data.groupby("patient_id")["hospital_id"].nunique() == 1).all()
    assert (data.groupby("patient_id")["time"].apply(list).apply(lambda v: v == [1, 2, 3, 4, 5])).all()
    assert set(data["hypertension"].unique()) <= {0, 1}
    assert (data["adverse_events"] >= 0).all()
    assert truth["outcomes"]["bp"]["fixed_effects"] == {"(Intercept)": 120.0, "time": 0.5}
    assert truth["outcomes"]["bp"]["random_variance"] == {"hospital_id": 4.0, "patient_id": 1.0}
    assert truth["outcomes"]["hypertension"]["link"] == "logit"


def test_same_seed_same_bytes_and_matches_committed_file(design, tmp_path, root):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    simulate_to_files(
        load_config(root / "config" / "config.yaml").config["datasets"]["bp_study"]["simulate"],
        123,
        str(a),
        str(tmp_path / "truth.json"),
    )
    data, _ = simulate(design, 123)
    data.to_csv(b, index=False, lineterminator="\n")
    committed = root / "tests" / "reference" / "data" / "bp_study_seed123.csv"
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    # The committed file is what lme4 was fitted to: the simulator must still produce it.
    assert digest(a) == digest(b) == digest(committed)
    assert json.loads((tmp_path / "truth.json").read_text())["seed"] == 123


def test_other_seed_differs(design):
    a, _ = simulate(design, 123)
    b, _ = simulate(design, 124)
    assert not np.allclose(a["bp"], b["bp"])


def test_adding_an_outcome_leaves_the_others_unchanged():
    levels = (Level("g", 5), Level("u", 4))
    y = Outcome("y", "gaussian", 1.0, {"x": 0.5}, {"g": 1.0, "u": 0.5}, residual_sd=1.0)
    z = Outcome("z", "poisson", 0.0, {}, {"g": 0.3})
    one, _ = simulate(Design(levels, "x", (0, 1, 2), (y,)), 7)
    two, _ = simulate(Design(levels, "x", (0, 1, 2), (z, y)), 7)
    pd.testing.assert_series_equal(one["y"], two["y"])


def test_large_design_recovers_the_truth():
    """Sample moments of a big replicate match the parameters (checks the generator,
    not the fit): the grand mean of a gaussian outcome and the within-patient slope
    (every level's spread: test_every_levels_spread_matches_the_config)."""
    design = Design(
        (Level("h", 50), Level("p", 40)),
        "t",
        (1, 2, 3, 4, 5),
        (Outcome("y", "gaussian", 10.0, {"t": 0.5}, {"h": 2.0, "p": 1.0}, residual_sd=0.5),),
    )
    data, _ = simulate(design, 1)
    # mean over everything: 10 + 0.5 * 3 plus hospital noise averaged over 50 hospitals (sd 2/sqrt(50))
    assert abs(data["y"].mean() - 11.5) < 4 * 2 / np.sqrt(50)
    # within-patient slope is exact up to residual noise
    slope = np.polyfit(data["t"], data["y"] - data.groupby("p")["y"].transform("mean"), 1)[0]
    assert abs(slope - 0.5) < 0.02


def test_binomial_trials_column():
    design = Design((Level("g", 3),), "x", (0, 1), (Outcome("k", "binomial", 0.0, {}, {}, trials=10),))
    data, truth = simulate(design, 3)
    assert (data["k_trials"] == 10).all()
    assert data["k"].between(0, 10).all()
    assert truth["outcomes"]["k"]["trials"] == 10


def test_integer_intercept_and_coefficients_simulate_as_floats():
    """A Design built in Python may carry ints (the config path converts them)."""
    as_ints = Design(
        (Level("g", 4),), "x", (0, 1, 2), (Outcome("y", "gaussian", 10, {"x": 2}, {"g": 1}, residual_sd=1),)
    )
    as_floats = Design(
        (Level("g", 4),), "x", (0, 1, 2), (Outcome("y", "gaussian", 10.0, {"x": 2.0}, {"g": 1.0}, residual_sd=1.0),)
    )
    pd.testing.assert_frame_equal(simulate(as_ints, 5)[0], simulate(as_floats, 5)[0])


# ---- the spread of every level, checked against the config --------------------------
#
# A balanced nested design (every unit has the same number of children and visits) has
# the method-of-moments (ANOVA) estimates of each level's variance: with r_j rows per
# unit of level j, the mean square of unit means around their parent's mean,
#     MS_j = r_j * sum (mean_unit - mean_parent)^2 / df_j,   df_j = units_j - units_(j-1),
# has expectation E + sum_(i >= j) r_i V_i (E: the within-unit, residual variance), so
# V_j = (MS_j - MS_(j+1)) / r_j, with MS_(k+1) the within-unit mean square. The mean
# squares are independent with Var(MS) = 2 E[MS]^2 / df (normal draws), which gives the
# variance of V_j, and the delta method the standard error of its square root:
# SE(sd) = SE(V) / (2 sd). Each level's SD must lie within Z_MAX standard errors of the
# config's, and the design is large enough that one SE is under MAX_REL_SE of the SD
# (so a wrong SD by 20% or more cannot pass).
Z_MAX = 4.0
MAX_REL_SE = 0.05
SPREAD_LEVELS = (Level("region", 500), Level("hospital", 5), Level("patient", 4))
VISITS = (0, 1, 2)


def nested_anova_sds(data: pd.DataFrame, z: np.ndarray, levels: tuple[Level, ...]):
    """Method-of-moments variance of each level's effects in ``z`` (one value per row of
    the balanced nested ``data``) and of the within-unit residual. Returns
    ``{level name or "Residual": (variance estimate, variance of that estimate)}``."""
    z = pd.Series(z, index=data.index)
    names = [lv.name for lv in levels]
    mean_squares, rows_per_unit = [], []
    parent_mean = pd.Series(z.mean(), index=data.index)
    parent_units = 1
    for name in names:
        unit_mean = z.groupby(data[name]).transform("mean")
        units = data[name].nunique()
        r = len(data) // units
        # one term per unit: the row-level sum counts each unit r times
        ss = ((unit_mean - parent_mean) ** 2).sum()
        mean_squares.append((ss / (units - parent_units), units - parent_units))
        rows_per_unit.append(r)
        parent_mean, parent_units = unit_mean, units
    ss_e = ((z - parent_mean) ** 2).sum()
    mean_squares.append((ss_e / (len(data) - parent_units), len(data) - parent_units))
    out = {"Residual": (mean_squares[-1][0], 2 * mean_squares[-1][0] ** 2 / mean_squares[-1][1])}
    for j, name in enumerate(names):
        (ms, df), (ms_next, df_next) = mean_squares[j], mean_squares[j + 1]
        r = rows_per_unit[j]
        out[name] = ((ms - ms_next) / r, (2 * ms**2 / df + 2 * ms_next**2 / df_next) / r**2)
    return out


def _assert_sd_matches(name: str, estimate: tuple[float, float], sd: float, where: str) -> None:
    variance, var_of_variance = estimate
    se = np.sqrt(var_of_variance) / (2 * sd)
    sd_hat = np.sqrt(max(variance, 0.0))
    assert se < MAX_REL_SE * sd, f"{where} {name}: SE {se:.3g} too large for a tight check of sd {sd}"
    assert abs(sd_hat - sd) <= Z_MAX * se, (
        f"{where} {name}: empirical sd {sd_hat:.4f}, config {sd}, {abs(sd_hat - sd) / se:.1f} standard errors apart"
    )


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(
            "y", "gaussian", 10.0, {"visit": 0.5}, {"region": 2.0, "hospital": 1.0, "patient": 0.5}, residual_sd=0.7
        ),
        # Many trials / large counts: the empirical logit / log of a row is its linear
        # predictor plus small sampling noise (variance ~1/(n p (1-p)) or 1/mu), which the
        # method of moments takes as the within-unit variance.
        Outcome("k", "binomial", 0.0, {"visit": 0.3}, {"region": 0.5, "hospital": 0.3, "patient": 0.2}, trials=5000),
        Outcome("c", "poisson", 8.0, {"visit": -0.2}, {"region": 0.4, "hospital": 0.25, "patient": 0.15}),
    ],
    ids=lambda o: o.family,
)
def test_every_levels_spread_matches_the_config(outcome):
    """The SD of each level's simulated effects (and the gaussian residual SD), estimated
    from the data on the link scale, is the config's within a few standard errors."""
    design = Design(SPREAD_LEVELS, "visit", VISITS, (outcome,))
    data, truth = simulate(design, 2026)
    y = data[outcome.name].to_numpy(float)
    if outcome.family == "binomial":
        link = np.log((y + 0.5) / (outcome.trials - y + 0.5))
    elif outcome.family == "poisson":
        assert (y > 0).all()
        link = np.log(y)
    else:
        link = y
    z = link - outcome.coefficients["visit"] * data["visit"].to_numpy(float)
    estimates = nested_anova_sds(data, z, SPREAD_LEVELS)
    for level in SPREAD_LEVELS:
        _assert_sd_matches(level.name, estimates[level.name], outcome.random_sd[level.name], outcome.family)
    if outcome.family == "gaussian":
        _assert_sd_matches("Residual", estimates["Residual"], outcome.residual_sd, outcome.family)
    assert truth["outcomes"][outcome.name]["random_sd"] == outcome.random_sd


def test_binomial_and_poisson_rates_match_the_config():
    """The observed rate at each visit is the config's marginal mean: E[expit(eta)] and
    E[exp(eta)] over the normal random effects (Gauss-Hermite), within a few standard
    errors of a mean over iid top-level units (regions)."""
    sds = {"region": 0.6, "hospital": 0.4, "patient": 0.3}
    total_sd = np.sqrt(sum(s * s for s in sds.values()))
    outcomes = (
        Outcome("event", "binomial", -1.0, {"visit": 0.5}, sds),
        Outcome("count", "poisson", 0.5, {"visit": 0.25}, sds),
    )
    design = Design((Level("region", 400), Level("hospital", 4), Level("patient", 5)), "visit", VISITS, outcomes)
    data, _ = simulate(design, 7)
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    weights = weights / weights.sum()
    for o in outcomes:
        for visit in VISITS:
            eta = o.intercept + o.coefficients["visit"] * visit + total_sd * nodes
            expected = float(weights @ (1 / (1 + np.exp(-eta)) if o.family == "binomial" else np.exp(eta)))
            rows = data[data["visit"] == visit]
            per_region = rows.groupby("region")[o.name].mean()
            se = per_region.std(ddof=1) / np.sqrt(len(per_region))
            observed = per_region.mean()
            assert se < 0.05 * expected, f"{o.family} visit {visit}: SE {se:.3g} too large"
            assert abs(observed - expected) <= Z_MAX * se, (
                f"{o.family} visit {visit}: observed rate {observed:.4f}, config's {expected:.4f}, "
                f"{abs(observed - expected) / se:.1f} standard errors apart"
            )


def test_random_slopes_spread_and_correlation_match_the_config():
    """A random slope's SD and its correlation with the intercept, as drawn: per-subject
    least-squares lines on many visits estimate each subject's (intercept, slope) with a
    known sampling covariance sigma^2 (X'X)^-1; the covariance of the estimates less that
    is the drawn one. 4,000 subjects put the SDs' standard errors near 1% and the
    correlation's near 0.012; each must lie within 4 of them."""
    from glmm_steps.simulate import design_from_config

    n, visits, sd0, sd1, cor, sigma = 4000, np.arange(10.0), 1.0, 0.3, 0.5, 0.5
    spec = {
        "levels": [{"name": "subject", "n": n}],
        "repeated": {"name": "visit", "values": visits.tolist()},
        "outcomes": {
            "y": {
                "family": "gaussian",
                "intercept": 2.0,
                "coefficients": {"visit": 0.5},
                "random_sd": {"subject": sd0},
                "residual_sd": sigma,
                "random_slopes": {"subject": {"term": "visit", "sd": sd1, "cor": cor}},
            }
        },
    }
    data, _ = simulate(design_from_config(spec), 7)
    y = data.sort_values(["subject", "visit"])["y"].to_numpy(float).reshape(n, len(visits))
    X = np.column_stack([np.ones_like(visits), visits])
    coef = np.linalg.solve(X.T @ X, X.T @ y.T).T  # one (intercept, slope) per subject
    drawn = np.cov(coef.T) - sigma**2 * np.linalg.inv(X.T @ X)
    sd_hat = np.sqrt(np.diag(drawn))
    cor_hat = drawn[0, 1] / (sd_hat[0] * sd_hat[1])
    total = np.diag(np.cov(coef.T))
    se_sd = np.sqrt(2.0 / (n - 1)) * total / (2 * np.array([sd0, sd1]))  # delta method on each variance
    assert np.all(np.abs(sd_hat - [sd0, sd1]) < 4 * se_sd), (sd_hat, se_sd)
    assert abs(cor_hat - cor) < 4 * (1 - cor**2) / np.sqrt(n), cor_hat
