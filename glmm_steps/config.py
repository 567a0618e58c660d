"""Load and check the workflow config; expand it into the list of fits to run.

Checks run in order and stop at the first problem, raised as a one-line
:class:`ConfigError` naming the key path: duplicate keys in the YAML file, the JSON
Schema (``config.schema.yaml``, the same schema a user reads for documentation),
then what a schema cannot say (a model naming a missing dataset, a formula naming a
missing column, ...). Nothing here touches results, so a bad config leaves them as
they were.
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from glmm_steps import formula as formula_mod
from glmm_steps import paths
from glmm_steps import study
from glmm_steps.errors import ConfigError, GlmmError
from glmm_steps.simulate import Design, design_from_config

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
RECOVERY_KEYS = ("alpha", "power_terms")  # model keys that change a study's summary, not its fits


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (plain YAML keeps the last silently,
    so two models with one name would lose one of them)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                "", f"duplicate key '{key}' at line {key_node.start_mark.line + 1} "
                f"(first at line {seen[key] + 1})"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file, refusing duplicate keys. Returns the mapping."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError("", f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except ConfigError as e:
        raise ConfigError("", f"{path}: {e.problem}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError("", f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: expected a mapping with 'datasets' and 'models'")
    return data


def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key_path(error) -> str:
    return ".".join(str(p) for p in error.absolute_path)


def _describe(error) -> tuple[str, str]:
    """Turn a jsonschema error into (key path, problem) in the user's words."""
    where = _key_path(error)
    v = error.validator
    if v == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        key = extra[0] if extra else "?"
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(allowed)})"
        return (f"{where}.{key}" if where else str(key)), f"unknown key{hint}"
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return where, f"missing required key '{missing}'"
    if v == "type":
        return where, f"expected {error.validator_value}, got {error.instance!r}"
    if v == "enum":
        opts = ", ".join(map(str, error.validator_value))
        return where, f"expected one of {opts}, got {error.instance!r}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[v]
        return where, f"must be {sign} {error.validator_value}, got {error.instance!r}"
    if v == "oneOf":
        return where, _dataset_kind_problem(error.instance)
    if v in ("minItems", "minProperties"):
        return where, "must not be empty"
    if v == "uniqueItems":
        return where, f"has repeated values {error.instance!r}"
    if v == "pattern":
        return where, f"{error.instance!r} is not a valid name (letters, digits, _; starts with a letter)"
    return where, error.message


def _dataset_kind_problem(spec: Any) -> str:
    """Why a dataset fits none of its three kinds, in the user's words."""
    if isinstance(spec, dict) and "seeds" in spec and "replicates" in spec:
        return "give either 'seeds' (one full analysis per seed) or 'replicates' (a study), not both"
    if isinstance(spec, dict) and "replicates" in spec and "base_seed" not in spec:
        return "missing required key 'base_seed' (a study derives each replicate's seed from it)"
    return ("a dataset needs either 'path' (a data file), or 'simulate' with 'seeds' "
            "(one analysis per seed) or with 'replicates' and 'base_seed' (a study)")


def _set_defaults(schema: dict[str, Any], instance: Any, root: dict[str, Any]) -> None:
    """Fill the schema's ``default`` values into ``instance`` in place (what
    ``snakemake.utils.validate(set_default=True)`` does), following $refs."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["definitions"][name]
    if not isinstance(instance, dict):
        if isinstance(instance, list) and isinstance(schema.get("items"), dict):
            for item in instance:
                _set_defaults(schema["items"], item, root)
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _set_defaults(sub, instance[key], root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _set_defaults(extra, value, root)


def validate_schema(config: dict[str, Any]) -> dict[str, Any]:
    """Check ``config`` against the JSON Schema; return a copy with defaults filled.

    Raises ConfigError for the most relevant schema violation."""
    import jsonschema

    schema = _schema()
    validator = jsonschema.Draft7Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        # best_match prefers shallow errors; a oneOf failure hides the concrete
        # problem (e.g. a typo inside `simulate`), so look inside it first.
        if error.validator == "oneOf" and error.context:
            deep = [e for e in error.context if e.validator != "required"]
            if deep:
                error = jsonschema.exceptions.best_match(deep)
        raise ConfigError(*_describe(error))
    filled = copy.deepcopy(config)
    _set_defaults(schema, filled, schema)
    return filled


@dataclass(frozen=True)
class Fit:
    """One fit to run: a model on one replicate of its dataset."""

    model: str
    dataset: str
    replicate: str


@dataclass(frozen=True)
class Batch:
    """One batch job of a study: replicates ``first .. last`` of a design point, fitted
    with one model."""

    model: str
    dataset: str
    design: str
    first: int
    last: int

    @property
    def name(self) -> str:
        """The batch's name in paths (its replicate range)."""
        return study.batch_name(self.first, self.last)


