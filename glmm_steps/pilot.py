"""A simulated design from a pilot fit (simr's use: ``powerSim`` of a fitted model,
with ``fixef<-`` and ``extend``).

``simulate: {from_model: <model>, fixed_effects: {...}, extend: {...}}`` takes the named
model, fitted to its data file, as the generator of an ordinary ``simulate:`` design: the
grouping factors become nested levels (outermost first, by the pilot's nesting), with
the pilot's numbers of units (a list when unbalanced), the repeated covariate its
distinct values, and the outcome the pilot's estimates: fixed effects, random-intercept
SDs, random slopes' SDs and correlations, and the residual SD. ``fixed_effects``
overrides estimates (the effect size to power for); ``extend`` sets a level's units
(``hospital_id: 20``: 20 hospitals; ``patient_id: 12``: 12 patients per hospital) or
the repeated values (``time: [1, 2, ..., 8]``). The design is then checked, swept and
simulated like any other, so a study's replicates recover the pilot's estimates.

The work is split so that nothing is fitted while the config is checked (which happens
at the Snakefile's parse time, in every job):

- :func:`check` (config check): everything knowable without fitting, from the config
  and the data file's columns: the model exists and is fitted to a data file, its form
  is supported, override names are coefficients of its model matrix, ``extend`` keys
  are grouping factors or the repeated covariate. It returns the design's *structure*
  (levels, repeated values, covariates, arms) with placeholder estimates, so sweeps,
  job counts and the study models are checked as for any design.
- :func:`design_to_file` (the ``pilot_design`` rule): fits the pilot once and writes
  its design (structure and estimates, before overrides) as JSON.
- :func:`point_design` (each batch job): that file with the overrides, the extension
  and the design point's swept values applied.

Supported pilots: gaussian, binomial (0/1) or poisson models with nested grouping
factors, each with a random intercept (``(1 | g)``) and optionally correlated slopes
(``(1 + x | g)``, at most one slope per factor, of a covariate of the fixed part);
a fixed part of plain (untransformed) variables without interactions, where

- of the numeric variables that vary within the innermost unit, the repeated covariate
  is a random slope's variable, else the one with fewest distinct values (the first
  in the formula on a tie); its distinct values become every innermost unit's values;
- every other numeric variable is a covariate, drawn once per unit of the outermost
  level it is constant within (or per row when it varies within the innermost unit):
  binary with the pilot's proportion of 1s when its values are 0 and 1, else normal
  with the pilot's mean and SD over those units;
- at most one factor (a text column, or one in the dataset's ``factors``), constant
  within units of a level, becomes treatment arms at that level: its labels are the
  factor's levels, allocated in the ratio of the pilot's unit counts, its effects the
  pilot's coefficients (``SexMale``).

Anything else (transforms such as ``log(x)`` or ``scale(x)``, interactions, crossed
factors, trials or offsets) is refused in one line when the config is checked.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import pandas as pd

from glmm_steps.errors import ConfigError, GlmmError

FAMILIES = ("gaussian", "binomial", "poisson")


@dataclass(frozen=True)
class _Form:
    """What a pilot's formula says, checked against the supported forms (no data)."""

    name: str
    entry: dict[str, Any]
    data: dict[str, Any]
    formula: Any
    groups: tuple[str, ...]
    slopes: dict[str, str]
    # the fixed part's variables in the formula's order
    variables: tuple[str, ...]


