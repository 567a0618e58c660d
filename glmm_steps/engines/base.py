"""The engine-neutral description of a model to fit and of a fitted model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from glmm_steps.families import default_link


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
    # None: the family's default link (see glmm_steps.families.FAMILIES)
    link_name: str | None = None
    # Simulation-based residuals (glmm_steps.residuals): simulations per row (0: none,
    # 250 is DHARMa's default), their seed, and conditional or marginal simulation.
    residual_nsim: int = 250
    residual_seed: int = 0
    residual_simulate: str = "conditional"

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
            link_name=entry.get("link"),
            residual_nsim=int((entry.get("residuals") or {}).get("nsim", 250)),
            residual_seed=int((entry.get("residuals") or {}).get("seed", 0)),
            residual_simulate=(entry.get("residuals") or {}).get("simulate", "conditional"),
        )

    @property
    def link(self) -> str:
        """The model's link: the config's ``link``, else the family's default."""
        return self.link_name or default_link(self.family)

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
    tried, gradient, priors); it is written to fit_stats.json as ``engine_details``."""

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
    # The family's dispersion when it has one, by name: negative binomial
    # {"theta": ...} (variance mu + mu^2/theta), Gamma {"sigma": ..., "shape": ...}
    # (sigma as lme4's sigma(), shape = 1/sigma^2). Empty for the other families.
    dispersion: dict[str, float] = field(default_factory=dict)
    # Simulation-based (DHARMa) residual checks, filled by the fit step: one scaled
    # residual per fitted row (aligned with ``frame``), and the tests' results.
    scaled_residuals: np.ndarray | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the engine returned estimates (they may still carry warnings)."""
        return self.error is None
