"""A simulated design from a pilot fit (simr's use: ``powerSim`` of a fitted model,
with ``fixef<-`` and ``extend``).

``simulate: {from_model: <model>, fixed_effects: {...}, extend: {...}}`` fits the named
model to its data file and turns the fit into an ordinary ``simulate:`` design: the
grouping factors become nested levels (outermost first, by the pilot's nesting), with
the pilot's numbers of units (a list when unbalanced), the repeated covariate its
distinct values, and the outcome the pilot's estimates: fixed effects, random-intercept
SDs, a random slope's SD and correlation, and the residual SD. ``fixed_effects``
overrides estimates (the effect size to power for); ``extend`` sets a level's units
(``hospital_id: 20``: 20 hospitals; ``patient_id: 12``: 12 patients per hospital) or
the repeated values (``time: [1, 2, ..., 8]``). The design is then checked, swept and
simulated like any other, so a study's replicates recover the pilot's estimates.

Supported pilots: gaussian, binomial or poisson models whose fixed part is an intercept
and one numeric covariate that varies within the innermost unit (the repeated one),
with nested grouping factors, each with a random intercept and at most one slope of
that covariate.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from glmm_steps.errors import ConfigError


def _nesting(frame, groups: list[str], where: str) -> list[str]:
    """The grouping factors ordered outermost first, checked to nest."""
    order = sorted(groups, key=lambda g: frame[g].nunique())
    for outer, inner in zip(order, order[1:]):
        if (frame.groupby(inner, observed=True)[outer].nunique() > 1).any():
            raise ConfigError(
                where,
                f"'{inner}' is not nested in '{outer}' in the pilot data: from_model supports nested grouping factors",
            )
    return order


def design_spec(pilot: dict[str, Any], models: dict[str, Any], datasets: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``simulate:`` mapping made from a pilot fit: ``pilot`` is the ``from_model``
    mapping (from_model, fixed_effects, extend), ``models`` and ``datasets`` the
    (schema-checked) config sections; ``where`` names the key in errors. Raises
    ConfigError when the pilot model is missing, not fitted to a data file, of an
    unsupported form, or fails to fit."""
    from glmm_steps.engines.base import ModelSpec
    from glmm_steps.fit import fit_file
    from glmm_steps.formula import parse

    name = pilot["from_model"]
    if name not in models:
        raise ConfigError(f"{where}.from_model", f"no model named '{name}' (models: {', '.join(models)})")
    entry = models[name]
    data = datasets.get(entry["dataset"], {})
    if "path" not in data:
        raise ConfigError(f"{where}.from_model", f"model '{name}' is not fitted to a data file")
    formula = parse(entry["formula"])
    if formula.trials or formula.offset:
        raise ConfigError(f"{where}.from_model", "a pilot with trials or an offset is not supported")
    numeric = list(formula.fixed_variables)
    if len(numeric) != 1:
        raise ConfigError(
            f"{where}.from_model",
            f"the pilot's fixed part must be one repeated covariate (it has: {', '.join(numeric) or 'none'})",
        )
    repeated = numeric[0]
    groups = []
    slopes: dict[str, str] = {}
    for term in formula.random:
        if len(term.group) != 1 or not term.intercept or set(term.slopes) - {repeated}:
            raise ConfigError(
                f"{where}.from_model",
                f"random term '{term}' is not supported: use (1 | g) or (1 + {repeated} | g) with one grouping factor",
            )
        groups.append(term.group[0])
        if term.slopes:
            slopes[term.group[0]] = repeated
    spec = ModelSpec.from_config(name, entry)
    result = fit_file(data["path"], spec, factors=data.get("factors", []), drop_missing=data.get("drop_missing", False))
    if not result.ok:
        raise ConfigError(f"{where}.from_model", f"the pilot fit of '{name}' failed: {result.error}")
    frame = result.frame
    if not np.issubdtype(frame[repeated].dtype, np.number):
        raise ConfigError(f"{where}.from_model", f"'{repeated}' is not numeric in the pilot data")
    order = _nesting(frame, groups, f"{where}.from_model")
    levels, parent = [], None
    for g in order:
        sizes = (
            frame.groupby(parent, observed=True)[g].nunique().tolist() if parent is not None else [frame[g].nunique()]
        )
        levels.append({"name": g, "n": sizes[0] if len(set(sizes)) == 1 else sizes})
        parent = g
    fixef = dict(zip(result.fixef["term"], result.fixef["estimate"].astype(float)))
    vc = result.varcorr
    sd = {(r.group, r.term): float(r.sd) for r in vc.itertuples() if not str(r.term).startswith("cor(")}
    cor = {r.group: float(r.correlation) for r in vc.itertuples() if str(r.term).startswith("cor(")}
    outcome: dict[str, Any] = {
        "family": spec.family,
        "intercept": fixef["(Intercept)"],
        "coefficients": {repeated: fixef[repeated]},
        "random_sd": {g: sd[(g, "(Intercept)")] for g in order},
        "random_slopes": {g: {"term": t, "sd": sd[(g, t)], "cor": cor.get(g, 0.0)} for g, t in slopes.items()},
    }
    if spec.family == "gaussian":
        outcome["residual_sd"] = sd[("Residual", "(Intercept)")]
    for term, value in (pilot.get("fixed_effects") or {}).items():
        if term == "(Intercept)":
            outcome["intercept"] = float(value)
        elif term == repeated:
            outcome["coefficients"][repeated] = float(value)
        else:
            raise ConfigError(
                f"{where}.fixed_effects.{term}", f"not a fixed effect of '{name}' ((Intercept), {repeated})"
            )
    design = {
        "levels": levels,
        "repeated": {
            "name": repeated,
            "values": sorted(float(v) if not float(v).is_integer() else int(v) for v in frame[repeated].unique()),
        },
        "outcomes": {formula.response: outcome},
    }
    for key, value in (pilot.get("extend") or {}).items():
        if key == repeated:
            if not isinstance(value, list):
                raise ConfigError(f"{where}.extend.{key}", "the repeated covariate extends to a list of values")
            design["repeated"]["values"] = value
        elif key in order:
            if isinstance(value, list):
                raise ConfigError(f"{where}.extend.{key}", "a level extends to a number of units")
            next(lv for lv in design["levels"] if lv["name"] == key)["n"] = int(value)
        else:
            raise ConfigError(f"{where}.extend.{key}", f"not a grouping factor or '{repeated}' of '{name}'")
    return copy.deepcopy(design)
