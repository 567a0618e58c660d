"""Fitting engines behind one small interface.

An engine is a function ``fit(frame, spec, formula, *, random_effects=True, design=None,
ddf=False, start=None) -> FitResult`` (``random_effects=False``: skip the conditional
modes; ``design``: the shared model matrix; ``ddf``: the df parts of marginal means;
``start``: a study's true covariances to start the optimizer at, where the engine
can) returned by :func:`get_engine`; the rest of the workflow only sees
:class:`~glmm_steps.engines.base.FitResult`.
"""

from __future__ import annotations

from collections.abc import Callable

from glmm_steps.engines.base import FitResult, ModelSpec

Engine = Callable[..., FitResult]

# The families each engine fits and the links it supports for each, canonical first.
SUPPORTED: dict[str, dict[str, tuple[str, ...]]] = {
    "mixedlm": {
        "gaussian": ("identity",),
        "binomial": ("logit", "probit", "cloglog"),
        "poisson": ("log",),
        "negative_binomial": ("log",),
        "gamma": ("log", "inverse"),
    },
    # binomial/poisson by a Bayesian approximation only, when the model asks for it
    "statsmodels": {"gaussian": ("identity",), "binomial": ("logit",), "poisson": ("log",)},
}


def get_engine(name: str) -> Engine:
    """The fit function of engine ``name`` (imported on first use: engines are heavy)."""
    if name == "mixedlm":
        from glmm_steps.engines.mixedlm_engine import fit

        return fit
    if name == "statsmodels":
        from glmm_steps.engines.statsmodels_engine import fit

        return fit
    raise ValueError(f"unknown engine {name!r}")


def engine_version(name: str) -> str:
    """The installed version of engine ``name``'s package."""
    from importlib.metadata import version

    return version({"mixedlm": "mixedlm", "statsmodels": "statsmodels"}[name])
