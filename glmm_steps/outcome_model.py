"""An outcome simulated through a fitted model's formula: a pilot fit's generator (simr's
use of lme4's ``simulate`` on new rows).

The linear predictor is ``X beta + Z b``, both matrices built by the one model-matrix
builder from the pilot's formula and its *transform state* on a simulated design's
rows. The pilot's ``scale`` centres and SDs, ``poly`` coefficients, factor levels and
contrasts are reapplied to the new rows, as R's ``predict(newdata)`` reapplies them
(``makepredictcall``): a coefficient means on the simulated rows what it meant in the
pilot (an effect per pilot SD of age, not per SD of the simulated ages; a quadratic
trend in the pilot's orthogonal basis, also over extended visits). Each ``(expr | g)``
term's effects are drawn per unit of ``g`` from the covariance of its SDs and
correlations, on the term's model-matrix columns: intercepts, numeric, transformed and
factor slopes alike. A gaussian pilot of ``log(y)`` (or log2, log10, log1p) is
simulated on that scale and written back through the inverse, so the study's
``log(y)`` recovers it.

A study's fits compute their own transforms from the simulated rows. Where those code
the rows differently from the pilot (other ``scale`` centres, another ``poly`` basis,
another reference level), :func:`study_fixed_truth` expresses the true fixed part in
the study model's own coefficients (:func:`study_truth`).

The outcome's mapping in a design (``outcomes.<y>.model``, written by
:mod:`glmm_steps.pilot`): ``formula`` (the pilot's), ``state``, ``factors`` (the
pilot dataset's ``factors:``), ``response`` (the response transform or null) and
``random``: per random term ``{group, terms, sd, cor}`` (lme4's column names, SDs, the
correlation matrix). The intercept's SD is the outcome's ``random_sd.<group>``, so a
sweep of it applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from glmm_steps.errors import GlmmError

# The response transforms a pilot may have, by the inverse that writes a draw back.
RESPONSE_INVERSE = {
    "log": np.exp,
    "log2": np.exp2,
    "log10": lambda v: np.power(10.0, v),
    "log1p": np.expm1,
}
# A study's coefficients are the true ones when the projection reproduces the true fixed
# part to this relative accuracy (a model that codes the same columns otherwise).
EXACT = 1e-8


@dataclass(frozen=True)
class Effects:
    """The random effects of one ``(expr | group)`` term: its columns' lme4 names, their
    SDs and correlation matrix."""

    group: str
    terms: tuple[str, ...]
    sd: tuple[float, ...]
    cor: tuple[tuple[float, ...], ...]

    def covariance(self, intercept_sd: float | None) -> np.ndarray:
        """The covariance of the term's effects, the intercept's SD ``intercept_sd`` when
        given (the outcome's ``random_sd``)."""
        sd = np.array(self.sd, dtype=float)
        if intercept_sd is not None and "(Intercept)" in self.terms:
            sd[self.terms.index("(Intercept)")] = intercept_sd
        return np.outer(sd, sd) * np.array(self.cor, dtype=float)


@dataclass(frozen=True, eq=False)
class OutcomeModel:
    """A pilot's formula and transform state, and its random terms' covariances (see the
    module docstring for the mapping it is read from)."""

    formula: str
    state: dict[str, Any]
    factors: tuple
    response: str | None
    random: tuple[Effects, ...]


def from_config(spec: dict[str, Any]) -> OutcomeModel:
    """An :class:`OutcomeModel` from an outcome's ``model`` mapping."""
    return OutcomeModel(
        formula=spec["formula"],
        state=spec["state"],
        factors=tuple(spec.get("factors") or ()),
        response=spec.get("response"),
        random=tuple(
            Effects(
                group=r["group"],
                terms=tuple(r["terms"]),
                sd=tuple(float(v) for v in r["sd"]),
                cor=tuple(tuple(float(v) for v in row) for row in r["cor"]),
            )
            for r in spec.get("random") or ()
        ),
    )


def matrices(model: OutcomeModel, rows):
    """The pilot's model matrices (:class:`glmm_steps.model_matrix.ModelMatrix`, no
    response) on ``rows``, coded with its transform state. Raises DataError naming
    what cannot be coded (a visit of 0 under ``log(visit)``)."""
    from glmm_steps.formula import parse
    from glmm_steps.model_matrix import build

    return build(
        parse(model.formula), rows, model.factors, state=model.state, where="the pilot's model", response=False
    )


def coefficient_vector(names: list[str], intercept: float, coefficients: dict[str, float]) -> np.ndarray:
    """beta in the order of the model matrix's columns ``names``."""
    return np.array([intercept if n == "(Intercept)" else coefficients[n] for n in names], dtype=float)


def random_part(
    model: OutcomeModel, design, index: dict[str, np.ndarray], rng: np.random.Generator, random_sd: dict[str, float]
) -> np.ndarray:
    """One draw of ``Z b``: per random term, effects for every unit of its group (``index``:
    each row's unit) from the term's covariance (eigen-decomposed, so a correlation of
    1 or an SD of 0 draws too), times the term's columns of ``design`` (:func:`matrices`)."""
    out = np.zeros(len(design.X))
    for effects, block in zip(model.random, design.random):
        units = index[effects.group]
        cov = effects.covariance(random_sd.get(effects.group))
        b = rng.multivariate_normal(np.zeros(len(effects.terms)), cov, size=int(units.max()) + 1, method="eigh")
        out += np.sum(b[units] * block.values, axis=1)
    return out


def to_response(model: OutcomeModel, values: np.ndarray) -> np.ndarray:
    """The outcome column from draws on the model's response scale (the inverse of its
    response transform; the draws themselves without one)."""
    if model.response is None:
        return values
    with np.errstate(over="ignore"):
        return RESPONSE_INVERSE[model.response](values)


def largest_linear_predictor(
    model: OutcomeModel, rows, intercept: float, coefficients: dict[str, float], random_sd: dict[str, float]
) -> float:
    """An upper bound of the linear predictor over ``rows``: the largest fixed part plus,
    per random term, 6 SDs of the largest ``z' Sigma z`` over the rows."""
    design = matrices(model, rows)
    if not len(design.X):
        return 0.0
    eta = design.X @ coefficient_vector(design.fixed_names, intercept, coefficients)
    spread = 0.0
    for effects, block in zip(model.random, design.random):
        cov = effects.covariance(random_sd.get(effects.group))
        spread += 6 * float(np.sqrt(np.max(np.einsum("ij,jk,ik->i", block.values, cov, block.values))))
    return float(np.max(eta)) + spread


def random_truth(model: OutcomeModel, random_sd: dict[str, float]) -> dict[str, Any]:
    """The true random effects by group, as a simulated replicate's truth records them:
    ``{group: {terms, sd, cor}}`` (the intercept's SD the outcome's ``random_sd``)."""
    out = {}
    for e in model.random:
        cov = e.covariance(random_sd.get(e.group))
        out[e.group] = {"terms": list(e.terms), "sd": np.sqrt(np.diag(cov)).tolist(), "cor": [list(r) for r in e.cor]}
    return out


def _solve_exactly(target: np.ndarray, basis: np.ndarray) -> np.ndarray | None:
    """A with basis @ A == target (least squares), or None when no A reproduces target
    to EXACT relative accuracy (basis spans something else)."""
    coef, *_ = np.linalg.lstsq(basis, target, rcond=None)
    scale = max(1.0, float(np.max(np.abs(target), initial=0.0)))
    if np.max(np.abs(basis @ coef - target), initial=0.0) > EXACT * scale:
        return None
    return coef


def _same(a_names, a: np.ndarray, b_names, b: np.ndarray) -> bool:
    scale = max(1.0, float(np.max(np.abs(a), initial=0.0)))
    return list(a_names) == list(b_names) and a.shape == b.shape and np.allclose(a, b, rtol=0.0, atol=1e-12 * scale)


@dataclass(frozen=True)
class StudyTruth:
    """The true parameters in a study model's own coefficients, where it codes the rows
    otherwise than the pilot: ``fixed`` by the model's names (None: the pilot's by name
    are the model's), ``random`` by group as :func:`random_truth` (groups absent: the
    pilot's are the model's)."""

    fixed: dict[str, float] | None
    random: dict[str, Any]


def study_truth(
    model: OutcomeModel,
    rows,
    intercept: float,
    coefficients: dict[str, float],
    random_sd: dict[str, float],
    formula,
    factors=(),
) -> StudyTruth:
    """The true parameters of a study model (parsed ``formula``, its dataset's
    ``factors``) fitted to data that ``model`` simulates on ``rows`` (the design's rows
    before missing data). A study's transforms are computed from the simulated rows: a
    ``scale(x)`` per SD of the simulated x, a ``poly`` basis over extended visits,
    another reference level. Where its columns span the pilot's, the truth is what
    reproduces the pilot's: fixed effects c with X_study c = X_pilot beta, and per
    random term effects A b with Z_study A = Z_pilot, so covariance A Sigma A' (least
    squares, exact to EXACT). Where the study codes the rows as the pilot did, or
    leaves out something the pilot has, the pilot's values by name stand (None, or the
    group absent)."""
    from glmm_steps.model_matrix import build

    pilot = matrices(model, rows)
    try:
        study = build(formula, rows, factors, where="the study model", response=False)
    except GlmmError:
        return StudyTruth(None, {})  # the config check reports it; here it only means no study truth
    fixed = None
    if not _same(study.fixed_names, study.X, pilot.fixed_names, pilot.X):
        eta = pilot.X @ coefficient_vector(pilot.fixed_names, intercept, coefficients)
        coef = _solve_exactly(eta, study.X)
        fixed = None if coef is None else dict(zip(study.fixed_names, coef.tolist()))
    by_group = {e.group: (e, block) for e, block in zip(model.random, pilot.random)}
    random: dict[str, Any] = {}
    for term, block in zip(formula.random, study.random):
        if term.group_name not in by_group:
            continue
        effects, pilot_block = by_group[term.group_name]
        if _same(block.names, block.values, pilot_block.names, pilot_block.values):
            continue
        A = _solve_exactly(pilot_block.values, block.values)
        if A is None:
            continue
        S = A @ effects.covariance(random_sd.get(effects.group)) @ A.T
        sd = np.sqrt(np.clip(np.diag(S), 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            cor = np.where(np.outer(sd, sd) > 0, S / np.outer(sd, sd), 0.0)
        np.fill_diagonal(cor, 1.0)
        random[term.group_name] = {"terms": list(block.names), "sd": sd.tolist(), "cor": cor.tolist()}
    return StudyTruth(fixed, random)
