"""Simulation-based scaled residuals and the tests on them, as R's DHARMa defines them.

For a fitted model, ``nsim`` responses are drawn per row from the fitted model
(conditional on the estimated random effects by default, as lme4's
``simulate(use.u = TRUE)``; ``marginal`` redraws the random effects from their
estimated covariance). A row's scaled residual is the share of its simulated values
below the observed one, drawn uniformly between the shares below and at-or-below
it when they differ (ties: integer responses), so under the model it is exactly
uniform on (0, 1) (DHARMa's ``getQuantile``, method PIT).

The tests follow DHARMa's R sources (``R/tests.R``): ``testUniformity`` (one-sample
Kolmogorov-Smirnov against the uniform), ``testDispersion`` (type DHARMa: the variance
of observed minus fitted values against that of the simulated responses),
``testZeroInflation`` (observed zeros against the simulated counts of zeros) and
``testOutliers`` (share of residuals outside the simulation envelope; binomial test for
continuous responses or more than 500 rows, else bootstrapped). ``fitted`` is the
fixed-effects-only prediction, as DHARMa's ``getFitted`` (``re.form = ~0``), for both
simulation modes (on the grouseticks Poisson fit, conditional simulation: ratio 1.35;
with the conditional fitted values instead it would be 6.1, dominated by the largest
counts; marginal simulation: 0.85, not significant, DHARMa's known weakness there).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from glmm_steps import families, model_matrix
from glmm_steps import formula as formula_mod
from glmm_steps.engines.base import FitResult
from glmm_steps.errors import GlmmError
from glmm_steps.model_matrix import ModelMatrix

# DHARMa's simulateResiduals default (n = 250) and significance level of the notes.
DEFAULT_NSIM = 250
ALPHA = 0.05
MODES = ("conditional", "marginal")
# DHARMa's testOutliers: a bootstrap of 100 draws for integer responses up to 500 rows.
OUTLIER_BOOTSTRAP_MAX_NOBS = 500
OUTLIER_NBOOT = 100
# Above this many rows the simulations (rows x nsim values) cost more memory and time
# than the fit: they are skipped with a note.
MAX_NOBS = 100_000


def _trials(result: FitResult) -> np.ndarray | None:
    formula = formula_mod.parse(result.spec.formula)
    return formula.n_trials(result.frame).astype(np.int64) if formula.trials else None


def _residual_sd(result: FitResult) -> float:
    row = result.varcorr[(result.varcorr["group"] == "Residual") & (result.varcorr["term"] == "(Intercept)")]
    return float(row["sd"].iloc[0])


def _link(link: str, mu: np.ndarray) -> np.ndarray:
    """The link function itself (inverse of families.inverse_link)."""
    mu = np.asarray(mu, dtype=float)
    if link == "probit":
        from scipy import stats  # here, not at import: a study job that never needs it saves 0.4 s

        return stats.norm.ppf(mu)
    with np.errstate(divide="ignore"):
        return {
            "identity": lambda m: m,
            "logit": lambda m: np.log(m) - np.log1p(-m),
            "cloglog": lambda m: np.log(-np.log1p(-m)),
            "log": np.log,
            "inverse": lambda m: 1.0 / m,
        }[link](mu)


def _random_draw(result: FitResult, rng: np.random.Generator, design: ModelMatrix) -> np.ndarray:
    """One draw of the random part of the linear predictor, Z b with b from the
    estimated covariance of each random term (marginal simulation). Z is the model
    matrix builder's: each term's columns (``design.random``) under lme4's names, as
    the fit used them, so factor slopes and transformed slopes are drawn as fitted."""
    formula = formula_mod.parse(result.spec.formula)
    frame, vc = result.frame, result.varcorr
    out = np.zeros(len(frame))
    for term, block in zip(formula.random, design.random):
        rows = vc[(vc["group"] == term.group_name) & ~vc["term"].str.startswith("cor(")].set_index("term")
        missing = [n for n in block.names if n not in rows.index]
        if missing:
            raise GlmmError(
                f"marginal simulation: no variance for {missing[0]!r} of group "
                f"'{term.group_name}'; use residuals: {{simulate: conditional}}"
            )
        terms = list(block.names)
        cov = np.diag(rows.loc[terms, "variance"].to_numpy(dtype=float))
        for _, r in vc[(vc["group"] == term.group_name) & vc["term"].str.startswith("cor(")].iterrows():
            a, b = r["term"][4:-1].split(",")
            if a in terms and b in terms:
                i, j = terms.index(a), terms.index(b)
                cov[i, j] = cov[j, i] = float(r["variance"])
        group = list(term.group)
        keys = frame[group].astype(str).agg(":".join, axis=1) if len(group) > 1 else frame[group[0]].astype(str)
        codes, levels = pd.factorize(keys)
        b = rng.multivariate_normal(np.zeros(len(terms)), cov, size=len(levels), method="eigh")
        out += np.sum(b[codes] * block.values, axis=1)
    return out


def simulate_responses(
    result: FitResult, nsim: int, rng: np.random.Generator, mode: str = "conditional", design: ModelMatrix | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``nsim`` responses per fitted row from ``result``. Returns ``(observed,
    simulated)``: the observed response (success counts for ``cbind``) and an array
    rows x nsim on the same scale. ``design``: the fit's model matrix (marginal
    simulation draws on its random-term columns); None rebuilds it from the fit's
    rows and transform state."""
    spec = result.spec
    trials = _trials(result)
    observed = np.asarray(result.observed, dtype=float)
    if trials is not None:
        observed = np.round(observed * trials)
    if mode == "conditional":
        eta = _link(spec.link, np.asarray(result.fitted, dtype=float))
        etas = np.repeat(eta[:, None], nsim, axis=1)
    else:
        base = _link(spec.link, np.asarray(result.fitted_marginal, dtype=float))
        if design is None:
            design = model_matrix.build(
                formula_mod.parse(spec.formula), result.frame, state=result.transform_state or None
            )
        etas = np.column_stack([base + _random_draw(result, rng, design) for _ in range(nsim)])
    shape = etas.shape
    flat = etas.reshape(-1)
    if spec.family == "gaussian":
        sims = flat + rng.normal(0.0, _residual_sd(result), size=flat.size)
    else:
        disp = result.dispersion
        sims = families.draw(
            spec.family,
            spec.link,
            flat,
            rng,
            trials=1 if trials is None else np.repeat(trials, nsim),
            theta=disp.get("theta"),
            shape=disp.get("shape"),
        )
    return observed, np.asarray(sims, dtype=float).reshape(shape)