def _form(pilot: dict[str, Any], models: dict[str, Any], datasets: dict[str, Any], where: str) -> _Form:
    """The pilot's model entry, dataset and formula, checked from the config alone."""
    from glmm_steps.formula import parse

    at = f"{where}.from_model"
    name = pilot["from_model"]
    if name not in models:
        raise ConfigError(at, f"no model named '{name}' (models: {', '.join(models)})")
    entry = models[name]
    data = datasets.get(entry["dataset"], {})
    if "path" not in data:
        raise ConfigError(at, f"model '{name}' is not fitted to a data file")
    if entry.get("family", "gaussian") not in FAMILIES:
        raise ConfigError(at, f"a {entry['family']} pilot is not supported (families: {', '.join(FAMILIES)})")
    try:
        formula = parse(entry["formula"])
    except GlmmError as e:
        raise ConfigError(at, f"model '{name}': {e}") from None
    if formula.trials or formula.offset:
        raise ConfigError(at, "a pilot with trials or an offset is not supported")
    if not formula.intercept:
        raise ConfigError(at, "a pilot without an intercept is not supported")
    plain = [t for t in formula.fixed_terms if len(t) == 1 and t[0] in formula.fixed_variables]
    other = [":".join(t) for t in formula.fixed_terms if t not in plain]
    if other or len(plain) != len(formula.fixed_variables):
        shown = ", ".join(other) or ", ".join(formula.fixed_term_labels)
        raise ConfigError(
            at, f"the pilot's fixed part must be plain variables without transforms or interactions (it has: {shown})"
        )
    groups: list[str] = []
    slopes: dict[str, str] = {}
    for term in formula.random:
        if len(term.group) != 1 or not term.intercept or len(term.slopes) > 1 or term.group[0] in groups:
            raise ConfigError(
                at,
                f"random term '{term}' is not supported: use (1 | g) or (1 + x | g), one term per grouping factor",
            )
        if term.slopes and term.slopes[0] not in formula.fixed_variables:
            raise ConfigError(at, f"random term '{term}': its slope must be a variable of the fixed part")
        groups.append(term.group[0])
        if term.slopes:
            slopes[term.group[0]] = term.slopes[0]
    if not groups:
        raise ConfigError(at, f"model '{name}' has no random term")
    return _Form(name, entry, data, formula, tuple(groups), slopes, tuple(t[0] for t in plain))


def _nesting(frame: pd.DataFrame, groups: tuple[str, ...], where: str) -> list[str]:
    """The grouping factors ordered outermost first, checked to nest."""
    order = sorted(groups, key=lambda g: frame[g].nunique())
    for outer, inner in zip(order, order[1:]):
        if (frame.groupby(inner, observed=True)[outer].nunique() > 1).any():
            raise ConfigError(
                where,
                f"'{inner}' is not nested in '{outer}' in the pilot data: from_model supports nested grouping factors",
            )
    return order


def _constant_within(frame: pd.DataFrame, column: str, group: str) -> bool:
    return bool((frame.groupby(group, observed=True)[column].nunique(dropna=False) <= 1).all())


def _number(value: float) -> float | int:
    value = float(value)
    return int(value) if value.is_integer() else value


