"""Convergence checks any engine can run on its own deviance function.

lme4 checks the Hessian of the deviance at the optimum (``check.conv.hess``): at a
true minimum it is positive definite; a negative or zero eigenvalue means the
optimizer stopped at a saddle or on a ridge where the parameters are not
determined, and standard errors built on it mean nothing. Parameters on a
boundary (a variance estimated at zero, a singular fit) are left out, as the
deviance need not curve upwards there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# lme4's deriv12 step and check.conv.hess tolerance.
STEP = 1e-4
TOL = 1e-6


def numerical_hessian(f: Callable[[np.ndarray], float], x: np.ndarray, step: float = STEP) -> np.ndarray:
    """Central-difference Hessian of ``f`` at ``x`` (as lme4's ``deriv12``): a
    symmetric (k, k) array from 2k^2 + 1 evaluations."""
    x = np.asarray(x, dtype=float)
    k = len(x)
    f0 = f(x)
    eye = np.eye(k) * step
    hess = np.empty((k, k))
    for i in range(k):
        hess[i, i] = (f(x + eye[i]) - 2 * f0 + f(x - eye[i])) / step**2
        for j in range(i):
            hess[i, j] = hess[j, i] = (
                f(x + eye[i] + eye[j]) - f(x + eye[i] - eye[j])
                - f(x - eye[i] + eye[j]) + f(x - eye[i] - eye[j])
            ) / (4 * step**2)
    return hess


def hessian_problem(hessian: np.ndarray, tol: float = TOL) -> str | None:
    """What is wrong with a Hessian at an optimum, in lme4's words, or None when it
    is positive definite. ``tol`` is relative to the largest eigenvalue (an absolute
    tolerance would depend on the scale of the data)."""
    hessian = np.asarray(hessian, dtype=float)
    if hessian.size == 0:
        return None
    if not np.all(np.isfinite(hessian)):
        return "Hessian of the deviance could not be evaluated (non-finite values)"
    ev = np.linalg.eigvalsh((hessian + hessian.T) / 2)
    scale = max(1.0, float(np.max(np.abs(ev))))
    negative = int(np.sum(ev < -tol * scale))
    if negative:
        return (f"Hessian of the deviance is not positive definite: {negative} negative "
                f"eigenvalue{'s' if negative > 1 else ''} (smallest {ev.min():.3g}); the optimizer "
                "stopped at a saddle point, not a minimum")
    if np.any(ev < tol * scale):
        return (f"Hessian of the deviance is not positive definite: an eigenvalue is ~0 "
                f"({ev.min():.3g}); some parameters are not determined by the data")
    return None


def check_hessian(deviance: Callable[[np.ndarray], float], par: np.ndarray,
                  free: np.ndarray) -> str | None:
    """Check the Hessian of ``deviance`` at the optimum ``par`` over the parameters
    flagged in the boolean mask ``free`` (the others, on a boundary, stay fixed).
    Returns :func:`hessian_problem`'s message or None."""
    par = np.asarray(par, dtype=float)
    free = np.asarray(free, dtype=bool)
    if not free.any():
        return None

    def on_free(sub: np.ndarray) -> float:
        full = par.copy()
        full[free] = sub
        return float(deviance(full))

    return hessian_problem(numerical_hessian(on_free, par[free]))