def scaled_residuals(observed: np.ndarray, simulated: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """DHARMa's PIT residuals (``getQuantile``, method PIT): the share of simulated
    values below the observed one, or a uniform draw between that share and the share
    at or below it when they differ (ties)."""
    obs = np.asarray(observed, dtype=float)[:, None]
    lower = np.mean(simulated < obs, axis=1)
    upper = np.mean(simulated <= obs, axis=1)
    ties = lower != upper
    out = lower.copy()
    out[ties] = rng.uniform(lower[ties], upper[ties])
    return out


def _p_two_sided(simulated: np.ndarray, observed: float) -> float:
    """DHARMa's getP, alternative two.sided."""
    return float(min(min(np.mean(simulated <= observed), np.mean(simulated >= observed)) * 2, 1.0))


def test_uniformity(res: np.ndarray) -> dict[str, float]:
    """testUniformity: one-sample KS test of the scaled residuals against U(0, 1)."""
    from scipy import stats

    ks = stats.kstest(res, "uniform")
    return {"statistic": float(ks.statistic), "p_value": float(ks.pvalue)}


def test_dispersion(observed: np.ndarray, simulated: np.ndarray, fitted: np.ndarray) -> dict[str, float]:
    """testDispersion, type DHARMa (no refit): spread(x) = var(x - fitted) / var(all
    simulated values); ratio = spread(observed) / mean of spread(simulated columns)."""
    expected = np.var(simulated, ddof=1)
    f = np.asarray(fitted, dtype=float)
    observed_spread = np.var(observed - f, ddof=1) / expected
    simulated_spread = np.var(simulated - f[:, None], axis=0, ddof=1) / expected
    return {
        "ratio": float(observed_spread / np.mean(simulated_spread)),
        "p_value": _p_two_sided(simulated_spread, observed_spread),
    }


def test_zero_inflation(observed: np.ndarray, simulated: np.ndarray) -> dict[str, float]:
    """testZeroInflation: observed count of zeros against the simulated counts."""
    zeros = float(np.sum(observed == 0))
    simulated_zeros = np.sum(simulated == 0, axis=0).astype(float)
    mean = float(np.mean(simulated_zeros))
    return {
        "observed_zeros": zeros,
        "expected_zeros": mean,
        "ratio": zeros / mean if mean > 0 else (1.0 if zeros == 0 else float("inf")),
        "p_value": _p_two_sided(simulated_zeros, zeros),
    }


def test_outliers(res: np.ndarray, simulated: np.ndarray, integer: bool, rng: np.random.Generator) -> dict[str, Any]:
    """testOutliers, margin both: residuals at the edge of the simulation envelope.
    Continuous responses or more than 500 rows: exact binomial test of the count
    below 1/(nsim+1) or above 1 - 1/(nsim+1) against 2/(nsim+1). Integer responses up
    to 500 rows: DHARMa's bootstrap, the share of residuals exactly 0 or 1 against
    that of 100 simulated columns scored against resampled others."""
    n, nsim = simulated.shape
    if not integer or n > OUTLIER_BOOTSTRAP_MAX_NOBS:
        edge = 1.0 / (nsim + 1)
        k = int(np.sum(res < edge) + np.sum(res > 1 - edge))
        from scipy import stats

        test = stats.binomtest(k, n, 2 * edge)
        return {
            "type": "binomial",
            "outliers": k,
            "frequency": k / n,
            "expected_frequency": 2 * edge,
            "p_value": float(test.pvalue),
        }
    frequency = float(np.mean(res == 0) + np.mean(res == 1))
    nboot = min(OUTLIER_NBOOT, nsim)
    boot = np.empty(nboot)
    for i in range(nboot):
        others = np.delete(np.arange(nsim), i)
        sel = rng.choice(others, size=nsim, replace=True)
        r = scaled_residuals(simulated[:, i], simulated[:, sel], rng)
        boot[i] = np.mean(r == 1) + np.mean(r == 0)
    return {
        "type": "bootstrap",
        "outliers": int(round(frequency * n)),
        "frequency": frequency,
        "expected_frequency": float(np.mean(boot)),
        "p_value": _p_two_sided(boot, frequency),
    }


def _p_text(p: float, nsim: int, resolution: bool) -> str:
    if resolution and p == 0:
        return f"p < {1 / nsim:.2g}"
    return f"p = {p:.2g}" if p >= 1e-15 else "p < 1e-15"


def notes(family: str, diagnostics: dict[str, Any]) -> list[str]:
    """Plain notes for the tests that reject at ALPHA, each saying what to consider."""
    nsim, out = diagnostics["nsim"], []
    u = diagnostics["uniformity"]
    if u["p_value"] < ALPHA:
        out.append(
            f"scaled residuals not uniform (KS D {u['statistic']:.3g}, {_p_text(u['p_value'], nsim, False)}): "
            "check the family and the model's terms"
        )
    d = diagnostics["dispersion"]
    if d["p_value"] < ALPHA:
        out.append(families.dispersion_note(family, d["ratio"], d["p_value"], nsim))
    z = diagnostics.get("zero_inflation")
    if z is not None and z["p_value"] < ALPHA:
        more = z["ratio"] > 1
        out.append(
            f"{'zero inflation' if more else 'fewer zeros than expected'} (observed/simulated zeros "
            f"{z['ratio']:.3g}, {_p_text(z['p_value'], nsim, True)}): "
            + ("consider a zero-inflated model or family: negative_binomial" if more else "check the family")
        )
    o = diagnostics["outliers"]
    if o["p_value"] < ALPHA:
        out.append(
            f"outliers ({o['outliers']} of {diagnostics['nobs']} outside the simulation envelope, "
            f"frequency {o['frequency']:.3g} vs {o['expected_frequency']:.3g} expected, "
            f"{_p_text(o['p_value'], nsim, o['type'] == 'bootstrap')}): check those rows and the family"
        )
    return out


def diagnose(
    result: FitResult,
    nsim: int = DEFAULT_NSIM,
    seed: int = 0,
    mode: str = "conditional",
    design: ModelMatrix | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Simulate ``nsim`` responses from the fitted ``result`` (seeded by ``seed``; mode
    ``conditional`` or ``marginal``), and return ``(scaled residuals per fitted row,
    diagnostics)``: a JSON-ready dict with the settings, the four tests and the notes
    for the ones that reject at 0.05. ``design``: see :func:`simulate_responses`."""
    rng = np.random.default_rng([seed, nsim])
    observed, simulated = simulate_responses(result, nsim, rng, mode, design)
    integer = result.spec.family in families.INTEGER_FAMILIES
    res = scaled_residuals(observed, simulated, rng)
    trials = _trials(result)
    fitted = np.asarray(result.fitted_marginal, dtype=float) * (1 if trials is None else trials)
    diagnostics: dict[str, Any] = {
        "method": "DHARMa simulation-based scaled residuals (PIT)",
        "simulate": mode,
        "nsim": nsim,
        "seed": seed,
        "nobs": int(len(res)),
        "integer_response": integer,
        "uniformity": test_uniformity(res),
        "dispersion": test_dispersion(observed, simulated, fitted),
        "zero_inflation": test_zero_inflation(observed, simulated) if integer else None,
        "outliers": test_outliers(res, simulated, integer, rng),
    }
    diagnostics["notes"] = notes(result.spec.family, diagnostics)
    return res, diagnostics


def residual_table(result: FitResult) -> pd.DataFrame:
    """residuals.csv: the fitted rows (formula columns) with ``observed``, ``fitted``
    and ``scaled_residual``; empty (same columns) when none were computed."""
    if result.frame is None or result.scaled_residuals is None:
        cols = [] if result.frame is None else list(result.frame.columns)
        return pd.DataFrame(columns=cols + ["observed", "fitted", "scaled_residual"])
    out = result.frame.copy()
    for c in out.columns:
        if isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = out[c].astype(str)
    out["observed"] = result.observed
    out["fitted"] = result.fitted
    out["scaled_residual"] = result.scaled_residuals
    return out