@dataclass(frozen=True)
class Plan:
    """A checked config and everything the workflow derives from it.

    ``fits`` are the per-seed analyses; ``study_designs`` maps each study dataset to its
    design points by name (its models' batch jobs are :attr:`batches`)."""

    config: dict[str, Any]
    designs: dict[str, Design]
    fits: tuple[Fit, ...]
    study_designs: dict[str, dict[str, study.DesignPoint]] = field(default_factory=dict)

    @property
    def results(self) -> str:
        """The results folder."""
        return self.config["results_dir"]

    def dataset_of(self, model: str) -> str:
        """Name of the dataset ``model`` is fitted to."""
        return self.config["models"][model]["dataset"]

    def data_path(self, dataset: str, replicate: str) -> str:
        """The data file a fit reads: the simulated file, or the user's own file."""
        spec = self.config["datasets"][dataset]
        if "path" in spec:
            return spec["path"]
        return paths.output_path("data", self.results, dataset=dataset, replicate=replicate)

    def simulated(self) -> list[tuple[str, str]]:
        """(dataset, replicate) pairs the simulate rule must produce."""
        return [
            (name, paths.replicate_id(seed))
            for name, spec in self.config["datasets"].items()
            if "simulate" in spec
            for seed in spec.get("seeds", [])
        ]

    def fit_entry(self, model: str) -> dict[str, Any]:
        """``model``'s config entry without the keys only a study's recovery step reads
        (RECOVERY_KEYS): a fit's params, so changing alpha or power_terms re-summarises a
        study without refitting it."""
        return {k: v for k, v in self.config["models"][model].items() if k not in RECOVERY_KEYS}

    @property
    def study_models(self) -> list[str]:
        """Models fitted to a study dataset, in config order."""
        return [m for m, entry in self.config["models"].items() if entry["dataset"] in self.study_designs]

    def design_names(self, model: str) -> list[str]:
        """Names of the design points ``model``'s study fits, in sweep order."""
        return list(self.study_designs[self.dataset_of(model)])

    def design_point(self, model: str, design: str) -> study.DesignPoint:
        """Design point ``design`` of the study ``model`` is fitted to."""
        return self.study_designs[self.dataset_of(model)][design]

    def batches_of(self, model: str) -> list[Batch]:
        """Every batch job of study model ``model``, by design then replicate range."""
        spec = self.config["datasets"][self.dataset_of(model)]
        return [Batch(model, self.dataset_of(model), design, first, last)
                for design in self.design_names(model)
                for first, last in study.batch_ranges(spec["replicates"], spec["batch_size"])]

    def replicate_seeds(self, model: str, first: int, last: int) -> list[tuple[int, int]]:
        """(replicate index, seed) of replicates ``first .. last`` of ``model``'s study."""
        base = self.config["datasets"][self.dataset_of(model)]["base_seed"]
        return [(i, study.replicate_seed(base, i)) for i in range(first, last + 1)]

    @property
    def batches(self) -> list[Batch]:
        """Every batch job of every study model, by model, design, then replicate range."""
        return [b for model in self.study_models for b in self.batches_of(model)]

    @property
    def job_count(self) -> int:
        """Jobs a fresh run of the default target schedules, counted as Snakemake does."""
        return count_jobs(self.config, self.fits)


def _n_designs(spec: dict[str, Any]) -> int:
    return math.prod(len(values) for values in spec["sweep"].values())


