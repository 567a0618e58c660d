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
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from glmm_steps import answers, bootstrap, families, inference, paths, pilot, profile, study, tables
from glmm_steps import designs as design_mod
from glmm_steps import formula as formula_mod
from glmm_steps.engines import SUPPORTED, engine_version
from glmm_steps.errors import ConfigError, DataError, GlmmError, abbreviate
from glmm_steps.provenance import sha256
from glmm_steps.simulate import Design, design_from_config, factor_columns, unit_ids
from glmm_steps.versions import version_key

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
RECOVERY_KEYS = ("alpha", "power_terms", "target_power")  # model keys that change a study's summary, not its fits
# One simulated replicate larger than this is a typo (n: 100000 for n: 100), not a
# design: it would exhaust memory in the simulate job instead of failing here.
MAX_SIMULATED_ROWS = 20_000_000
# Fixed-effect terms a formula may expand to: c1*c2*...*c10 is 1,023. An interaction of
# k variables has 2^k - 1 terms, so a typo of a few more stars must be refused, not built.
MAX_FIXED_TERMS = formula_mod.MAX_TERMS
# exp(35) ~ 1.6e15 events per observation: beyond any real count, and near where
# numpy's Poisson sampler gives up.
MAX_LOG_MEAN = 35.0


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (plain YAML keeps the last silently,
    so two models with one name would lose one of them)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool, type(None))):
            # a list or mapping as a key (YAML's "? [a, b]: ..."): no config key is one
            raise ConfigError(
                "", f"line {key_node.start_mark.line + 1}: a {type(key).__name__} used as a key; keys are names"
            )
        if key in seen:
            raise ConfigError(
                "", f"duplicate key '{key}' at line {key_node.start_mark.line + 1} (first at line {seen[key] + 1})"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# A real config has a few levels and a few thousand values. Beyond these a file is a
# mistake or an attack: YAML aliases can make a 1 KB file stand for billions of values
# ("billion laughs"), and deep nesting exhausts Python's stack.
MAX_CONFIG_BYTES = 10_000_000
MAX_YAML_DEPTH = 32
MAX_YAML_VALUES = 100_000


def _yaml_text(path: str | Path) -> str:
    """The text of a config file: UTF-8 (a byte-order mark is allowed), at most
    MAX_CONFIG_BYTES. Raises a one-line ConfigError otherwise."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError("", f"cannot read config file {path}: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError("", f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes; not a config file")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError("", f"{path}: UTF-16 text; save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            "", f"{path} line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save it as UTF-8"
        ) from None


def _check_yaml_shape(text: str, path: str | Path) -> None:
    """Refuse YAML nested deeper than MAX_YAML_DEPTH or standing for more than
    MAX_YAML_VALUES values once its aliases are expanded, before anything is built
    from it. One pass over the parser's events (no recursion, no expansion): each
    anchor's expanded size and depth are recorded when it closes, and an alias adds
    them where it is used."""
    stack: list[list] = []  # per open collection: [anchor, depth below it]
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (values, depth)
    values = 0

    def add(count: int, depth: int, line: int) -> None:
        nonlocal values
        values += count
        if values > MAX_YAML_VALUES:
            raise ConfigError(
                "",
                f"{path} line {line}: stands for more than {MAX_YAML_VALUES:,} values "
                "once its aliases (*name) are expanded; not a config",
            )
        if len(stack) + depth > MAX_YAML_DEPTH:
            raise ConfigError("", f"{path} line {line}: nested more than {MAX_YAML_DEPTH} levels deep")
        if stack:
            stack[-1][1] = max(stack[-1][1], depth)

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            add(1, 1, line)
            stack.append([event.anchor, 0, values])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, depth, start = stack.pop()
            if stack:
                stack[-1][1] = max(stack[-1][1], depth + 1)
            if anchor is not None:
                sizes[anchor] = (values - start + 1, depth + 1)
        elif isinstance(event, yaml.ScalarEvent):
            add(1, 0, line)
            if event.anchor is not None:
                sizes[event.anchor] = (1, 0)
        elif isinstance(event, yaml.AliasEvent):
            add(*sizes.get(event.anchor, (1, 0)), line)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file safely: plain data only (no tags that build objects,
    no templates), UTF-8, bounded in size, depth and alias expansion, and no
    duplicate keys. Returns the mapping; raises a one-line ConfigError naming the
    file (and the line, where there is one)."""
    text = _yaml_text(path)
    try:
        _check_yaml_shape(text, path)
        data = yaml.load(text, Loader=_StrictLoader)
    except ConfigError as e:
        raise ConfigError("", e.problem if e.problem.startswith(str(path)) else f"{path}: {e.problem}") from None
    except yaml.reader.ReaderError as e:
        code = e.character if isinstance(e.character, int) else ord(e.character)
        line = text.count("\n", 0, e.position) + 1
        raise ConfigError("", f"{path} line {line}: character U+{code:04X} is not allowed in YAML") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError("", f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: expected a mapping with 'datasets' and 'models'")
    return data


@functools.cache
def _parsed_schema() -> dict[str, Any]:
    # The project's own schema, not user input: read once per process by libyaml's
    # parser where present (about 0.1 s less of every Snakemake start than pure Python).
    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _schema() -> dict[str, Any]:
    """The config schema (glmm_steps/config.schema.yaml), a fresh copy the caller may change."""
    return copy.deepcopy(_parsed_schema())


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
        return where, f"expected {error.validator_value}, got {abbreviate(error.instance)}"
    if v == "enum":
        opts = ", ".join(map(str, error.validator_value))
        return where, f"expected one of {opts}, got {abbreviate(error.instance)}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[v]
        return where, f"must be {sign} {error.validator_value}, got {abbreviate(error.instance)}"
    if v == "oneOf":
        return where, _dataset_kind_problem(error.instance)
    if v in ("minItems", "minProperties", "minLength"):
        return where, "must not be empty"
    if v == "uniqueItems":
        return where, f"has repeated values {abbreviate(error.instance)}"
    if v == "maxLength":
        return where, f"{abbreviate(error.instance)} is longer than {error.validator_value} characters"
    if v == "pattern":
        return where, f"{abbreviate(error.instance)} is not a valid name (letters, digits, _; starts with a letter)"
    return where, error.message


def _dataset_kind_problem(spec: Any) -> str:
    """Why a dataset fits none of its three kinds, in the user's words."""
    if isinstance(spec, dict) and "seeds" in spec and "replicates" in spec:
        return "give either 'seeds' (one full analysis per seed) or 'replicates' (a study), not both"
    if isinstance(spec, dict) and "replicates" in spec and "base_seed" not in spec:
        return "missing required key 'base_seed' (a study derives each replicate's seed from it)"
    return (
        "a dataset needs either 'path' (a data file), or 'simulate' with 'seeds' "
        "(one analysis per seed) or with 'replicates' and 'base_seed' (a study)"
    )


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
    """One fit to run: a model (at its result version) on one replicate of its dataset."""

    model: str
    dataset: str
    replicate: str
    version: str


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
    versions: dict[str, str]
    # Rows per dataset, where a format set to `auto` needs it: the design's size, or
    # a data file's row count.
    rows: dict[str, int] = field(default_factory=dict)
    study_designs: dict[str, dict[str, study.DesignPoint]] = field(default_factory=dict)
    # A study dataset made from a pilot fit: its `from_model` mapping (from_model,
    # fixed_effects, extend); its design points' specs hold the pilot's structure only.
    pilots: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def results(self) -> str:
        """The results folder."""
        return self.config["results_dir"]

    def dataset_of(self, model: str) -> str:
        """Name of the dataset ``model`` is fitted to."""
        return self.config["models"][model]["dataset"]

    def data_format(self, dataset: str) -> str:
        """csv or parquet: a data file's by its extension; a simulated dataset's from
        its ``format`` key, ``auto`` meaning Parquet above ``tables.LARGE_ROWS`` rows."""
        spec = self.config["datasets"][dataset]
        if "path" in spec:
            return tables.format_of(spec["path"])
        fmt = spec.get("format", "auto")
        return tables.auto_format(self.designs[dataset].nrows) if fmt == "auto" else fmt

    def data_path(self, dataset: str, replicate: str) -> str:
        """The data file a fit reads: the simulated file, or the user's own file."""
        spec = self.config["datasets"][dataset]
        if "path" in spec:
            return spec["path"]
        return paths.output_path(
            "data", self.results, fmt=self.data_format(dataset), dataset=dataset, replicate=replicate
        )

    def table_format(self, model: str) -> str:
        """csv or parquet, the format of ``model``'s predictions and random effects: its
        ``table_format`` key, ``auto`` meaning Parquet when its dataset has more than
        ``tables.LARGE_ROWS`` rows."""
        fmt = self.config["models"][model].get("table_format", "auto")
        return tables.auto_format(self.rows[self.dataset_of(model)]) if fmt == "auto" else fmt

    def models_with_table_format(self, fmt: str) -> list[str]:
        """Names of the models whose predictions and random effects are ``fmt`` files."""
        return [m for m in self.config["models"] if self.table_format(m) == fmt]

    def factors(self, dataset: str) -> list[str]:
        """The columns of ``dataset`` fitted as factors: its ``factors`` key, plus the
        grouping columns a simulated dataset writes (:func:`glmm_steps.simulate.factor_columns`)."""
        spec = self.config["datasets"][dataset]
        declared = factor_columns(spec["simulate"]) if "simulate" in spec else []
        return list(dict.fromkeys([*spec["factors"], *declared]))

    def fits_of(self, model: str) -> list[Fit]:
        """The fits (one per replicate) of ``model``."""
        return [f for f in self.fits if f.model == model]

    def verified(self) -> list[Fit]:
        """Fits whose model has ``verify: true`` (fitted again with the other engine)."""
        return [f for f in self.fits if self.config["models"][f.model]["verify"]]

    def compared(self) -> list[Fit]:
        """Fits whose model names others in ``compare_with``."""
        return [f for f in self.fits if self.config["models"][f.model]["compare_with"]]

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
        return [
            Batch(model, self.dataset_of(model), design, first, last)
            for design in self.design_names(model)
            for first, last in study.batch_ranges(spec["replicates"], spec["batch_size"])
        ]

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
        return count_jobs(self.config, self.fits, self.pilots)

    def pilot_of(self, model: str) -> dict[str, Any] | None:
        """The ``from_model`` mapping of ``model``'s study dataset, or None when its
        design is written out."""
        return self.pilots.get(self.dataset_of(model))


def _n_designs(spec: dict[str, Any]) -> int:
    return math.prod(len(values) for values in spec["sweep"].values())


def count_jobs(config: dict[str, Any], fits, pilots: dict[str, dict[str, Any]] | None = None) -> int:
    """Jobs a fresh run of ``config`` schedules, ``all`` included (as Snakemake counts):
    a simulate job per seed used, fit, extract, plot, effects and effect_plot per
    per-seed fit (``fits``), predict_new and prediction_plot, emmeans for the fits that ask,
    verify and compare for the fits that ask, a manifest per model version, the catalog
    and the summary, per study model its batch jobs, one recovery job and one study_plots
    job, one job writing the report's tables as HTML, and a pilot_design job per pilot
    model a studied dataset is made from (``pilots``: dataset -> from_model mapping).
    Arithmetic only, so a typo such as ``replicates: 1000000000`` is counted without
    expanding it."""
    simulated = {(f.dataset, f.replicate) for f in fits if f.replicate != paths.replicate_id(None)}
    models = config["models"]
    verified = sum(1 for f in fits if models[f.model].get("verify"))
    compared = sum(1 for f in fits if models[f.model].get("compare_with"))
    versions = {f.model for f in fits}  # a manifest per model version, and their catalog
    count = len(simulated) + 3 * len(fits) + verified + compared + len(versions) + 1
    # the answers: an effect table and its plot per fit; predict: adds a table and a
    # plot, emmeans: one job writing both its tables
    count += sum(2 + 2 * bool(models[f.model].get("predict")) + bool(models[f.model].get("emmeans")) for f in fits)
    count += 2 if fits else 0  # the catalog and the summary (a config of studies alone has neither)
    studies = 0
    studied = {m["dataset"] for m in config["models"].values()}
    count += len({p["from_model"] for d, p in (pilots or {}).items() if d in studied})
    for model in config["models"].values():
        spec = config["datasets"][model["dataset"]]
        if "replicates" in spec:
            studies += 1
            count += study.batch_jobs(spec["replicates"], spec["batch_size"], _n_designs(spec)) + 2
    return count + (1 if fits or studies else 0)  # the report's HTML tables


def _columns_of(name: str, spec: dict[str, Any], design: Design | None) -> tuple[list[str], str]:
    if design is not None:
        cols = list(design.columns)
        cols += [
            f"{o.name}_{k}"
            for o in design.outcomes
            if o.family == "binomial" and o.trials > 1
            for k in ("trials", "failures")
        ]
        return cols, f"dataset '{name}'"
    from glmm_steps.data import read_header

    return read_header(spec["path"], f"datasets.{name}.path"), spec["path"]


def _check_outcome_model(where: str, design: Design, outcome) -> None:
    """A pilot's model codes the design's rows (an extended visit of 0 under log(visit)
    does not), and a swept coefficient or random-intercept SD is one of the model's
    (a new key would be drawn by nothing)."""
    from glmm_steps import outcome_model

    try:
        matrices = outcome_model.matrices(outcome.model, unit_ids(design))
    except GlmmError as e:
        raise ConfigError(where, str(e)) from None
    for name in outcome.coefficients:
        if name not in matrices.fixed_names:
            raise ConfigError(
                f"{where}.coefficients.{name}",
                f"not a coefficient of the pilot's model ({', '.join(matrices.fixed_names)})",
            )
    intercepts = [e.group for e in outcome.model.random if "(Intercept)" in e.terms]
    for group in outcome.random_sd:
        if group not in intercepts:
            raise ConfigError(
                f"{where}.random_sd.{group}",
                f"the pilot's model has no random intercept of '{group}' ({', '.join(intercepts) or 'none'})",
            )


def _check_design(name: str, design: Design) -> None:
    where = f"datasets.{name}.simulate"
    level_names = [lv.name for lv in design.levels]
    if len(set(level_names)) != len(level_names):
        raise ConfigError(f"{where}.levels", f"level names repeat: {level_names}")
    design_mod.check(design, where)
    taken = set(design.columns) - {o.name for o in design.outcomes}
    covariates = [design.repeated_name] + [c.name for c in design.covariates]
    grouping = level_names + [c.name for c in design.crossed]
    for o in design.outcomes:
        if o.name in taken:
            raise ConfigError(f"{where}.outcomes.{o.name}", "outcome name is already a level or the covariate")
        if o.model is not None:
            _check_outcome_model(f"{where}.outcomes.{o.name}", design, o)
        for cov in () if o.model is not None else o.coefficients:  # a pilot's are its model's columns
            if cov not in covariates:
                raise ConfigError(
                    f"{where}.outcomes.{o.name}.coefficients.{cov}",
                    f"unknown covariate; the design has {', '.join(repr(c) for c in covariates)}",
                )
        for lv in o.random_sd:
            if lv not in grouping:
                close = difflib.get_close_matches(lv, grouping, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (levels: {', '.join(grouping)})"
                raise ConfigError(f"{where}.outcomes.{o.name}.random_sd.{lv}", f"unknown level{hint}")
        families.check_outcome(f"{where}.outcomes.{o.name}", o.family, o.link_name, o.theta, o.shape, o.cv)
        if o.family == "gaussian" and o.residual_sd is None:
            raise ConfigError(f"{where}.outcomes.{o.name}", "a gaussian outcome needs 'residual_sd'")
        if o.family != "gaussian" and o.residual_sd is not None:
            raise ConfigError(
                f"{where}.outcomes.{o.name}.residual_sd", f"only gaussian outcomes have one, not {o.family}"
            )
        if o.family in ("poisson", "negative_binomial") or (o.family == "gamma" and o.link == "log"):
            eta = design_mod.largest_log_mean(design, o)
            if eta > MAX_LOG_MEAN:
                raise ConfigError(
                    f"{where}.outcomes.{o.name}",
                    f"the log-mean reaches {eta:.3g} (intercept + coefficients x {design.repeated_name} "
                    f"and covariates + arm effects + 6 random-effect SDs): counts near exp({eta:.3g}) cannot be simulated; "
                    f"keep it under {MAX_LOG_MEAN:g}",
                )
    if design.nrows > MAX_SIMULATED_ROWS:
        sizes = " x ".join(str(lv.n) for lv in design.levels)
        raise ConfigError(
            f"{where}.levels",
            f"the design has {design.nrows:,} rows ({sizes} units x "
            f"{len(design.repeated_values)} values of {design.repeated_name}), more than the "
            f"{MAX_SIMULATED_ROWS:,} one replicate may have; check the counts",
        )


def _check_model(
    name: str, model: dict[str, Any], config: dict[str, Any], designs: dict[str, Design]
) -> formula_mod.Formula:
    """Check one model entry against the datasets; return its parsed formula."""
    where = f"models.{name}"
    dataset = model["dataset"]
    if dataset not in config["datasets"]:
        known = list(config["datasets"])
        close = difflib.get_close_matches(dataset, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (datasets: {', '.join(known)})"
        raise ConfigError(f"{where}.dataset", f"no dataset named '{dataset}'{hint}")
    try:
        parsed = formula_mod.parse(model["formula"])
        _check_formula_size(
            where, parsed, designs[dataset].nrows if dataset in designs else None, f"dataset '{dataset}'"
        )
        columns, label = _columns_of(dataset, config["datasets"][dataset], designs.get(dataset))
        formula_mod.check_columns(parsed, columns, label)
    except (ConfigError, DataError):
        raise
    except GlmmError as e:
        raise ConfigError(f"{where}.formula", str(e)) from None
    family = model["family"]
    if parsed.trials and family != "binomial":
        raise ConfigError(f"{where}.formula", "cbind(successes, failures) needs family: binomial")
    if model["nagq"] > 1:
        if family not in ("binomial", "poisson"):
            raise ConfigError(f"{where}.nagq", "adaptive quadrature applies to binomial and poisson models only")
        if len(parsed.random) != 1 or parsed.random[0].slopes:
            raise ConfigError(f"{where}.nagq", "nagq > 1 needs a single scalar random effect (1 | g), as in lme4")
    links = SUPPORTED[model["engine"]]
    if family not in links:
        raise ConfigError(
            f"{where}.family", f"engine {model['engine']} does not fit family {family} (it fits {', '.join(links)})"
        )
    link = model.get("link", links[family][0])
    if link not in links[family]:
        raise ConfigError(
            f"{where}.link",
            f"engine {model['engine']} does not support link '{link}' for family "
            f"{family} (supported: {', '.join(links[family])})",
        )
    if dataset in designs:
        _check_simulated_model(where, parsed, family, designs[dataset], dataset)
    _check_engine(name, model, parsed, config["datasets"][dataset], designs.get(dataset))
    inference.check(name, model)
    profile.check(name, model)
    bootstrap.check(name, model)
    return parsed


def _check_formula_size(where: str, parsed: formula_mod.Formula, rows: int | None, label: str) -> None:
    """Refuse a formula whose fixed part has more terms than ``rows`` (each term is at
    least one column); the parser itself stops an expansion past MAX_FIXED_TERMS."""
    terms = len(parsed.fixed_terms)
    if rows is not None and terms > rows:
        raise ConfigError(
            f"{where}.formula",
            f"the fixed part expands to {terms:,} terms, more than the "
            f"{rows:,} rows of {label}: they cannot all be estimated",
        )


def _check_simulated_model(where: str, parsed: formula_mod.Formula, family: str, design: Design, dataset: str) -> None:
    """What a model can only get wrong about a simulated dataset: its response must be
    a simulated outcome whose values the model's family can model (its own family, or
    see families.FITS_OUTCOMES; successes out of trials as
    ``cbind(y, y_failures)``), and each grouping factor must have 2 or more units."""
    outcomes = {o.name: o for o in design.outcomes}
    name = parsed.outcome
    outcome = outcomes.get(name)
    if outcome is None:
        raise ConfigError(
            f"{where}.formula",
            f"the response '{name}' is not a simulated outcome of dataset "
            f"'{dataset}' (outcomes: {', '.join(outcomes)})",
        )
    if outcome.family not in families.FITS_OUTCOMES[family]:
        raise ConfigError(f"{where}.family", f"'{name}' is simulated as {outcome.family}, but the model says {family}")
    as_counts = parsed.trials in ((name, f"{name}_failures"), (name, f"{name}_trials"))
    if (
        family == "binomial"
        and outcome.trials > 1
        and not (as_counts and parsed.trials_total == parsed.trials[1].endswith("_trials"))
    ):
        raise ConfigError(
            f"{where}.formula",
            f"'{name}' is simulated as successes out of {outcome.trials} trials "
            f"(values 0..{outcome.trials}, outside 0..1): write cbind({name}, {name}_failures) "
            f"or cbind({name}, {name}_trials - {name})",
        )
    from glmm_steps.model_matrix import build

    try:
        # The right-hand side on the design's own rows: log(visit) with a visit 0, a
        # poly() degree above the visits, ... stop here, not in every replicate.
        build(parsed, unit_ids(design), where=f"dataset '{dataset}'", response=False)
    except GlmmError as e:
        raise ConfigError(f"{where}.formula", str(e)) from None
    # ids are numbered across the design, so a level's units multiply down
    units = design_mod.unit_counts(design)
    units[design.repeated_name] = len(set(design.repeated_values))
    for term in parsed.random:
        levels = max(units.get(g, 2) for g in term.group)
        if levels < 2:
            raise ConfigError(
                f"{where}.formula",
                f"grouping factor '{term.group_name}' has only 1 level in "
                f"dataset '{dataset}'; a random effect needs at least 2",
            )
        if family == "gaussian" and levels >= design.nrows:
            raise ConfigError(
                f"{where}.formula",
                f"grouping factor '{term.group_name}' has as many levels "
                f"({levels}) as dataset '{dataset}' has rows; its random effect cannot be told "
                "apart from the residual",
            )


def _check_finite(value: Any, where: str = "") -> None:
    """Refuse NaN and infinity anywhere (YAML reads .nan and .inf as numbers, which the
    schema's ``type: number`` accepts)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(where, f"must be a finite number, got {value}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}.{i}")


# Longer folder paths leave no room below them for the outputs' own names.
MAX_RESULTS_DIR = 1024


def _check_paths(config: dict[str, Any]) -> None:
    """The results folder and data files are paths with one meaning for every tool: no
    leading ``~`` (the shell and pandas expand it, Snakemake does not, so a step would
    write outside the folder Snakemake checks), no control characters, and no braces in
    the results folder (Snakemake reads them as wildcards in every output)."""
    entries = [("results_dir", config["results_dir"])]
    entries += [(f"datasets.{n}.path", d["path"]) for n, d in config["datasets"].items() if "path" in d]
    for where, value in entries:
        if value.startswith("~"):
            raise ConfigError(
                where,
                f"{abbreviate(value)} starts with '~', which Snakemake does not expand; "
                "write the path out in full (e.g. /home/me/...) or relative to the working directory",
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ConfigError(where, f"{abbreviate(value)} holds a control character (a line break?)")
    results = config["results_dir"]
    if "{" in results or "}" in results:
        raise ConfigError(
            "results_dir",
            f"{abbreviate(results)} holds a brace, which Snakemake reads as a "
            "wildcard in every output path; choose a folder name without braces",
        )
    if len(results) > MAX_RESULTS_DIR:
        raise ConfigError("results_dir", f"{abbreviate(results)} is longer than {MAX_RESULTS_DIR:,} characters")


def _check_data_file(name: str, spec: dict[str, Any], models: list[tuple[dict[str, Any], Any]]) -> int:
    """Read the columns the models need from a data file once, and check them as the
    fit step will (missing values, text in numbers, one-level groups, a response
    the family cannot model, ...), so bad data stops the run before any job.
    Returns the file's number of data rows."""
    from glmm_steps.data import model_frame, read_data, read_header
    from glmm_steps.model_matrix import build, factor_columns

    header = read_header(spec["path"], f"datasets.{name}.path")
    declared = _factor_columns(name, spec["factors"])
    for i, col in enumerate(declared):
        if col not in header:
            close = difflib.get_close_matches(col, header, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (columns: {', '.join(header)})"
            raise ConfigError(f"datasets.{name}.factors.{i}", f"no column '{col}' in {spec['path']}{hint}")
    needed = {c for _, parsed in models for c in parsed.columns} | set(factor_columns(spec["factors"]))
    frame = read_data(spec["path"], columns=needed)
    for model, parsed in models:
        fitted, _ = model_frame(
            frame, parsed, spec["path"], spec["factors"], family=model["family"], drop_missing=spec["drop_missing"]
        )
        # The fit step's own model matrix: a transform that is not finite (log of 0), a
        # level the factor options leave out, a factor split by '||' stop the run here.
        build(parsed, fitted, spec["factors"], where=spec["path"])
    return len(frame)


def _factor_columns(name: str, factors: list) -> list[str]:
    """The columns a dataset's ``factors:`` list names (each item a column or a mapping
    with ``column``), checking the mappings' options."""
    from glmm_steps.model_matrix import factor_options

    try:
        return list(factor_options(factors))
    except ConfigError as e:
        raise ConfigError(f"datasets.{name}.{e.path}", e.problem) from None


def _grouping_frame(spec: dict[str, Any], design: Design | None, parsed) -> Any:
    """The grouping columns of a dataset (read from the file, or the simulated ids),
    to check how its factors nest."""
    cols = list(parsed.grouping_factors)
    if design is not None:
        return unit_ids(design)[cols]
    from glmm_steps.data import read_data

    return read_data(spec["path"]).loc[:, cols].dropna()


def _check_engine(name: str, model: dict[str, Any], parsed, spec: dict[str, Any], design: Design | None) -> None:
    """What the chosen engine (and `verify`'s second engine) can fit: statsmodels has
    one grouping factor with correlated effects, no quadrature, and only Bayesian
    approximations for binomial/poisson models."""
    from glmm_steps.engines.statsmodels_engine import containment, layout, needs_nesting

    where = f"models.{name}"
    family, engine, approx = model["family"], model["engine"], model.get("approximation")
    if approx is not None and (engine != "statsmodels" or family == "gaussian"):
        raise ConfigError(
            f"{where}.approximation", "applies to engine: statsmodels with family binomial or poisson only"
        )
    if engine == "statsmodels" and model["nagq"] > 1:
        raise ConfigError(f"{where}.nagq", "adaptive quadrature is engine mixedlm's; statsmodels has none")
    if engine == "statsmodels" and family != "gaussian" and approx is None:
        raise ConfigError(
            f"{where}.approximation",
            f"engine statsmodels fits {family} models only by a Bayesian approximation, not maximum "
            "likelihood: set approximation: variational, or use engine: mixedlm",
        )
    if model["verify"] and family != "gaussian":
        raise ConfigError(
            f"{where}.verify",
            "cross-engine verification compares maximum-likelihood fits, and statsmodels has "
            f"none for {family} models (gaussian only)",
        )
    if engine != "statsmodels" and not model["verify"]:
        return
    # Which factor can be MixedLM's groups depends on how the factors nest in the data;
    # read them only when a correlated term makes it matter.
    contains = containment(_grouping_frame(spec, design, parsed), parsed) if needs_nesting(parsed) else None
    try:
        layout(parsed, family, contains)
    except GlmmError as e:
        raise ConfigError(f"{where}.formula", str(e)) from None


def _check_comparisons(config: dict[str, Any], formulas: dict[str, Any]) -> None:
    """`compare_with` names other models fitted to the same data and response, each
    with a likelihood (no Bayesian approximation)."""
    models = config["models"]
    for name, model in models.items():
        where = f"models.{name}.compare_with"
        for other in model["compare_with"]:
            if other not in models:
                close = difflib.get_close_matches(other, list(models), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(where, f"no model named '{other}'{hint}")
            if other == name:
                raise ConfigError(where, "a model cannot be compared with itself")
            theirs = models[other]
            if theirs["dataset"] != model["dataset"]:
                raise ConfigError(
                    where,
                    f"'{other}' is fitted to dataset '{theirs['dataset']}', "
                    f"this model to '{model['dataset']}'; compared models share their data",
                )
            if formulas[other].response != formulas[name].response or theirs["family"] != model["family"]:
                raise ConfigError(
                    where,
                    f"'{other}' models {theirs['family']} '{formulas[other].response}', this "
                    f"model {model['family']} '{formulas[name].response}'; likelihoods "
                    "of different responses are not comparable",
                )
            for m, entry in ((name, model), (other, theirs)):
                if entry.get("approximation"):
                    raise ConfigError(where, f"'{m}' is a Bayesian approximation without a log-likelihood to compare")


def _without_models(spec: dict[str, Any]) -> dict[str, Any]:
    """A design point's mapping without its outcomes' ``model`` (a pilot's generator,
    made by :func:`glmm_steps.pilot.check`, not a config key the schema knows)."""
    outcomes = spec.get("outcomes") or {}
    if not any(isinstance(o, dict) and "model" in o for o in outcomes.values()):
        return spec
    strip = {
        k: ({kk: vv for kk, vv in o.items() if kk != "model"} if isinstance(o, dict) else o)
        for k, o in outcomes.items()
    }
    return {**spec, "outcomes": strip}


def _study_points(name: str, spec: dict[str, Any]) -> dict[str, study.DesignPoint]:
    """Check a study dataset's sweep and return its design points by name."""
    import jsonschema

    where = f"datasets.{name}.sweep"
    root = _schema()
    validator = jsonschema.Draft7Validator({"$ref": "#/definitions/design", "definitions": root["definitions"]})
    points = study.design_points(spec["simulate"], spec["sweep"], where)
    for point in points:
        key = ",".join(point.values) or "simulate"
        error = jsonschema.exceptions.best_match(validator.iter_errors(_without_models(point.spec)))
        if error is not None:
            _, problem = _describe(error)
            raise ConfigError(f"{where}.{key}", f"{problem} (design point {point.name})")
        _set_defaults(root["definitions"]["design"], point.spec, root)
        _check_design(name, design_from_config(point.spec))
    return {p.name: p for p in points}


def _check_study_keys(
    name: str, model: dict[str, Any], formula: formula_mod.Formula, is_study: bool, design: Design | None = None
) -> None:
    if is_study:
        # A study's batches write recovery tables only: no second engine, no anova tables.
        lrt = model.get("test") == "lrt"
        if lrt and len(model.get("compare_with") or []) != 1:
            raise ConfigError(
                f"models.{name}.compare_with",
                "test: lrt needs exactly one model to test against (a study model's compare_with)",
            )
        for key in ("verify", "compare_with"):
            if model.get(key) and not (key == "compare_with" and lrt):
                raise ConfigError(
                    f"models.{name}.{key}",
                    "applies to per-seed fits only, not to a model of a study dataset (one with 'replicates')",
                )
        if model.get("intervals") == "bootstrap":
            raise ConfigError(
                f"models.{name}.intervals",
                "bootstrap applies to per-seed fits only (a study "
                "would bootstrap every replicate); use wald or profile",
            )
    if model.get("test") is not None and not is_study:
        raise ConfigError(
            f"models.{name}.test",
            "applies to models of a study dataset (one with 'replicates') "
            "only; a per-seed model's tests follow `inference`",
        )
    if model.get("target_power") is not None and not is_study:
        raise ConfigError(f"models.{name}.target_power", "applies to models of a study dataset only")
    where = f"models.{name}.power_terms"
    terms = model.get("power_terms")
    if terms is None:
        return
    if not is_study:
        raise ConfigError(where, "applies to models of a study dataset (one with 'replicates') only")
    known = list(dict.fromkeys(["(Intercept)", *formula.fixed_term_labels, *formula.fixed_variables]))
    if design is not None:
        # The coefficients' own names (factor(visit)1, poly(visit, 2)2), from the design's rows.
        from glmm_steps.model_matrix import build

        known = list(dict.fromkeys(known + build(formula, unit_ids(design), response=False).fixed_names))
    for term in terms:
        # An interaction (time:armtreated) is known when each of its parts is.
        if term not in known and not (":" in term and all(p in known for p in term.split(":"))):
            raise ConfigError(
                where, f"'{term}' is not a fixed effect of the formula (fixed effects: {', '.join(known)})"
            )


def _check_job_count(config: dict[str, Any], fits, pilots: dict[str, dict[str, Any]]) -> None:
    """Refuse a config that makes more jobs than ``max_jobs``, naming the study that
    makes most of them."""
    limit = config["max_jobs"]
    count = count_jobs(config, fits, pilots)
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
        detail = (
            f"{spec['replicates']:,} replicates in batches of {spec['batch_size']:,} x "
            f"{_n_designs(spec):,} design point(s) x {n_models} model(s) "
            f"= {per_dataset[worst]:,} batch jobs"
        )
        where = f"datasets.{worst}.replicates"
    else:
        detail, where = f"{len(fits):,} per-seed fits", "max_jobs"
    raise ConfigError(
        where,
        f"this config makes {count:,} jobs ({detail}), more than max_jobs "
        f"({limit:,}); lower replicates or the sweep, or raise batch_size or max_jobs",
    )


def check_config(config: dict[str, Any], files: list[str | Path] = ()) -> Plan:
    """Check a config (as Snakemake loaded it) and expand it into a :class:`Plan`.

    ``files`` are the YAML files it came from; they are re-read strictly to catch
    duplicate keys, which a plain YAML load silently drops. The data files the
    models read are checked too (reading only the columns they use). Raises
    ConfigError, or DataError for a data file that cannot be fitted as declared."""
    for f in files:
        read_yaml(f)
    config = validate_schema(dict(config))
    _check_finite(config)
    _check_paths(config)
    pilots: dict[str, dict[str, Any]] = {}
    for name, spec in config["datasets"].items():
        if "from_model" in spec.get("simulate", {}):
            if "replicates" not in spec:
                raise ConfigError(f"datasets.{name}.simulate.from_model", "applies to studies (with 'replicates') only")
            # The pilot's fit gives the levels, covariates, arms and outcomes; a key that
            # would set them is refused rather than dropped.
            given = [k for k, v in spec["simulate"].items() if k not in pilot.KEYS and v not in (None, {}, [])]
            if given:
                raise ConfigError(
                    f"datasets.{name}.simulate.{given[0]}",
                    f"does not apply with from_model (the pilot's fit gives the design; "
                    f"only {', '.join(pilot.KEYS[1:])} do)",
                )
            # Nothing is fitted here (this runs at parse time, in every job): the pilot's
            # structure stands in for its design, which the pilot_design job fits.
            pilots[name] = {k: spec["simulate"][k] for k in pilot.KEYS if k in spec["simulate"]}
            spec["simulate"] = pilot.check(
                spec["simulate"], config["models"], config["datasets"], f"datasets.{name}.simulate"
            )
            root = _schema()
            _set_defaults(root["definitions"]["design"], spec["simulate"], root)
    designs: dict[str, Design] = {}
    for name, spec in config["datasets"].items():
        if "simulate" in spec:
            designs[name] = design_from_config(spec["simulate"])
            _check_design(name, designs[name])
        else:
            for key in ("seeds", "replicates"):
                if key in spec:
                    raise ConfigError(f"datasets.{name}.{key}", f"{key} apply to simulated datasets only")
            if spec.get("format", "auto") != "auto":
                raise ConfigError(
                    f"datasets.{name}.format",
                    "applies to simulated datasets; a data file is Parquet if its name ends in .parquet",
                )
        if spec["sweep"] and "replicates" not in spec:
            raise ConfigError(f"datasets.{name}.sweep", "a sweep needs a study: add 'replicates' and 'base_seed'")
    fits = []
    versions: dict[str, str] = {}
    file_sums: dict[str, str] = {}
    on_file: dict[str, list] = {}
    for name, model in config["models"].items():
        parsed = _check_model(name, model, config, designs)
        spec = config["datasets"][model["dataset"]]
        _check_study_keys(name, model, parsed, "replicates" in spec, designs.get(model["dataset"]))
        answers.check(name, model, parsed, spec, study="replicates" in spec)
        if model.get("target_power") is not None and "replicates" in spec and len(spec["sweep"]) != 1:
            raise ConfigError(
                f"models.{name}.target_power",
                f"needs one swept size key in datasets."
                f"{model['dataset']}.sweep (e.g. levels.hospital_id.n: [5, 10, 20]), "
                f"it has {len(spec['sweep'])}",
            )
        if "path" in spec and spec["path"] not in file_sums:
            file_sums[spec["path"]] = sha256(spec["path"])
        if "replicates" not in spec:
            # Per-seed fits only: a study's batches are not versioned (see Plan.batches).
            # The key leaves out the recovery-only keys, as the fit jobs' params do.
            entry = {k: v for k, v in model.items() if k not in RECOVERY_KEYS}
            versions[name] = version_key(
                entry, spec, engine_version=engine_version(model["engine"]), data_sha256=file_sums.get(spec.get("path"))
            )
            seeds = spec.get("seeds", [None]) if "simulate" in spec else [None]
            fits += [Fit(name, model["dataset"], paths.replicate_id(s), versions[name]) for s in seeds]
        if "path" in spec:
            on_file.setdefault(model["dataset"], []).append((model, parsed))
    file_rows = {name: _check_data_file(name, config["datasets"][name], models) for name, models in on_file.items()}
    for name, model in config["models"].items():
        if model["dataset"] in file_rows:
            _check_formula_size(
                f"models.{name}",
                formula_mod.parse(model["formula"]),
                file_rows[model["dataset"]],
                config["datasets"][model["dataset"]]["path"],
            )
    _check_comparisons(config, {n: formula_mod.parse(m["formula"]) for n, m in config["models"].items()})
    # Count before expanding any sweep: a typo must be refused, not built.
    _check_job_count(config, fits, pilots)
    study_designs = {
        name: _study_points(name, spec) for name, spec in config["datasets"].items() if "replicates" in spec
    }
    return Plan(
        config=config,
        designs=designs,
        fits=tuple(fits),
        versions=versions,
        rows=_rows(config, designs, file_rows),
        study_designs=study_designs,
        pilots=pilots,
    )


def _rows(config: dict[str, Any], designs: dict[str, Design], file_rows: dict[str, int]) -> dict[str, int]:
    """Rows of each dataset a model with ``table_format: auto`` fits: a design's size,
    or a data file's rows as the config check read them (``file_rows``)."""
    auto = {m["dataset"] for m in config["models"].values() if m.get("table_format", "auto") == "auto"}
    return {name: designs[name].nrows if name in designs else file_rows[name] for name in auto}


def load_config(path: str | Path) -> Plan:
    """Read and check a config file; the entry point for notebooks and tests."""
    return check_config(read_yaml(path))
