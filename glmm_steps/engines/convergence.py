"""Convergence checks any engine can run on its own deviance function.

lme4 checks the Hessian of the deviance at the optimum (``check.conv.hess``): at a
true minimum it is positive definite. This check differs from lme4's in two ways
that remove its best-known false alarms:

* a negative eigenvalue counts only when stepping along its eigenvector really
  lowers the deviance (the optimizer stopped at a saddle); finite differences on a
  nearly flat deviance produce small negative eigenvalues out of rounding noise;
* parameters on a boundary (a variance estimated at zero) are left out, and a flat
  direction is not reported for a singular fit, where it comes from the boundary
  (e.g. the rotation of a 2x2 covariance factor whose first SD is 0) and the
  ``singular`` flag already says what is wrong.

The deviance is -2 log-likelihood, on an absolute scale, so a curvature below
``FLAT`` (a 95% interval thousands of units wide) means the data do not
determine that direction, whatever the parameters' units.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

STEP = 1e-4  # lme4's deriv12 step, here relative to the parameter's size (absolute below 1)
FLAT = 1e-6  # curvature of the deviance below which a direction is not determined
REL_TOL = 1e-9  # smallest / largest eigenvalue below this: numerically singular (lme4: large eigenvalue ratio)
DROP = 1e-7  # a deviance drop larger than this along a negative direction confirms a saddle


def numerical_hessian(f: Callable[[np.ndarray], float], x: np.ndarray, step: float = STEP) -> np.ndarray:
    """Central-difference Hessian of ``f`` at ``x`` (as lme4's ``deriv12``, with steps
    ``step * max(1, |x_i|)``): a symmetric (k, k) array from 2k^2 + 1 evaluations."""
    x = np.asarray(x, dtype=float)
    k = len(x)
    h = step * np.maximum(1.0, np.abs(x))
    f0 = f(x)
    eye = np.diag(h)
    hess = np.empty((k, k))
    for i in range(k):
        hess[i, i] = (f(x + eye[i]) - 2 * f0 + f(x - eye[i])) / h[i] ** 2
        for j in range(i):
            hess[i, j] = hess[j, i] = (
                f(x + eye[i] + eye[j]) - f(x + eye[i] - eye[j]) - f(x - eye[i] + eye[j]) + f(x - eye[i] - eye[j])
            ) / (4 * h[i] * h[j])
    return hess


def _lowers(f: Callable[[np.ndarray], float], x: np.ndarray, direction: np.ndarray, lower: np.ndarray) -> float:
    """The largest drop of ``f`` found stepping from ``x`` along +/- ``direction``
    (steps of 1e-3 to 1e-1 of the parameters' size, staying within ``lower``)."""
    f0 = f(x)
    scale = np.maximum(1.0, np.abs(x))
    best = 0.0
    for t in (1e-3, 1e-2, 1e-1):
        for sign in (1.0, -1.0):
            y = x + sign * t * direction * scale
            if np.all(y >= lower):
                best = max(best, f0 - f(y))
    return best


def check_hessian(
    deviance: Callable[[np.ndarray], float],
    par: np.ndarray,
    free: np.ndarray,
    lower: np.ndarray | None = None,
    singular: bool = False,
) -> tuple[bool | None, str | None]:
    """Check that ``par`` is a proper minimum of ``deviance`` over the parameters
    flagged in the boolean mask ``free`` (the others, on a boundary, stay fixed).
    ``lower`` are the parameters' lower bounds (default none); ``singular`` says the
    fit is on a boundary, where flat directions are expected.

    Returns ``(ok, message)``: ``(True, None)``; ``(False, why)`` for a saddle point
    or a direction the data do not determine; ``(None, why)`` when the Hessian
    cannot be evaluated (the deviance is not finite next to the optimum)."""
    par = np.asarray(par, dtype=float)
    free = np.asarray(free, dtype=bool)
    lower = np.full(len(par), -np.inf) if lower is None else np.asarray(lower, dtype=float)
    if not free.any():
        return True, None

    def on_free(sub: np.ndarray) -> float:
        full = par.copy()
        full[free] = sub
        return float(deviance(full))

    x = par[free]
    with np.errstate(all="ignore"):
        hess = numerical_hessian(on_free, x)
    if not np.all(np.isfinite(hess)):
        return None, "Hessian not checked: the deviance is not finite next to the optimum"
    ev, vectors = np.linalg.eigh((hess + hess.T) / 2)
    for k in np.flatnonzero(ev < 0):
        drop = _lowers(on_free, x, vectors[:, k], lower[free])
        if drop > DROP:
            return False, (
                f"Hessian of the deviance is not positive definite (eigenvalue {ev[k]:.3g}): the "
                f"deviance drops by {drop:.3g} next to the reported optimum, a saddle point, not a minimum"
            )
    if singular:
        return True, None
    if ev.min() < max(FLAT, REL_TOL * ev.max()):
        return False, (
            f"Hessian of the deviance is not positive definite (smallest eigenvalue {ev.min():.3g}): "
            "some parameters are not determined by the data"
        )
    return True, None
