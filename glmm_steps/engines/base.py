"""The engine-neutral description of a model to fit and of a fitted model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


# The statsmodels engine's binomial/Poisson fits, by config value: Bayesian
# approximations, so every output says they are not maximum likelihood. (statsmodels'
# other one, fit_map, is not offered: the joint posterior mode of a hierarchical model
# runs to a zero variance; on the reference study it ended at a patient sd of 4e-44,
# unconverged, after 73 s.)
APPROXIMATIONS = {
    "variational": "variational Bayes (not maximum likelihood)",
}


# The columns of a FitResult's tables, whichever engine fills them.
FIXEF_COLUMNS = ["term", "estimate", "std_error"]
VARCORR_COLUMNS = ["group", "term", "variance", "sd", "correlation"]
RANEF_COLUMNS = ["group", "level", "term", "estimate", "cond_sd"]


@dataclass(frozen=True)
class ModelSpec:
    """What to fit: the model's config entry, as plain values."""

    name: str
    dataset: str
    formula: str
    family: str = "gaussian"
    reml: bool = True
    engine: str = "mixedlm"
    nagq: int = 1
    approximation: str | None = None

    @classmethod
    def from_config(cls, name: str, entry: dict[str, Any]) -> ModelSpec:
        """Build from a model's (schema-checked, defaults filled) config mapping."""
        return cls(
            name=name,
            dataset=entry["dataset"],
            formula=entry["formula"],
            family=entry.get("family", "gaussian"),
            reml=bool(entry.get("reml", True)),
            engine=entry.get("engine", "mixedlm"),
            nagq=int(entry.get("nagq", 1)),
            approximation=entry.get("approximation"),
        )

    @property
    def link(self) -> str:
        """The family's canonical link."""
        return {"gaussian": "identity", "binomial": "logit", "poisson": "log"}[self.family]

    @property
    def maximum_likelihood(self) -> bool:
        """False for the Bayesian approximations (no likelihood, no Wald tests)."""
        return self.approximation is None

    @property
    def method(self) -> str:
        """Estimation method as lme4 reports it (REML, ML, Laplace, AGQ), or the
        Bayesian approximation, labelled as not maximum likelihood."""
        if self.approximation is not None:
            return APPROXIMATIONS[self.approximation]
        if self.family == "gaussian":
            return "REML" if self.reml else "ML"
        return "Laplace" if self.nagq == 1 else f"AGQ({self.nagq})"


@dataclass
class FitResult:
    """A fitted model in engine-neutral form: everything the tables and plots need.

    ``fixef``: columns term, estimate, std_error. ``varcorr``: group, term,
    variance, sd, correlation (correlation rows have term ``cor(a,b)``, the
    covariance in ``variance``). ``ranef``: group, level, term, estimate, cond_sd.
    ``frame``: the rows fitted (formula columns), aligned with ``fitted``,
    ``fitted_marginal`` (fixed effects only) and ``observed``, all on the response
    scale. A failed fit has ``error`` set and empty tables. ``hessian_ok`` is whether
    the deviance's Hessian at the optimum is positive definite (None: not checked).
    ``warnings`` are about the fit's quality; ``notes`` record what was done to the
    data on the way (rows dropped, numeric grouping columns treated as factors).
    ``details`` holds what an engine wants on record beside the numbers (optimizers
    tried, gradient, priors); it is written to fit_stats.json as ``engine_details``.
    ``transform_state`` is what the data decided about the formula's transforms
    (factor levels and contrasts, ``scale`` centres and SDs, ``poly`` coefficients),
    plain JSON values that :func:`glmm_steps.model_matrix.build` reapplies to new rows;
    ``term_columns`` maps each fixed-effect term label to its columns (R's ``assign``)."""

    spec: ModelSpec
    engine_version: str
    fixef: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FIXEF_COLUMNS))
    varcorr: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=VARCORR_COLUMNS))
    ranef: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=RANEF_COLUMNS))
    frame: pd.DataFrame | None = None
    observed: np.ndarray | None = None
    fitted: np.ndarray | None = None
    fitted_marginal: np.ndarray | None = None
    nobs: int = 0
    ngroups: dict[str, int] = field(default_factory=dict)
    loglik: float = float("nan")
    aic: float = float("nan")
    bic: float = float("nan")
    deviance: float = float("nan")
    npar: int = 0
    converged: bool = False
    singular: bool = False
    hessian_ok: bool | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    optimizer: str = ""
    wall_time_s: float = float("nan")
    details: dict[str, Any] = field(default_factory=dict)
    transform_state: dict[str, Any] = field(default_factory=dict)
    term_columns: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the engine returned estimates (they may still carry warnings)."""
        return self.error is None
