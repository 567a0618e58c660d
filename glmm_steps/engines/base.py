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
# the conditional covariance of two random effects of one level (an intercept and a slope)
RANEF_COV_COLUMNS = ["group", "level", "term_a", "term_b", "covariance"]
ANOVA_COLUMNS = ["term", "statistic", "num_df", "den_df", "p_value", "test", "df_method"]
INTERVAL_COLUMNS = ["effect", "group", "term", "conf_low", "conf_high"]
# One bootstrap refit's estimates, one row per parameter (glmm_steps.bootstrap).
REFIT_COLUMNS = ["replicate", "seed", "status", "error", "effect", "group", "term", "estimate"]
# How fixed_effects.csv tests each coefficient, by config value of `inference`.
TESTS = {"satterthwaite": "Satterthwaite t", "kenward_roger": "Kenward-Roger t", "wald": "Wald z"}


def default_inference(entry: dict[str, Any]) -> str:
    """A model entry's ``inference`` when the config leaves it out, as R's defaults:
    ``satterthwaite`` (lmerTest's summary) for a gaussian model fitted by mixedlm,
    else ``wald`` (glmer's z tests; statsmodels' MixedLM)."""
    gaussian = entry.get("family", "gaussian") == "gaussian"
    mixedlm = entry.get("engine", "mixedlm") == "mixedlm"
    return "satterthwaite" if gaussian and mixedlm and entry.get("approximation") is None else "wald"


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
    inference: str = "wald"
    intervals: str = "wald"
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
            # A study model's power test (`test`) is its fixed-effect test.
            inference=(
                entry.get("inference")
                or (entry.get("test") if entry.get("test") != "lrt" else None)
                or default_inference(entry)
            ),
            intervals=entry.get("intervals", "wald"),
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
    covariance in ``variance``). ``ranef``: group, level, term, estimate, cond_sd;
    ``ranef_cov``: the conditional covariances between one level's random effects
    (RANEF_COV_COLUMNS; None where the engine did not compute them), which prediction
    intervals of seen levels with a random slope need.
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
    ``term_columns`` maps each fixed-effect term label to its columns (R's ``assign``).
    ``fixef`` has a ``df`` column when its tests are t tests (``spec.inference``
    satterthwaite or kenward_roger; ``std_error`` is then Kenward-Roger's adjusted one
    for the latter); ``test`` names the test the table's ``df`` and the extract step's
    p-values and intervals follow (``TESTS``; a fallback to another method is in
    ``warnings``). ``anova``: one type III test per fixed-effect term
    (ANOVA_COLUMNS, :mod:`glmm_steps.anova`). ``intervals``: the profile (or
    bootstrap) limits ``spec.intervals`` asks for, INTERVAL_COLUMNS (effect fixed or
    ran_pars, group and term as in ``fixef``/``varcorr``, conf_low, conf_high on the
    SD/correlation scale); empty for Wald intervals.
    The answers computed where the fit lives (:mod:`glmm_steps.answers`): ``vcov``, the
    covariance of the fixed effects (the one ``fixef``'s std_error comes from);
    ``vcov_jacobian`` (one p x p derivative of vcov per variance parameter) and
    ``vcov_varpar`` (their covariance), lmerTest's Satterthwaite parts, None where the
    df are asymptotic or Kenward-Roger's; for a Kenward-Roger fit instead
    ``vcov_adjusted`` (pbkrtest's adjusted covariance, the one its std_errors come
    from), ``kr_P`` and ``kr_W`` (``vcovAdj``'s attributes, for ``Lb_ddf``); ``variance_explained``, ICC and Nakagawa's R² (JSON values, with a
    ``note`` where they do not apply); ``predictions_new``, ``emmeans``, ``contrasts``
    and ``effects``, the tables of the model's ``predict:`` and ``emmeans:`` and of its
    effect plot (None when not asked for)."""

    spec: ModelSpec
    engine_version: str
    fixef: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FIXEF_COLUMNS))
    varcorr: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=VARCORR_COLUMNS))
    ranef: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=RANEF_COLUMNS))
    ranef_cov: pd.DataFrame | None = None
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
    test: str = TESTS["wald"]
    anova: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ANOVA_COLUMNS))
    intervals: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=INTERVAL_COLUMNS))
    vcov: np.ndarray | None = None
    vcov_jacobian: np.ndarray | None = None
    vcov_varpar: np.ndarray | None = None
    vcov_adjusted: np.ndarray | None = None
    kr_P: np.ndarray | None = None
    kr_W: np.ndarray | None = None
    variance_explained: dict[str, Any] = field(default_factory=dict)
    predictions_new: pd.DataFrame | None = None
    emmeans: pd.DataFrame | None = None
    contrasts: pd.DataFrame | None = None
    effects: pd.DataFrame | None = None
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
