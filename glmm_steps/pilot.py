"""A simulated design from a pilot fit (simr's use: ``powerSim`` of a fitted model,
with ``fixef<-`` and ``extend``).

``simulate: {from_model: <model>, fixed_effects: {...}, extend: {...}, missing: {...}}``
takes the named model, fitted to its data file, as the generator of a ``simulate:``
design: the grouping factors become nested levels (outermost first, by the pilot's nesting), with
the pilot's numbers of units (a list when unbalanced), the repeated covariate its
distinct values, the other variables covariates or treatment arms drawn as in the
pilot, and the outcome the pilot's fitted model (:mod:`glmm_steps.outcome_model`): its
formula with its transform state (``scale`` centres, ``poly`` coefficients, factor
levels and contrasts), its fixed effects by lme4's names (``poly(Days, 2)2``,
``age:SexMale``), each random term's SDs and correlations, the residual SD.
``fixed_effects`` overrides estimates by those names (the effect size to power for);
``extend`` sets a level's units (``hospital_id: 20``: 20 hospitals; ``patient_id:
12``: 12 patients per hospital) or the repeated values (``time: [1, 2, ..., 8]``);
``missing`` adds dropout or MCAR missingness as in any design. The design is then
checked, swept and simulated like any other, so a study's replicates recover the
pilot's estimates.

The work is split so that nothing is fitted while the config is checked (which happens
at the Snakefile's parse time, in every job):

- :func:`check` (config check): everything knowable without fitting, from the config
  and the data file's columns: the model exists and is fitted to a data file, its form
  is supported, its model matrix builds, override names are its coefficients,
  ``extend`` keys are grouping factors or the repeated covariate. It returns the
  design's *structure* (levels, repeated values, covariates, arms, the transform
  state) with placeholder estimates, so sweeps, job counts and the study models are
  checked as for any design.
- :func:`design_to_file` (the ``pilot_design`` rule): fits the pilot once and writes
  its design (structure and estimates, before overrides) as JSON, with what it comes
  from (``pilot_fit``: model entry, data file and checksum, versions, convergence).
- :func:`point_design` (each batch job): that file with the overrides, the extension
  and the design point's swept values applied.

Supported pilots: gaussian, binomial (0/1) or poisson models with an intercept and
nested grouping factors, one random term per factor (``(1 | g)``, ``(1 + x + z | g)``,
``(1 + x || g)``, ``(0 + x | g)``; slopes of any variables and transforms the fixed
part may use); a fixed part of any terms (transforms, ``poly``, ``factor()``,
interactions) over variables where

- of the numeric variables that vary within the innermost unit, the repeated covariate
  is a random slope's variable, else the one with fewest distinct values (the first
  in the formula on a tie); its distinct values become every innermost unit's values,
  so it must take no more of them than the largest unit has rows (a schedule the units
  share, such as visits, not irregular times);
- every other numeric variable is a covariate, drawn once per unit of the outermost
  level it is constant within (or per row when it varies within the innermost unit):
  binary with the pilot's proportion of 1s when its values are 0 and 1, else normal
  with the pilot's mean and SD over those units;
- at most one factor (a text column, one in the dataset's ``factors``, or one the
  formula wraps in ``factor()``), constant within units of a level, becomes treatment
  arms at that level: its labels are the factor's levels, allocated in the ratio of
  the pilot's unit counts.

A gaussian pilot's response may be ``log(y)`` (or log2, log10, log1p): it is simulated
on that scale and written back through the inverse. Anything else (crossed factors,
two terms of one factor, trials or offsets, other response transforms) is refused in
one line when the config is checked.
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
# The keys of a ``simulate:`` mapping made from a pilot fit.
KEYS = ("from_model", "fixed_effects", "extend", "missing")


@dataclass(frozen=True)
class _Form:
    """What a pilot's formula says, checked against the supported forms (no data)."""

    name: str
    entry: dict[str, Any]
    data: dict[str, Any]
    formula: Any
    groups: tuple[str, ...]
    # the data columns the fixed part and the random slopes read, in the formula's order
    variables: tuple[str, ...]
    # columns read as factors: the formula's factor() arguments and the dataset's factors
    factor_columns: frozenset[str]
    slope_columns: frozenset[str]
    # the response transform (a key of outcome_model.RESPONSE_INVERSE), None for a column
    response: str | None