def _structure(frame: pd.DataFrame, form: _Form, where: str) -> dict[str, Any]:
    """The design's structure from the pilot's model frame (the rows it fits): levels
    with the pilot's units, the repeated covariate's values, covariates and arms. The
    outcome is left out (:func:`_placeholder_outcome`, :func:`_fitted_outcome`)."""
    order = _nesting(frame, form.groups, where)
    innermost = order[-1]
    numeric = [
        v
        for v in form.variables
        if pd.api.types.is_numeric_dtype(frame[v]) and not isinstance(frame[v].dtype, pd.CategoricalDtype)
    ]
    factors = [v for v in form.variables if v not in numeric]
    varying = [v for v in numeric if not _constant_within(frame, v, innermost)]
    if not varying:
        raise ConfigError(
            where,
            f"no variable of the pilot's fixed part varies within '{innermost}': "
            "from_model needs a repeated covariate (e.g. time)",
        )
    # The time-like variable: a slope's, else the one with fewest distinct values (days
    # of a study, not a measurement that varies by row).
    sloped = [v for v in varying if v in form.slopes.values()]
    repeated = sloped[0] if sloped else min(varying, key=lambda v: frame[v].nunique())
    design: dict[str, Any] = {"levels": [], "repeated": {"name": repeated, "values": []}}
    parent = None
    for g in order:
        if parent is None:
            sizes = [frame[g].nunique()]
        else:
            sizes = frame.groupby(parent, observed=True)[g].nunique().tolist()
        design["levels"].append({"name": g, "n": sizes[0] if len(set(sizes)) == 1 else sizes})
        parent = g
    design["repeated"]["values"] = sorted(_number(v) for v in frame[repeated].unique())
    covariates = {}
    for v in numeric:
        if v == repeated:
            continue
        level = next((g for g in order if _constant_within(frame, v, g)), repeated)
        values = frame[v] if level == repeated else frame.groupby(level, observed=True)[v].first()
        if set(values.unique()) <= {0, 1}:
            covariates[v] = {"level": level, "distribution": "binary", "p": float(values.mean())}
        else:
            covariates[v] = {"level": level, "distribution": "normal", "mean": float(values.mean())}
            covariates[v]["sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    if covariates:
        design["covariates"] = covariates
    if len(factors) > 1:
        raise ConfigError(where, f"at most one factor in a pilot's fixed part (it has: {', '.join(factors)})")
    for v in factors:
        level = next((g for g in order if _constant_within(frame, v, g)), None)
        if level is None:
            raise ConfigError(where, f"factor '{v}' varies within '{innermost}': it must be constant within a level")
        if v in form.slopes.values():
            raise ConfigError(where, f"a random slope of factor '{v}' is not supported")
        units = frame.groupby(level, observed=True)[v].first().astype(str)
        labels = sorted(units.unique())
        counts = [int((units == label).sum()) for label in labels]
        divisor = reduce(math.gcd, counts)
        design["arms"] = {
            "name": v,
            "level": level,
            "labels": labels,
            "ratio": [c // divisor for c in counts],
        }
    return design


def _columns(form: _Form) -> list[str]:
    from glmm_steps.model_matrix import factor_columns

    return [*form.formula.columns, *factor_columns(form.data.get("factors", []))]


def _fixed_names(form: _Form, frame: pd.DataFrame, where: str) -> list[str]:
    """The pilot's coefficient names as the model-matrix builder names them (no fit)."""
    from glmm_steps.model_matrix import build

    try:
        return build(form.formula, frame, form.data.get("factors", []), where=form.data["path"]).fixed_names
    except ConfigError:
        raise
    except GlmmError as e:
        raise ConfigError(where, str(e)) from None


def _outcome(form: _Form, design: dict[str, Any], values: dict[str, float], sds: dict, cors: dict) -> dict[str, Any]:
    """The ``outcomes`` mapping from coefficients ``values`` (by the builder's names),
    SDs by (group, term) and correlations by group."""
    arms = design.get("arms")
    numeric = [v for v in form.variables if not (arms and v == arms["name"])]
    family = form.entry.get("family", "gaussian")
    outcome: dict[str, Any] = {
        "family": family,
        "intercept": values["(Intercept)"],
        "coefficients": {v: values[v] for v in numeric},
        "random_sd": {g: sds[(g, "(Intercept)")] for g in form.groups},
        "random_slopes": {g: {"term": t, "sd": sds[(g, t)], "cor": cors.get(g, 0.0)} for g, t in form.slopes.items()},
    }
    if arms:
        outcome["arm_effects"] = {label: values[f"{arms['name']}{label}"] for label in arms["labels"][1:]}
    if form.entry.get("link"):
        outcome["link"] = form.entry["link"]
    if family == "gaussian":
        outcome["residual_sd"] = sds[("Residual", "(Intercept)")]
    return {form.formula.response: outcome}


def _placeholder_outcome(form: _Form, design: dict[str, Any], names: list[str]) -> dict[str, Any]:
    # Stand-ins until the pilot_design job fits: only the structure is checked with them.
    sds = {(g, "(Intercept)"): 1.0 for g in form.groups} | {(g, t): 1.0 for g, t in form.slopes.items()}
    sds[("Residual", "(Intercept)")] = 1.0
    return _outcome(form, design, dict.fromkeys(names, 0.0), sds, {})


def _override(design: dict[str, Any], term: str, value: float, response: str) -> bool:
    """Set coefficient ``term`` (a builder name) of ``design``'s outcome; False when it
    is none of its coefficients."""
    outcome = design["outcomes"][response]
    arms = design.get("arms")
    if term == "(Intercept)":
        outcome["intercept"] = float(value)
    elif term in outcome["coefficients"]:
        outcome["coefficients"][term] = float(value)
    elif arms and term.startswith(arms["name"]) and term[len(arms["name"]) :] in outcome.get("arm_effects", {}):
        outcome["arm_effects"][term[len(arms["name"]) :]] = float(value)
    else:
        return False
    return True


def apply(design: dict[str, Any], pilot: dict[str, Any], where: str) -> dict[str, Any]:
    """A copy of the pilot's ``design`` with the ``from_model`` mapping ``pilot``'s
    ``fixed_effects`` and ``extend`` applied; ``where`` names the mapping in errors
    (ConfigError)."""
    design = copy.deepcopy(design)
    response = next(iter(design["outcomes"]))
    known = ["(Intercept)", *design["outcomes"][response]["coefficients"]]
    arms = design.get("arms")
    if arms:
        known += [f"{arms['name']}{label}" for label in arms["labels"][1:]]
    for term, value in (pilot.get("fixed_effects") or {}).items():
        if not _override(design, term, value, response):
            raise ConfigError(f"{where}.fixed_effects.{term}", f"not a fixed effect of the pilot ({', '.join(known)})")
    repeated = design["repeated"]["name"]
    levels = {lv["name"]: lv for lv in design["levels"]}
    for key, value in (pilot.get("extend") or {}).items():
        if key == repeated:
            if not isinstance(value, list):
                raise ConfigError(f"{where}.extend.{key}", "the repeated covariate extends to a list of values")
            design["repeated"]["values"] = value
        elif key in levels:
            if isinstance(value, list):
                raise ConfigError(f"{where}.extend.{key}", "a level extends to a number of units")
            levels[key]["n"] = int(value)
        else:
            raise ConfigError(
                f"{where}.extend.{key}", f"not a grouping factor or the repeated covariate '{repeated}' of the pilot"
            )
    return design


def check(pilot: dict[str, Any], models: dict[str, Any], datasets: dict[str, Any], where: str) -> dict[str, Any]:
    """The config check of a ``from_model`` mapping ``pilot`` (``models`` and ``datasets``
    are the schema-checked config sections; ``where`` names the mapping in errors).
    Fits nothing: reads the pilot's columns from its data file and builds its model
    matrix. Returns the design's structure with ``fixed_effects`` and ``extend``
    applied and placeholder estimates (0 for coefficients, 1 for SDs) where the pilot
    gives none, to check sweeps and study models against. Raises ConfigError (or
    DataError for a data file that cannot be fitted as declared)."""
    from glmm_steps.data import model_frame, read_data

    form = _form(pilot, models, datasets, where)
    path = form.data["path"]
    frame, _ = model_frame(
        read_data(path, columns=_columns(form)),
        form.formula,
        path,
        form.data.get("factors", []),
        family=form.entry.get("family"),
        drop_missing=form.data.get("drop_missing", False),
    )
    at = f"{where}.from_model"
    design = _structure(frame, form, at)
    names = _fixed_names(form, frame, at)
    arms = design.get("arms")
    expected = ["(Intercept)", *(v for v in form.variables if not (arms and v == arms["name"]))]
    expected += [f"{arms['name']}{label}" for label in arms["labels"][1:]] if arms else []
    if sorted(expected) != sorted(names):
        raise ConfigError(
            at,
            f"the pilot's coefficients ({', '.join(names)}) are not one per variable and per non-reference "
            "level of its factor: a factor with a reference level or contrasts of its own is not supported",
        )
    design["outcomes"] = _placeholder_outcome(form, design, names)
    for term in pilot.get("fixed_effects") or {}:
        if term not in names:
            raise ConfigError(
                f"{where}.fixed_effects.{term}", f"not a fixed effect of '{form.name}' ({', '.join(names)})"
            )
    return apply(design, pilot, where)


def fit_design(data_path: str, name: str, entry: dict[str, Any], factors=(), drop_missing: bool = False) -> dict:
    """The pilot's design: fit model ``name`` (its config ``entry``) to ``data_path``
    (its dataset's ``factors`` and ``drop_missing``) and return the ``simulate:``
    mapping of its structure and estimates, before any override or extension. Raises
    GlmmError (one line) when the fit fails."""
    from glmm_steps.engines.base import ModelSpec
    from glmm_steps.fit import fit_file

    data = {"path": str(data_path), "factors": list(factors), "drop_missing": drop_missing}
    form = _form({"from_model": name}, {name: entry}, {entry["dataset"]: data}, "pilot")
    result = fit_file(data_path, ModelSpec.from_config(name, entry), factors=factors, drop_missing=drop_missing)
    if not result.ok:
        raise GlmmError(f"the pilot fit of '{name}' to {data_path} failed: {result.error}")
    design = _structure(result.frame, form, f"pilot {name}")
    values = dict(zip(result.fixef["term"], result.fixef["estimate"].astype(float)))
    vc = result.varcorr
    sds = {(r.group, r.term): float(r.sd) for r in vc.itertuples() if not str(r.term).startswith("cor(")}
    cors = {r.group: float(r.correlation) for r in vc.itertuples() if str(r.term).startswith("cor(")}
    design["outcomes"] = _outcome(form, design, values, sds, cors)
    return design


def design_to_file(data_path: str, name: str, entry: dict[str, Any], factors, drop_missing: bool, output: str) -> dict:
    """The pilot_design step: :func:`fit_design`, written to ``output`` as JSON (plain
    numbers, no NaN). Returns the design."""
    design = fit_design(data_path, name, entry, factors, drop_missing)
    Path(output).write_text(json.dumps(design, indent=2, allow_nan=False) + "\n")
    return design


def read_design(path: str | Path) -> dict[str, Any]:
    """A design written by :func:`design_to_file`; GlmmError for a file that is not one."""
    try:
        design = json.loads(Path(path).read_text())
        if not (isinstance(design, dict) and {"levels", "repeated", "outcomes"} <= set(design)):
            raise ValueError("not a design")
    except (OSError, ValueError) as e:
        raise GlmmError(
            f"{path}: not a pilot design written by the pilot_design step ({e}); delete it to refit"
        ) from None
    return design


def point_design(path: str | Path, pilot: dict[str, Any], values: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``simulate:`` mapping of one design point of a pilot study: the pilot's
    design file at ``path`` with the ``from_model`` mapping ``pilot``'s overrides and
    extension, then the point's swept ``values`` (dotted keys), applied. ``where``
    names the study's ``simulate`` key in errors."""
    from glmm_steps import study

    design = apply(read_design(path), pilot, where)
    for key, value in values.items():
        design = study.set_key(design, key, value, f"{where}.sweep.{key}")
    return design


def resolve(design: dict[str, Any], files: list[str], where: str) -> dict[str, Any]:
    """A study job's ``simulate:`` mapping from its ``design`` param: the mapping
    itself, or for a study made from a pilot fit (``{"pilot": <from_model mapping>,
    "values": <swept values>}``) :func:`point_design` of its one pilot design file
    (``files``)."""
    if "pilot" not in design:
        return design
    return point_design(files[0], design["pilot"], design["values"], where)