def count_jobs(config: dict[str, Any], fits) -> int:
    """Jobs a fresh run of ``config`` schedules, ``all`` included (as Snakemake counts):
    a simulate job per seed used, fit, extract and plot per per-seed fit (``fits``) and
    their summary, and per study model its batch jobs and one recovery job. Arithmetic
    only, so a typo such as ``replicates: 1000000000`` is counted without expanding it."""
    simulated = {(f.dataset, f.replicate) for f in fits if f.replicate != paths.replicate_id(None)}
    count = len(simulated) + 3 * len(fits) + (1 if fits else 0) + 1
    for model in config["models"].values():
        spec = config["datasets"][model["dataset"]]
        if "replicates" in spec:
            count += study.batch_jobs(spec["replicates"], spec["batch_size"], _n_designs(spec)) + 1
    return count


def _columns_of(name: str, spec: dict[str, Any], design: Design | None) -> tuple[list[str], str]:
    if design is not None:
        cols = list(design.columns)
        cols += [f"{o.name}_trials" for o in design.outcomes if o.family == "binomial" and o.trials > 1]
        return cols, f"dataset '{name}'"
    from glmm_steps.data import read_header

    return read_header(spec["path"], f"datasets.{name}.path"), spec["path"]


def _check_design(name: str, design: Design) -> None:
    where = f"datasets.{name}.simulate"
    level_names = [lv.name for lv in design.levels]
    if len(set(level_names)) != len(level_names):
        raise ConfigError(f"{where}.levels", f"level names repeat: {level_names}")
    taken = set(level_names) | {design.repeated_name}
    for o in design.outcomes:
        if o.name in taken:
            raise ConfigError(f"{where}.outcomes.{o.name}", "outcome name is already a level or the covariate")
        for cov in o.coefficients:
            if cov != design.repeated_name:
                raise ConfigError(
                    f"{where}.outcomes.{o.name}.coefficients.{cov}",
                    f"unknown covariate; the design has '{design.repeated_name}'",
                )
        for lv in o.random_sd:
            if lv not in level_names:
                close = difflib.get_close_matches(lv, level_names, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (levels: {', '.join(level_names)})"
                raise ConfigError(f"{where}.outcomes.{o.name}.random_sd.{lv}", f"unknown level{hint}")
        if o.family == "gaussian" and o.residual_sd is None:
            raise ConfigError(f"{where}.outcomes.{o.name}", "a gaussian outcome needs 'residual_sd'")
        if o.family != "gaussian" and o.residual_sd is not None:
            raise ConfigError(f"{where}.outcomes.{o.name}.residual_sd", f"only gaussian outcomes have one, not {o.family}")


def _check_model(name: str, model: dict[str, Any], config: dict[str, Any],
                 designs: dict[str, Design]) -> None:
    where = f"models.{name}"
    dataset = model["dataset"]
    if dataset not in config["datasets"]:
        known = list(config["datasets"])
        close = difflib.get_close_matches(dataset, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (datasets: {', '.join(known)})"
        raise ConfigError(f"{where}.dataset", f"no dataset named '{dataset}'{hint}")
    try:
        parsed = formula_mod.parse(model["formula"])
        columns, label = _columns_of(dataset, config["datasets"][dataset], designs.get(dataset))
        formula_mod.check_columns(parsed, columns, label)
    except ConfigError:
        raise
    except GlmmError as e:
        raise ConfigError(f"{where}.formula", str(e)) from None
    family = model["family"]
    if parsed.trials and family != "binomial":
        raise ConfigError(f"{where}.formula", "cbind(successes, failures) needs family: binomial")
    if model["nagq"] > 1:
        if family == "gaussian":
            raise ConfigError(f"{where}.nagq", "adaptive quadrature applies to binomial and poisson models only")
        if len(parsed.random) != 1 or parsed.random[0].slopes:
            raise ConfigError(f"{where}.nagq", "nagq > 1 needs a single scalar random effect (1 | g), as in lme4")
    design = designs.get(dataset)
    if design is not None:
        outcome = next((o for o in design.outcomes if o.name == parsed.response), None)
        if outcome is not None and outcome.family != family:
            raise ConfigError(
                f"{where}.family",
                f"'{parsed.response}' is simulated as {outcome.family}, but the model says {family}",
            )


def _study_points(name: str, spec: dict[str, Any]) -> dict[str, study.DesignPoint]:
    """Check a study dataset's sweep and return its design points by name."""
    import jsonschema

    where = f"datasets.{name}.sweep"
    root = _schema()
    validator = jsonschema.Draft7Validator({"$ref": "#/definitions/design", "definitions": root["definitions"]})
    points = study.design_points(spec["simulate"], spec["sweep"], where)
    for point in points:
        key = ",".join(point.values) or "simulate"
        error = jsonschema.exceptions.best_match(validator.iter_errors(point.spec))
        if error is not None:
            _, problem = _describe(error)
            raise ConfigError(f"{where}.{key}", f"{problem} (design point {point.name})")
        _set_defaults(root["definitions"]["design"], point.spec, root)
        _check_design(name, design_from_config(point.spec))
    return {p.name: p for p in points}


def _check_study_keys(name: str, model: dict[str, Any], formula: formula_mod.Formula, is_study: bool) -> None:
    where = f"models.{name}.power_terms"
    terms = model.get("power_terms")
    if terms is None:
        return
    if not is_study:
        raise ConfigError(where, "applies to models of a study dataset (one with 'replicates') only")
    known = ["(Intercept)", *formula.fixed_variables]
    for term in terms:
        if term not in known:
            raise ConfigError(where, f"'{term}' is not a fixed effect of the formula (fixed effects: {', '.join(known)})")


def _check_job_count(config: dict[str, Any], fits) -> None:
    """Refuse a config that makes more jobs than ``max_jobs``, naming the study that
    makes most of them."""
    limit = config["max_jobs"]
    count = count_jobs(config, fits)
    if count <= limit:
        return
    per_dataset: dict[str, int] = {}
    for model in config["models"].values():
        spec = config["datasets"][model["dataset"]]
        if "replicates" in spec:
            jobs = study.batch_jobs(spec["replicates"], spec["batch_size"], _n_designs(spec))
            per_dataset[model["dataset"]] = per_dataset.get(model["dataset"], 0) + jobs
    if per_dataset:
        worst = max(per_dataset, key=per_dataset.get)
        spec = config["datasets"][worst]
        n_models = sum(1 for m in config["models"].values() if m["dataset"] == worst)
        detail = (f"{spec['replicates']:,} replicates in batches of {spec['batch_size']:,} x "
                  f"{_n_designs(spec):,} design point(s) x {n_models} model(s) "
                  f"= {per_dataset[worst]:,} batch jobs")
        where = f"datasets.{worst}.replicates"
    else:
        detail, where = f"{len(fits):,} per-seed fits", "max_jobs"
    raise ConfigError(where, f"this config makes {count:,} jobs ({detail}), more than max_jobs "
                      f"({limit:,}); lower replicates or the sweep, or raise batch_size or max_jobs")


def check_config(config: dict[str, Any], files: list[str | Path] = ()) -> Plan:
    """Check a config (as Snakemake loaded it) and expand it into a :class:`Plan`.

    ``files`` are the YAML files it came from; they are re-read strictly to catch
    duplicate keys, which a plain YAML load silently drops. Raises ConfigError."""
    for f in files:
        read_yaml(f)
    config = validate_schema(dict(config))
    designs: dict[str, Design] = {}
    for name, spec in config["datasets"].items():
        if "simulate" in spec:
            designs[name] = design_from_config(spec["simulate"])
            _check_design(name, designs[name])
        else:
            for key in ("seeds", "replicates"):
                if key in spec:
                    raise ConfigError(f"datasets.{name}.{key}", f"{key} apply to simulated datasets only")
        if spec["sweep"] and "replicates" not in spec:
            raise ConfigError(f"datasets.{name}.sweep", "a sweep needs a study: add 'replicates' and 'base_seed'")
    fits = []
    for name, model in config["models"].items():
        _check_model(name, model, config, designs)
        spec = config["datasets"][model["dataset"]]
        _check_study_keys(name, model, formula_mod.parse(model["formula"]), "replicates" in spec)
        if "replicates" not in spec:
            seeds = spec.get("seeds", [None]) if "simulate" in spec else [None]
            fits += [Fit(name, model["dataset"], paths.replicate_id(s)) for s in seeds]
    # Count before expanding any sweep: a typo must be refused, not built.
    _check_job_count(config, fits)
    study_designs = {name: _study_points(name, spec)
                     for name, spec in config["datasets"].items() if "replicates" in spec}
    return Plan(config=config, designs=designs, fits=tuple(fits), study_designs=study_designs)


def load_config(path: str | Path) -> Plan:
    """Read and check a config file; the entry point for notebooks and tests."""
    return check_config(read_yaml(path))