def _response(formula, family: str, at: str) -> str | None:
    from glmm_steps.formula import Call, Name
    from glmm_steps.outcome_model import RESPONSE_INVERSE

    node = formula.response_node
    if isinstance(node, Name):
        return None
    if (
        family == "gaussian"
        and isinstance(node, Call)
        and node.fn in RESPONSE_INVERSE
        and len(node.args) == 1
        and isinstance(node.args[0], Name)
    ):
        return node.fn
    raise ConfigError(
        at,
        f"the pilot's response {formula.response} is not supported: use a column, or for a gaussian "
        f"pilot {', '.join(f'{fn}(y)' for fn in RESPONSE_INVERSE)}",
    )


def _form(pilot: dict[str, Any], models: dict[str, Any], datasets: dict[str, Any], where: str) -> _Form:
    """The pilot's model entry, dataset and formula, checked from the config alone."""
    from glmm_steps.formula import columns_of, parse
    from glmm_steps.model_matrix import factor_columns

    at = f"{where}.from_model"
    name = pilot["from_model"]
    if name not in models:
        raise ConfigError(at, f"no model named '{name}' (models: {', '.join(models)})")
    entry = models[name]
    data = datasets.get(entry["dataset"], {})
    if "path" not in data:
        raise ConfigError(at, f"model '{name}' is not fitted to a data file")
    family = entry.get("family", "gaussian")
    if family not in FAMILIES:
        raise ConfigError(at, f"a {family} pilot is not supported (families: {', '.join(FAMILIES)})")
    try:
        formula = parse(entry["formula"])
    except GlmmError as e:
        raise ConfigError(at, f"model '{name}': {e}") from None
    if formula.trials or formula.offset:
        raise ConfigError(at, "a pilot with trials or an offset is not supported")
    if not formula.intercept:
        raise ConfigError(at, "a pilot without an intercept is not supported")
    response = _response(formula, family, at)
    groups: list[str] = []
    for term in formula.random:
        if len(term.group) != 1 or term.group[0] in groups:
            raise ConfigError(
                at,
                f"random term '{term}' is not supported: one term per grouping factor, each a single column "
                "(nested factors are found from the data)",
            )
        groups.append(term.group[0])
    if not groups:
        raise ConfigError(at, f"model '{name}' has no random term")
    read: dict[str, None] = {}
    for term in formula.fixed_terms:
        for label in term:
            read |= dict.fromkeys(columns_of(formula.variables[label]))
    read |= dict.fromkeys(formula.slope_columns)
    used = [g for g in groups if g in read]
    if used:
        raise ConfigError(at, f"grouping factor '{used[0]}' is also a variable of the pilot's fixed part or slopes")
    variables = tuple(c for c in read if c not in formula.response_columns)
    factors = frozenset(formula.factor_columns) | frozenset(factor_columns(data.get("factors", [])))
    return _Form(
        name, entry, data, formula, tuple(groups), variables, factors, frozenset(formula.slope_columns), response
    )


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


def _is_factor(frame: pd.DataFrame, column: str, form: _Form) -> bool:
    col = frame[column]
    return (
        column in form.factor_columns
        or isinstance(col.dtype, pd.CategoricalDtype)
        or not pd.api.types.is_numeric_dtype(col)
        or pd.api.types.is_bool_dtype(col)
    )


