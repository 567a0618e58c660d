"""Likelihood-profile confidence intervals, as lme4's ``confint(method = "profile")``.

lme4 profiles the ML deviance (a REML fit is refitted by ML first) in the "sdcor"
parametrisation: each random-effect SD and correlation, the residual SD, and each
fixed effect. For one parameter held at a value the deviance is minimised over all
the others; zeta = sign(value - estimate) * sqrt(deviance - minimum) is the signed
root, and the interval's limits are where zeta = -/+ qnorm((1 + level) / 2). lme4
interpolates zeta between profile points with a spline; here the limits are roots
found by Brent's method, so they are the exact ones lme4's spline approximates. A
limit that the profile does not reach before a bound (an SD's 0, a correlation's
+/-1) is that bound, as lme4 reports it.

The engine supplies the deviance as a function of the parameter vector and the
bounds (:func:`profile_limits`); :mod:`glmm_steps.engines.mixedlm_profile` does it
for mixedlm's fits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from glmm_steps.engines.base import INTERVAL_COLUMNS as PROFILE_COLUMNS  # noqa: F401 (the engines' table)
from glmm_steps.errors import ConfigError


def check(name: str, entry: dict[str, Any]) -> None:
    """Refuse ``intervals: profile`` where there is no likelihood to profile (a
    variational fit) or no profile code (engine statsmodels), naming the key."""
    if entry.get("intervals", "wald") != "profile":
        return
    key = f"models.{name}.intervals"
    if entry.get("engine", "mixedlm") != "mixedlm":
        raise ConfigError(key, f"profile intervals are computed with engine mixedlm only, not {entry.get('engine')}")


class ProfileError(RuntimeError):
    """The profile could not be computed (the deviance fell below its minimum: the fit
    was not at the optimum, or an inner optimisation failed)."""


def _minimise(
    deviance: Callable[[np.ndarray], float], start: np.ndarray, lower: np.ndarray, upper: np.ndarray, scale: np.ndarray
) -> tuple[float, np.ndarray]:
    """Minimise ``deviance`` over a box, in parameters divided by ``scale``."""
    from scipy import optimize  # here: every Snakemake start loads this module, not the optimizer

    if len(start) == 0:
        return float(deviance(start)), start
    bounds = list(zip(lower / scale, upper / scale))

    def f(z):
        value = deviance(z * scale)
        return value if math.isfinite(value) else 1e300

    x0 = np.clip(start / scale, lower / scale, upper / scale)
    res = optimize.minimize(
        f, x0, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-9, "maxiter": 2000}
    )
    # A second start from the first optimum removes most of L-BFGS-B's early stops.
    res2 = optimize.minimize(
        f, res.x, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000}
    )
    best = res2 if res2.fun <= res.fun else res
    return float(best.fun), best.x * scale


def profile_limits(
    deviance: Callable[[np.ndarray], float],
    estimate: np.ndarray,
    k: int,
    lower: np.ndarray,
    upper: np.ndarray,
    scale: np.ndarray,
    level: float = 0.95,
) -> tuple[float, float]:
    """The profile interval of parameter ``k``: ``deviance(par)`` is the ML deviance
    (-2 logLik) at a full parameter vector, ``estimate`` its minimiser, ``lower`` and
    ``upper`` the box, ``scale`` a typical size of each parameter's uncertainty (for
    the first steps and the inner optimiser's conditioning). Returns (low, high)."""
    from scipy import optimize, special  # as in _minimise: imported where used, not at parse time

    estimate = np.asarray(estimate, dtype=float)
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    scale = np.asarray(scale, dtype=float)
    free = np.arange(len(estimate)) != k
    base = float(deviance(estimate))
    cutoff = float(special.ndtri(0.5 + level / 2))
    warm = {1: estimate[free].copy(), -1: estimate[free].copy()}

    def profiled(value: float, side: int) -> float:
        def d(rest):
            par = estimate.copy()
            par[k] = value
            par[free] = rest
            return deviance(par)

        dev, rest = _minimise(d, warm[side], lower[free], upper[free], scale[free])
        # An SD is a stationary point of the deviance at 0 (it enters squared), so a
        # start there stays there: restart from the estimates and keep the better one.
        stuck = (rest <= lower[free]) & (estimate[free] > lower[free])
        if stuck.any():
            dev2, rest2 = _minimise(d, estimate[free], lower[free], upper[free], scale[free])
            if dev2 < dev:
                dev, rest = dev2, rest2
        warm[side] = rest
        if dev < base - 1e-6 * max(1.0, abs(base)):
            raise ProfileError(f"the profile's deviance {dev:.10g} is below the fit's {base:.10g}")
        return side * math.sqrt(max(dev - base, 0.0))

    limits = []
    for side in (-1, 1):
        bound = lower[k] if side < 0 else upper[k]
        inside, step = estimate[k], scale[k]
        while True:
            value = estimate[k] + side * step
            if (side < 0 and value <= bound) or (side > 0 and value >= bound):
                value = float(bound)
                if side * profiled(value, side) < cutoff:
                    limits.append(value)
                    break
            zeta = profiled(value, side)
            if side * zeta >= cutoff:
                a, b = sorted((inside, value))
                limits.append(
                    optimize.brentq(
                        lambda v: profiled(v, side) - side * cutoff, a, b, xtol=1e-12 * max(1.0, abs(value)), rtol=1e-12
                    )
                )
                break
            inside, step = value, step * 2
            if step > 1e6 * max(scale[k], abs(estimate[k])):
                limits.append(float(bound))
                break
    return limits[0], limits[1]
