"""Simulate hierarchical (nested) designs with gaussian, binomial and Poisson outcomes.

A design is levels nested outermost first (10 hospitals, then 10 patients in each),
a repeated-measures covariate observed on every innermost unit (visits 1..5), and
one or more outcomes, each with its own fixed effects, random-intercept SDs per
level and family. Every draw comes from ``numpy.random.default_rng`` seeded with
``(seed, crc32(outcome name))``, so an outcome's values depend only on the seed and
its own spec: adding a second outcome never changes the first.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from glmm_steps import designs, families, outcome_model
from glmm_steps.designs import Arms, Covariate, Missing, Sizes, Slope
from glmm_steps.errors import GlmmError
from glmm_steps.outcome_model import OutcomeModel

# numpy's Poisson sampler refuses means near 2**63; the config check keeps designs far below.
MAX_POISSON_MEAN = 1e18


@dataclass(frozen=True)
class Level:
    """A grouping level: ``n`` units inside each unit of the level above, or, when
    ``sizes`` is set, unbalanced sizes (``n`` is then the largest or mean size)."""

    name: str
    n: int
    sizes: Sizes | None = None


@dataclass(frozen=True)
class Outcome:
    """One simulated response: ``intercept + sum(coef * covariate) + random
    intercepts`` on the link scale, then the family's noise."""

    name: str
    family: str
    intercept: float
    coefficients: dict[str, float]
    random_sd: dict[str, float]
    residual_sd: float | None = None
    trials: int = 1
    # By arm label (not the reference arm): the arm's effect, and its effect per unit
    # of the repeated covariate (arm-by-time interaction).
    arm_effects: dict[str, float] = field(default_factory=dict)
    arm_by_time: dict[str, float] = field(default_factory=dict)
    random_slopes: dict[str, Slope] = field(default_factory=dict)
    # None: the family's default link (glmm_steps.families.FAMILIES)
    link_name: str | None = None
    # negative binomial dispersion (variance mu + mu^2/theta); Gamma shape or CV (one of them)
    theta: float | None = None
    shape: float | None = None
    cv: float | None = None
    # A pilot fit's generator (glmm_steps.outcome_model): the fixed part through its
    # formula, ``coefficients`` then by lme4's column names, and its random terms.
    model: OutcomeModel | None = None

    @property
    def link(self) -> str:
        """The outcome's link: the config's, else the family's default."""
        return self.link_name or families.default_link(self.family)

    @property
    def gamma_shape(self) -> float | None:
        """The Gamma shape: ``shape``, or 1/cv^2 from ``cv`` (None when neither is set)."""
        if self.shape is not None:
            return self.shape
        return None if self.cv is None else families.gamma_shape_from_cv(self.cv)


@dataclass(frozen=True)
class Design:
    """A nested design with a repeated covariate and its outcomes, and optionally
    factors crossed with the nesting, treatment arms, covariates and missing data
    (:mod:`glmm_steps.designs`)."""

    levels: tuple[Level, ...]
    repeated_name: str
    repeated_values: tuple[float, ...]
    outcomes: tuple[Outcome, ...] = field(default_factory=tuple)
    crossed: tuple[Level, ...] = ()
    arms: Arms | None = None
    covariates: tuple[Covariate, ...] = ()
    missing: Missing | None = None

    @property
    def nrows(self) -> int:
        """Rows the design produces before missing data (an upper bound for
        unbalanced sizes drawn from a distribution): units times crossed units times visits."""
        units = 1
        for lv in self.levels:
            units *= lv.sizes.largest if lv.sizes is not None else lv.n
        for c in self.crossed:
            units *= c.n
        return int(units) * len(self.repeated_values)

    @property
    def fixed_rows(self) -> bool:
        """Whether every replicate has the same rows (no missing data)."""
        return self.missing is None

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns of the simulated data frame, in order."""
        return (
            tuple(lv.name for lv in self.levels)
            + tuple(c.name for c in self.crossed)
            + (self.repeated_name,)
            + ((self.arms.name,) if self.arms is not None else ())
            + tuple(c.name for c in self.covariates)
            + tuple(o.name for o in self.outcomes)
        )


def factor_columns(spec: dict[str, Any]) -> list[str]:
    """The grouping columns a simulated design writes (its levels' names, from a dataset's
    ``simulate:`` mapping). Their integer ids name units, not amounts: the simulator
    declares them factors, so a fit treats them as such without a note saying it had to."""
    return [level["name"] for level in spec["levels"]]


def design_from_config(spec: dict[str, Any]) -> Design:
    """Build a :class:`Design` from a dataset's ``simulate:`` mapping (already
    schema-checked): ``levels``, ``repeated`` and ``outcomes``."""
    outcomes = tuple(
        Outcome(
            name=name,
            family=o["family"],
            intercept=float(o["intercept"]),
            coefficients={k: float(v) for k, v in (o.get("coefficients") or {}).items()},
            random_sd={k: float(v) for k, v in (o.get("random_sd") or {}).items()},
            residual_sd=float(o["residual_sd"]) if o.get("residual_sd") is not None else None,
            trials=int(o.get("trials", 1)),
            arm_effects={k: float(v) for k, v in (o.get("arm_effects") or {}).items()},
            arm_by_time={k: float(v) for k, v in (o.get("arm_by_time") or {}).items()},
            random_slopes=designs.slopes_from_config(o.get("random_slopes")),
            link_name=o.get("link"),
            theta=float(o["theta"]) if o.get("theta") is not None else None,
            shape=float(o["shape"]) if o.get("shape") is not None else None,
            cv=float(o["cv"]) if o.get("cv") is not None else None,
            model=outcome_model.from_config(o["model"]) if o.get("model") else None,
        )
        for name, o in spec["outcomes"].items()
    )
    return Design(
        levels=tuple(Level(lv["name"], *designs.sizes_from_config(lv["n"])) for lv in spec["levels"]),
        repeated_name=spec["repeated"]["name"],
        repeated_values=tuple(spec["repeated"]["values"]),
        outcomes=outcomes,
        crossed=tuple(Level(c["name"], int(c["n"])) for c in spec.get("crossed") or []),
        arms=designs.arms_from_config(spec.get("arms")),
        covariates=designs.covariates_from_config(spec.get("covariates")),
        missing=designs.missing_from_config(spec.get("missing")),
    )


def _skeleton(design: Design) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Rows of the design and, per level, the unit index of each row (0-based); see
    :func:`glmm_steps.designs.rows`."""
    return designs.rows(design)


