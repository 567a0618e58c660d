"""Response families and links: which exist, which responses each can model, how to
draw from each, and the negative binomial's dispersion estimated as lme4's ``glmer.nb``.

A family's dispersion is ``theta`` for the negative binomial (variance mu + mu^2/theta,
as MASS and lme4 name it) and ``shape`` for the Gamma (variance mu^2/shape; lme4's
``sigma()`` is 1/sqrt(shape), the coefficient of variation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from glmm_steps.errors import ConfigError

# scipy.special is imported in the functions that use it: with the config check's other
# modules (inference, predict, emmeans, profile) it was 0.17 s of every Snakemake
# start, which needs none of it.

# Every family the workflow knows and its links, the default (canonical, or log for
# the Gamma, as is usual for positive measurements) first.
FAMILIES: dict[str, tuple[str, ...]] = {
    "gaussian": ("identity",),
    "binomial": ("logit", "probit", "cloglog"),
    "poisson": ("log",),
    "negative_binomial": ("log",),
    "gamma": ("log", "inverse"),
}
# Which simulated outcome families a model of each family may fit: its own, and those
# whose values it can model (misspecification studies: overdispersed counts fitted as
# Poisson, Gamma measurements fitted as gaussian).
FITS_OUTCOMES: dict[str, frozenset[str]] = {
    "gaussian": frozenset({"gaussian", "gamma"}),
    "binomial": frozenset({"binomial"}),
    "poisson": frozenset({"poisson", "negative_binomial"}),
    "negative_binomial": frozenset({"poisson", "negative_binomial"}),
    "gamma": frozenset({"gamma"}),
}
# Families whose response is a count, so simulation residuals need randomising.
INTEGER_FAMILIES = frozenset({"binomial", "poisson", "negative_binomial"})
# lme4's glmer.nb: the outer search for log(theta) spans log(theta0) +- 3 and stops at
# this tolerance; theta0 is MASS::theta.ml on the Poisson fit, to 2 * tol.
NB_INTERVAL = 3.0
NB_TOL = 5e-5


def default_link(family: str) -> str:
    """The link a model of ``family`` gets when its config names none."""
    return FAMILIES[family][0]


def inverse_link(link: str, eta: np.ndarray) -> np.ndarray:
    """The mean for linear predictor ``eta`` under ``link`` (response scale)."""
    from scipy import special

    eta = np.asarray(eta, dtype=float)
    with np.errstate(over="ignore", divide="ignore"):
        if link == "identity":
            return eta
        if link == "logit":
            return special.expit(eta)
        if link == "probit":
            return special.ndtr(eta)
        if link == "cloglog":
            return -np.expm1(-np.exp(eta))
        if link == "log":
            return np.exp(eta)
        if link == "inverse":
            return 1.0 / eta
    raise ValueError(f"unknown link {link!r}")


def bad_response(family: str, y: np.ndarray) -> tuple[np.ndarray, str]:
    """Which values of response ``y`` ``family`` cannot model, and what it must be.

    Returns ``(mask, requirement)``: counts (Poisson, negative binomial) must be whole
    and non-negative, a Gamma response positive; other families have no rule here
    (an all-False mask). ``requirement`` reads after the family and column name, e.g.
    ``must be positive``."""
    y = np.asarray(y, dtype=float)
    if family in ("poisson", "negative_binomial"):
        return (y < 0) | (y != np.round(y)), "must be a count (0, 1, 2, ...)"
    if family == "gamma":
        return ~(y > 0), "must be positive (a Gamma density has no zero or negative values)"
    return np.zeros(len(y), dtype=bool), ""


def check_outcome(
    where: str, family: str, link: str | None, theta: float | None, shape: float | None, cv: float | None
) -> None:
    """Config check of a simulated outcome's family settings (``where`` names it):
    the link is one of the family's, a negative binomial outcome has ``theta``, a Gamma
    outcome exactly one of ``shape`` and ``cv``, and no other family has them. Raises
    ConfigError."""
    if link is not None and link not in FAMILIES[family]:
        raise ConfigError(f"{where}.link", f"family {family} takes link {', '.join(FAMILIES[family])}, not '{link}'")
    if family == "negative_binomial" and theta is None:
        raise ConfigError(where, "a negative_binomial outcome needs 'theta' (variance mu + mu^2/theta)")
    if family != "negative_binomial" and theta is not None:
        raise ConfigError(f"{where}.theta", f"only negative_binomial outcomes have one, not {family}")
    if family == "gamma" and (shape is None) == (cv is None):
        raise ConfigError(
            where, "a gamma outcome needs one of 'shape' (variance mu^2/shape) or 'cv' (shape = 1/cv^2), not both"
        )
    if family != "gamma" and (shape is not None or cv is not None):
        key = "shape" if shape is not None else "cv"
        raise ConfigError(f"{where}.{key}", f"only gamma outcomes have one, not {family}")


def draw(
    family: str,
    link: str,
    eta: np.ndarray,
    rng: np.random.Generator,
    *,
    trials: int | np.ndarray = 1,
    theta: float | None = None,
    shape: float | None = None,
) -> np.ndarray:
    """Draw responses of ``family`` with linear predictor ``eta`` under ``link``.

    Binomial: successes out of ``trials``; negative binomial: counts with dispersion
    ``theta`` (variance mu + mu^2/theta); Gamma: values with ``shape`` (CV 1/sqrt(shape)).
    Gaussian noise is the caller's (its scale is a residual SD). Returns int64 counts
    for the count families, floats otherwise."""
    mu = inverse_link(link, eta)
    if family == "binomial":
        return rng.binomial(trials, np.clip(mu, 0.0, 1.0)).astype(np.int64)
    if family == "poisson":
        return rng.poisson(mu).astype(np.int64)
    if family == "negative_binomial":
        # numpy's negative_binomial(n, p) counts failures before n successes: mean
        # n(1-p)/p, so p = theta / (theta + mu) gives mean mu and variance mu + mu^2/theta.
        return rng.negative_binomial(theta, theta / (theta + mu)).astype(np.int64)
    if family == "gamma":
        return rng.gamma(shape, mu / shape)
    raise ValueError(f"draw: no noise model for family {family!r}")


def theta_ml(y: np.ndarray, mu: np.ndarray, limit: int = 20, eps: float = 2 * NB_TOL) -> float:
    """MASS::theta.ml: the maximum-likelihood negative binomial theta for counts ``y``
    with means ``mu`` held fixed (Newton's method from the moment estimate, at most
    ``limit`` steps, stopping when a step is below ``eps``). glmer.nb starts from it,
    with ``mu`` the fitted values of the Poisson GLMM."""
    from scipy import special

    y, mu = np.asarray(y, dtype=float), np.asarray(mu, dtype=float)
    t0 = len(y) / np.sum((y / mu - 1.0) ** 2)
    it, step = 0, 1.0
    while (it := it + 1) < limit and abs(step) > eps:
        t0 = abs(t0)
        score = np.sum(
            special.digamma(t0 + y) - special.digamma(t0) + np.log(t0) + 1.0 - np.log(t0 + mu) - (y + t0) / (mu + t0)
        )
        info = np.sum(
            -special.polygamma(1, t0 + y)
            + special.polygamma(1, t0)
            - 1.0 / t0
            + 2.0 / (mu + t0)
            - (y + t0) / (mu + t0) ** 2
        )
        step = score / info
        t0 += step
    return float(max(t0, 0.0))


def optimize_nb_theta(
    refit: Callable[[float], tuple[Any, float]], theta0: float, tol: float = NB_TOL
) -> tuple[float, Any, int]:
    """lme4's ``optTheta``: minimise -2 logLik of the negative binomial GLMM refitted at
    each theta (``refit(theta) -> (model, loglik)``) over log(theta) in
    log(theta0) +- 3 by Brent's method (R's ``optimize``, which scipy's bounded
    ``minimize_scalar`` implements with the same tolerance rule).

    Returns ``(theta, model at theta, evaluations)``. The model returned is a fit at
    the optimum itself (refitted if Brent's last evaluation was elsewhere)."""
    from scipy import optimize  # here: every Snakemake start loads this module, not the optimizer

    fits: dict[float, Any] = {}

    def deviance(log_theta: float) -> float:
        model, loglik = refit(float(np.exp(log_theta)))
        fits[float(log_theta)] = model
        return -2.0 * loglik if np.isfinite(loglik) else np.inf

    centre = np.log(theta0)
    res = optimize.minimize_scalar(
        deviance, bounds=(centre - NB_INTERVAL, centre + NB_INTERVAL), method="bounded", options={"xatol": tol}
    )
    best = float(res.x)
    evals = len(fits)
    if best not in fits:
        deviance(best)
        evals += 1
    return float(np.exp(best)), fits[best], evals


def dispersion_note(family: str, ratio: float, p: float, nsim: int) -> str:
    """The plain note for a failed dispersion test: which way, the ratio, the p value
    (``p < 1/nsim`` when no simulation was as extreme) and what to consider."""
    direction = "overdispersion" if ratio > 1 else "underdispersion"
    ptext = f"p < {1 / nsim:.2g}" if p == 0 else f"p = {p:.2g}"
    advice = {
        ("poisson", "overdispersion"): "consider family: negative_binomial",
        ("binomial", "overdispersion"): "consider an observation-level random effect (1 | row id)",
    }.get((family, direction), "check the family and the model's terms")
    return f"{direction} (ratio {ratio:.3g}, {ptext}): {advice}"


def gamma_shape_from_cv(cv: float) -> float:
    """The Gamma shape whose coefficient of variation is ``cv`` (shape = 1 / cv^2)."""
    return 1.0 / cv**2


__all__ = [
    "FAMILIES",
    "FITS_OUTCOMES",
    "INTEGER_FAMILIES",
    "default_link",
    "inverse_link",
    "bad_response",
    "check_outcome",
    "draw",
    "theta_ml",
    "optimize_nb_theta",
    "dispersion_note",
    "gamma_shape_from_cv",
]