def _structure(frame: pd.DataFrame, form: _Form, where: str) -> dict[str, Any]:
    """The design's structure from the pilot's model frame (the rows it fits): levels
    with the pilot's units, the repeated covariate's values, covariates and arms. The
    outcome is left out (:func:`_outcome`)."""
    from glmm_steps.model_matrix import level_text, r_sort_key

    order = _nesting(frame, form.groups, where)
    innermost = order[-1]
    factors = [v for v in form.variables if _is_factor(frame, v, form)]
    numeric = [v for v in form.variables if v not in factors]
    varying = [v for v in numeric if not _constant_within(frame, v, innermost)]
    if not varying:
        raise ConfigError(
            where,
            f"no numeric variable of the pilot varies within '{innermost}': "
            "from_model needs a repeated covariate (e.g. time)",
        )
    # The time-like variable: a slope's, else the one with fewest distinct values (days
    # of a study, not a measurement that varies by row).
    sloped = [v for v in varying if v in form.slope_columns]
    repeated = sloped[0] if sloped else min(varying, key=lambda v: frame[v].nunique())
    # Every innermost unit is simulated at each of the repeated values: a schedule the
    # units share (visits 1..5), not a measurement that differs by unit (irregular
    # times, one row per patient), which would give each unit hundreds of rows.
    distinct, most = frame[repeated].nunique(), int(frame.groupby(innermost, observed=True).size().max())
    if distinct > most:
        raise ConfigError(
            where,
            f"'{repeated}' takes {distinct} distinct values, but no unit of '{innermost}' has more than "
            f"{most} rows: it is not a repeated covariate on a schedule the units share (e.g. visits 1..5), "
            "which from_model needs",
        )
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
        raise ConfigError(where, f"at most one factor in a pilot (it has: {', '.join(factors)})")
    for v in factors:
        level = next((g for g in order if _constant_within(frame, v, g)), None)
        if level is None:
            raise ConfigError(where, f"factor '{v}' varies within '{innermost}': it must be constant within a level")
        units = frame.groupby(level, observed=True)[v].first().map(level_text)
        # R's order of text labels: the study's fits read the simulated column as text.
        labels = sorted(units.unique(), key=r_sort_key)
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


def _matrices(form: _Form, frame: pd.DataFrame, where: str, state: dict[str, Any] | None = None):
    """The pilot's model matrices on its rows (the transform state the data decide, or
    ``state``: the fit's), as the fit step builds them."""
    from glmm_steps.model_matrix import build

    try:
        return build(form.formula, frame, form.data.get("factors", []), state=state, where=form.data["path"])
    except ConfigError:
        raise
    except GlmmError as e:
        raise ConfigError(where, str(e)) from None


def _outcome(form: _Form, matrices, values: dict[str, float], sds: dict, cors: dict) -> dict[str, Any]:
    """The ``outcomes`` mapping from coefficients ``values`` (by the builder's names),
    SDs by (group, term) and correlations by (group, term, term), with the pilot's
    formula and transform state (``matrices``: its model matrices)."""
    family = form.entry.get("family", "gaussian")
    random = []
    for term, block in zip(form.formula.random, matrices.random):
        g, names = term.group[0], list(block.names)
        cor = [[1.0 if a == b else cors.get((g, a, b), cors.get((g, b, a), 0.0)) for b in names] for a in names]
        random.append({"group": g, "terms": names, "sd": [sds[(g, n)] for n in names], "cor": cor})
    outcome: dict[str, Any] = {
        "family": family,
        "intercept": values["(Intercept)"],
        "coefficients": {n: values[n] for n in matrices.fixed_names if n != "(Intercept)"},
        "random_sd": {
            r["group"]: r["sd"][r["terms"].index("(Intercept)")] for r in random if "(Intercept)" in r["terms"]
        },
        "model": {
            "formula": form.formula.text,
            "state": matrices.state,
            "factors": list(form.data.get("factors", [])),
            "response": form.response,
            "random": random,
        },
    }
    if form.entry.get("link"):
        outcome["link"] = form.entry["link"]
    if family == "gaussian":
        outcome["residual_sd"] = sds[("Residual", "(Intercept)")]
    return {form.formula.outcome: outcome}