def unit_ids(design: Design) -> pd.DataFrame:
    """The rows of ``design`` without outcomes: the unit id of every level, and the
    repeated covariate (what the config check reads to see how levels nest)."""
    return _skeleton(design)[0]


def _draw_outcome(
    design: Design, outcome: Outcome, data: pd.DataFrame, index: dict[str, np.ndarray], seed: int
) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(outcome.name.encode())])
    if outcome.model is not None:
        return _draw_model_outcome(outcome, data, index, rng)
    eta = np.full(len(data), float(outcome.intercept))  # float even when built with an int intercept
    for cov, beta in outcome.coefficients.items():
        eta += beta * data[cov].to_numpy(dtype=float)
    if design.arms is not None:
        arm = index[f"arm:{design.arms.name}"]
        time = data[design.repeated_name].to_numpy(dtype=float)
        for j, label in enumerate(design.arms.labels):
            eta += (outcome.arm_effects.get(label, 0.0) + outcome.arm_by_time.get(label, 0.0) * time) * (arm == j)
    intercepts = {}
    for lv in design.levels:
        n_units = int(index[lv.name].max()) + 1
        # Drawn as sd * z (the same numbers as rng.normal(0, sd)), z kept for a slope's correlation.
        intercepts[lv.name] = rng.normal(0.0, 1.0, size=n_units)
        eta += (outcome.random_sd.get(lv.name, 0.0) * intercepts[lv.name])[index[lv.name]]
    # Drawn after the nested intercepts, so adding them leaves a design's other draws alone.
    for c in design.crossed:
        eta += rng.normal(0.0, outcome.random_sd.get(c.name, 0.0), size=c.n)[index[c.name]]
    for lv_name, slope in outcome.random_slopes.items():
        z = intercepts[lv_name]
        w = rng.normal(0.0, 1.0, size=len(z))
        effects = slope.sd * (slope.cor * z + np.sqrt(1.0 - slope.cor**2) * w)
        eta += effects[index[lv_name]] * data[slope.term].to_numpy(dtype=float)
    return _noise(outcome, eta, rng)


def _draw_model_outcome(
    outcome: Outcome, data: pd.DataFrame, index: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    # The matrices depend on the rows only: built once per design's rows, kept with its
    # unit indexes, not once per replicate.
    key = f"model:{outcome.name}"
    if key not in index:
        index[key] = outcome_model.matrices(outcome.model, data)
    matrices = index[key]
    eta = matrices.X @ outcome_model.coefficient_vector(matrices.fixed_names, outcome.intercept, outcome.coefficients)
    eta = eta + outcome_model.random_part(outcome.model, matrices, index, rng, outcome.random_sd)
    return outcome_model.to_response(outcome.model, _noise(outcome, eta, rng))


def _noise(outcome: Outcome, eta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The outcome's values given its linear predictor ``eta``: the family's draws."""
    if outcome.family == "gaussian":
        return eta + rng.normal(0.0, outcome.residual_sd or 0.0, size=len(eta))
    if outcome.link != families.default_link(outcome.family) or outcome.family in ("negative_binomial", "gamma"):
        mean = families.inverse_link(outcome.link, eta)
        if outcome.family != "binomial" and not np.all((mean > 0) & (mean < MAX_POISSON_MEAN)):
            bad = mean[~((mean > 0) & (mean < MAX_POISSON_MEAN))][0]
            raise GlmmError(
                f"outcome '{outcome.name}': a mean of {bad:.3g} cannot be simulated (it must be "
                f"positive and below {MAX_POISSON_MEAN:.0e}); change its intercept, coefficients "
                "or random_sd"
            )
        return families.draw(
            outcome.family,
            outcome.link,
            eta,
            rng,
            trials=outcome.trials,
            theta=outcome.theta,
            shape=outcome.gamma_shape,
        )
    if outcome.family == "binomial":
        with np.errstate(over="ignore"):  # exp(-eta) = inf for very negative eta gives p = 0, as it should
            p = 1.0 / (1.0 + np.exp(-eta))
        return rng.binomial(outcome.trials, p).astype(np.int64)
    if outcome.family == "poisson":
        mean = np.exp(eta)
        if not np.all(mean < MAX_POISSON_MEAN):
            raise GlmmError(
                f"outcome '{outcome.name}': a Poisson mean reaches {np.max(mean):.3g}, too large to "
                "simulate; lower its intercept, coefficients or random_sd"
            )
        return rng.poisson(mean).astype(np.int64)
    raise ValueError(f"unknown family {outcome.family!r}")


def draw_response(
    design: Design, name: str, seed: int, skeleton: tuple[pd.DataFrame, dict[str, np.ndarray]] | None = None
) -> np.ndarray:
    """The values of outcome ``name`` in the replicate of ``design`` with ``seed``, the
    same numbers :func:`simulate` puts in its column; ``skeleton`` is
    :func:`design_rows`' result, built once for many replicates (a study's refits)."""
    data, index = skeleton if skeleton is not None else _skeleton(design)
    outcome = next(o for o in design.outcomes if o.name == name)
    return _draw_outcome(design, outcome, data, index, seed)


def design_rows(design: Design) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The rows of ``design`` without outcomes and, per level, each row's unit index
    (0-based): what :func:`draw_response` draws on."""
    return _skeleton(design)


def simulate(design: Design, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Simulate one replicate of ``design`` from ``seed``.

    Returns ``(data, truth)``: the data frame (one row per unit and visit; grouping
    columns are integer ids) and a JSON-ready dict of the true parameters per
    outcome (fixed effects, random-effect SDs and variances, residual SD)."""
    data, index = _skeleton(design)
    levels = {lv.name: int(index[lv.name].max()) + 1 for lv in design.levels}
    truth: dict[str, Any] = {"seed": int(seed), "nrows": len(data), "outcomes": {}}
    for outcome in design.outcomes:
        data[outcome.name] = _draw_outcome(design, outcome, data, index, seed)
        if outcome.family == "binomial" and outcome.trials > 1:
            data[f"{outcome.name}_trials"] = outcome.trials
            # lme4's cbind(successes, failures) needs the failures as a column.
            data[f"{outcome.name}_failures"] = outcome.trials - data[outcome.name]
        truth["outcomes"][outcome.name] = {
            "family": outcome.family,
            "link": outcome.link,
            **({"theta": outcome.theta} if outcome.family == "negative_binomial" else {}),
            **({"shape": outcome.gamma_shape, "cv": outcome.gamma_shape**-0.5} if outcome.family == "gamma" else {}),
            "fixed_effects": {"(Intercept)": outcome.intercept, **outcome.coefficients},
            "random_sd": dict(outcome.random_sd),
            "random_variance": {k: v * v for k, v in outcome.random_sd.items()},
            "residual_sd": outcome.residual_sd,
            "trials": outcome.trials if outcome.family == "binomial" else None,
        }
        if outcome.model is not None:
            truth["outcomes"][outcome.name]["random_effects"] = outcome_model.random_truth(
                outcome.model, outcome.random_sd
            )
        elif design.arms is not None:
            a = design.arms
            fixed = truth["outcomes"][outcome.name]["fixed_effects"]
            for label in a.labels[1:]:
                fixed[f"{a.name}{label}"] = outcome.arm_effects.get(label, 0.0)
                fixed[f"{design.repeated_name}:{a.name}{label}"] = outcome.arm_by_time.get(label, 0.0)
        if outcome.random_slopes:
            truth["outcomes"][outcome.name]["random_slopes"] = {
                lv: {"term": sl.term, "sd": sl.sd, "cor": sl.cor} for lv, sl in outcome.random_slopes.items()
            }
    data = designs.apply_missing(data, index, design, seed)
    truth["nrows"] = len(data)
    truth["levels"] = levels
    return data, truth


def write_replicate(data: pd.DataFrame, truth: dict[str, Any], data_path: str, truth_path: str) -> None:
    """Write a simulated replicate: the data as CSV or Parquet by ``data_path``'s
    extension, floats exact (CSV: shortest round-trip form), so both formats hold the
    same numbers and the same seed gives the same bytes; and the true parameters as JSON."""
    import json
    from pathlib import Path

    from glmm_steps.tables import write_table

    write_table(data, data_path)
    Path(truth_path).parent.mkdir(parents=True, exist_ok=True)
    Path(truth_path).write_text(json.dumps(truth, indent=2) + "\n")


def simulate_to_files(spec: dict[str, Any], seed: int, data_path: str, truth_path: str) -> None:
    """The simulate step: simulate one replicate of the ``simulate:`` mapping ``spec``
    and write it to the given paths (see :func:`write_replicate`)."""
    write_replicate(*simulate(design_from_config(spec), seed), data_path, truth_path)