def _placeholder_outcome(form: _Form, matrices) -> dict[str, Any]:
    # Stand-ins until the pilot_design job fits: only the structure is checked with them.
    sds = {(t.group[0], n): 1.0 for t, b in zip(form.formula.random, matrices.random) for n in b.names}
    sds[("Residual", "(Intercept)")] = 1.0
    return _outcome(form, matrices, dict.fromkeys(matrices.fixed_names, 0.0), sds, {})


def _override(design: dict[str, Any], term: str, value: float, response: str) -> bool:
    """Set coefficient ``term`` (a builder name) of ``design``'s outcome; False when it
    is none of its coefficients."""
    outcome = design["outcomes"][response]
    if term == "(Intercept)":
        outcome["intercept"] = float(value)
    elif term in outcome["coefficients"]:
        outcome["coefficients"][term] = float(value)
    else:
        return False
    return True


def apply(design: dict[str, Any], pilot: dict[str, Any], where: str) -> dict[str, Any]:
    """A copy of the pilot's ``design`` with the ``from_model`` mapping ``pilot``'s
    ``fixed_effects``, ``extend`` and ``missing`` (dropout, MCAR) applied; ``where``
    names the mapping in errors (ConfigError)."""
    design = copy.deepcopy(design)
    if pilot.get("missing"):
        design["missing"] = copy.deepcopy(pilot["missing"])
    response = next(iter(design["outcomes"]))
    known = ["(Intercept)", *design["outcomes"][response]["coefficients"]]
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
    applied and placeholder estimates (0 for coefficients, 1 for SDs, no correlation)
    where the pilot gives none, to check sweeps and study models against. Raises
    ConfigError (or DataError for a data file that cannot be fitted as declared)."""
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
    matrices = _matrices(form, frame, at)
    design["outcomes"] = _placeholder_outcome(form, matrices)
    for term in pilot.get("fixed_effects") or {}:
        if term not in matrices.fixed_names:
            raise ConfigError(
                f"{where}.fixed_effects.{term}",
                f"not a fixed effect of '{form.name}' ({', '.join(matrices.fixed_names)})",
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
    matrices = _matrices(form, result.frame, f"pilot {name}", state=result.transform_state)
    values = dict(zip(result.fixef["term"], result.fixef["estimate"].astype(float)))
    vc = result.varcorr
    sds = {(r.group, r.term): float(r.sd) for r in vc.itertuples() if not str(r.term).startswith("cor(")}
    # by (group, a, b) for the row cor(a,b): term names may hold commas (poly(x, 2)1)
    by_row = {(r.group, r.term): float(r.correlation) for r in vc.itertuples() if str(r.term).startswith("cor(")}
    cors = {
        (term.group[0], a, b): by_row[(term.group_name, f"cor({a},{b})")]
        for term, block in zip(form.formula.random, matrices.random)
        for a in block.names
        for b in block.names
        if (term.group_name, f"cor({a},{b})") in by_row
    }
    design["outcomes"] = _outcome(form, matrices, values, sds, cors)
    design["pilot_fit"] = _provenance(name, entry, data_path, result)
    return design


def _provenance(name: str, entry: dict[str, Any], data_path: str, result) -> dict[str, Any]:
    """What the design's numbers come from: the model entry, the data file and its
    checksum, the engine and package versions, and how the fit went (a study of a
    pilot that did not converge, or is singular, says so in its design file)."""
    from glmm_steps.provenance import package_versions, sha256

    return {
        "model": name,
        "entry": dict(entry),
        "data": str(data_path),
        "data_sha256": sha256(data_path),
        "nobs": int(result.nobs),
        "engine_version": result.engine_version,
        "packages": package_versions(),
        "converged": bool(result.converged),
        "singular": bool(result.singular),
        "warnings": list(result.warnings),
    }


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
