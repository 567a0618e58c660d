"""Property-based tests: whatever a user throws at the config check, the formula
parser, or the simulate/fit/extract functions, each either works or fails with the
project's own error (a GlmmError whose message is one line), never another
exception. Derandomized, so CI sees the same examples on every run."""

from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from glmm_steps import extract
from glmm_steps.config import check_config, read_yaml
from glmm_steps.engines.base import FitResult, ModelSpec
from glmm_steps.errors import MAX_MESSAGE, ConfigError, GlmmError
from glmm_steps.fit import fit_model
from glmm_steps.formula import parse
from glmm_steps.simulate import simulate

# CI runs 60 fixed examples per test (~25 s in all); for a longer hunt run e.g.
# FUZZ_EXAMPLES=400 FUZZ_RANDOM=1 pytest tests/test_fuzz.py --hypothesis-show-statistics
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)),
    deadline=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
STATUSES = {"ok", "singular", "hessian_not_pd", "not_converged", "failed"}

BASE = {
    "datasets": {
        "study": {
            "seeds": [1],
            "simulate": {
                "levels": [{"name": "site", "n": 3}, {"name": "subject", "n": 4}],
                "repeated": {"name": "visit", "values": [0, 1, 2]},
                "outcomes": {
                    "y": {
                        "family": "gaussian",
                        "intercept": 10,
                        "coefficients": {"visit": 1.0},
                        "random_sd": {"site": 1.0, "subject": 0.5},
                        "residual_sd": 1.0,
                    },
                    "k": {"family": "binomial", "intercept": 0, "trials": 4, "random_sd": {"subject": 0.5}},
                },
            },
        },
        "real": {"path": "PLACEHOLDER", "factors": []},
    },
    "models": {
        "m": {"dataset": "study", "formula": "y ~ visit + (1 | site) + (1 | subject)"},
        "b": {"dataset": "study", "formula": "cbind(k, k_failures) ~ visit + (1 | subject)", "family": "binomial"},
        "r": {"dataset": "real", "formula": "y ~ x + (1 | g)"},
    },
}


def _error_is_ours(error: GlmmError) -> None:
    message = str(error)
    assert message and "\n" not in message and len(message) <= MAX_MESSAGE, repr(message)
    if isinstance(error, ConfigError):
        assert message.startswith("config error: ")


def _paths(node, prefix=()):
    """Every key path in a nested config, lists included."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


FORMULA_BITS = [
    "y",
    "x",
    "g",
    "visit",
    "site",
    "subject",
    "k",
    "k_failures",
    "~",
    "+",
    "-",
    "*",
    ":",
    "/",
    "(",
    ")",
    "|",
    "||",
    "1",
    "0",
    " ",
    "offset(",
    "log(",
    "cbind(",
    ",",
    "nope",
    "2.5",
    "`",
]
formula_text = st.lists(st.sampled_from(FORMULA_BITS), max_size=14).map("".join)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | formula_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
mutation = st.tuples(
    st.sampled_from(["set", "delete", "add"]),
    st.integers(0, 10**6),
    values,
    st.sampled_from(["famly", "seed", "level", "formula2", "n", "sd", "drop_missing", "x"]),
)


def _mutate(config: dict, op: str, which: int, value, key: str) -> dict:
    paths = [p for p in _paths(config) if p]
    if not paths:  # an earlier mutation emptied the config
        return config
    path = paths[which % len(paths)]
    parent = config
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if op == "set":
        parent[last] = value
    elif op == "delete":
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
    elif isinstance(parent, dict):
        parent[key] = value
    return config


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "real.csv"
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(1, 6), 4)
    pd.DataFrame({"g": g, "x": np.tile(np.arange(4), 5), "y": rng.normal(size=20) + g}).to_csv(path, index=False)
    return str(path)


@FUZZ
@given(mutations=st.lists(mutation, min_size=1, max_size=3))
def test_check_config_on_mutated_configs(data_file, mutations):
    config = copy.deepcopy(BASE)
    config["datasets"]["real"]["path"] = data_file
    for m in mutations:
        config = _mutate(config, *m)
    try:
        plan = check_config(config)
    except GlmmError as e:
        _error_is_ours(e)
        event("refused")
    else:
        assert plan.fits
        event("accepted")


@FUZZ
@given(text=formula_text)
def test_parse_on_generated_formulas(text):
    try:
        f = parse(text)
    except GlmmError as e:
        _error_is_ours(e)
    else:
        assert f.random and all(isinstance(c, str) and c for c in f.columns)


# --- simulate -> fit -> extract on generated designs and data frames ---------------

outcome = st.fixed_dictionaries(
    {
        "family": st.sampled_from(["gaussian", "binomial", "poisson"]),
        "intercept": st.floats(-60, 60),
        "coefficients": st.just({}) | st.builds(lambda b: {"visit": b}, st.floats(-5, 5)),
        "random_sd": st.dictionaries(st.sampled_from(["site", "subject"]), st.floats(0, 8), max_size=2),
    },
).map(lambda o: {**o, "residual_sd": 1.0} if o["family"] == "gaussian" else o)
design = st.fixed_dictionaries(
    {
        "levels": st.tuples(st.integers(1, 4), st.integers(1, 4)).map(
            lambda n: [{"name": "site", "n": n[0]}, {"name": "subject", "n": n[1]}]
        ),
        "repeated": st.lists(st.floats(-3, 3), min_size=1, max_size=4).map(lambda v: {"name": "visit", "values": v}),
        "outcomes": st.builds(lambda o: {"y": o}, outcome),
    }
)
formulas = st.sampled_from(
    [
        "y ~ visit + (1 | site)",
        "y ~ visit + (1 | subject)",
        "y ~ 1 + (1 | site) + (1 | subject)",
        "y ~ visit + (visit | site)",
        "y ~ visit + (visit || subject)",
    ]
)


def _fit_and_extract(frame: pd.DataFrame, spec: ModelSpec, tmp_path) -> None:
    try:
        result = fit_model(frame, spec)
    except GlmmError as e:
        _error_is_ours(e)
        event("refused by the data checks")
        return
    assert isinstance(result, FitResult)
    outputs = {
        k: tmp_path / f"{k}.{'json' if k == 'fit_stats' else 'csv'}"
        for k in ("fixed_effects", "variance_components", "random_effects", "predictions", "fit_stats")
    }
    record = extract.extract(result, outputs)
    assert record["status"] in STATUSES
    event(f"fitted: {record['status']}")
    assert json.loads(outputs["fit_stats"].read_text())["status"] == record["status"]
    if result.error is None:
        assert len(extract.augment(result)) == result.nobs


@FUZZ
@given(spec=design, formula=formulas, seed=st.integers(0, 2**32))
def test_simulate_fit_extract_on_generated_designs(tmp_path, spec, formula, seed):
    family = spec["outcomes"]["y"]["family"]
    config = {
        "datasets": {"d": {"seeds": [seed], "simulate": spec}},
        "models": {"m": {"dataset": "d", "formula": formula, "family": family}},
    }
    try:
        plan = check_config(config)
    except GlmmError as e:
        _error_is_ours(e)
        event("design refused by the config check")
        return
    data, truth = simulate(plan.designs["d"], seed)  # a checked design always simulates
    assert len(data) == plan.designs["d"].nrows and json.dumps(truth)
    _fit_and_extract(data, ModelSpec("m", "d", formula, family), tmp_path)


BAD_CELLS = [np.nan, math.inf, "a", "1,5", "", -1, 0.5, 2, True, "x"]


@st.composite
def frames(draw) -> pd.DataFrame:
    """A small frame that is mostly fittable (3-6 groups, counts as responses), then
    0-3 cells replaced by values real files hold by mistake."""
    n_groups = draw(st.integers(1, 6))
    per_group = draw(st.integers(1, 5))
    n = n_groups * per_group
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    frame = pd.DataFrame(
        {
            "g": np.repeat(np.arange(1, n_groups + 1), per_group),
            "x": np.round(rng.normal(size=n), 2),
            "y": rng.poisson(2.0, size=n) if draw(st.booleans()) else rng.integers(0, 2, size=n),
        }
    ).astype(object)
    for _ in range(draw(st.integers(0, 3)) if n else 0):
        frame.iat[draw(st.integers(0, n - 1)), draw(st.integers(0, 2))] = draw(st.sampled_from(BAD_CELLS))
    return frame.infer_objects()


@FUZZ
@given(
    frame=frames(),
    family=st.sampled_from(["gaussian", "binomial", "poisson"]),
    formula=st.sampled_from(["y ~ x + (1 | g)", "y ~ 1 + (x | g)", "y ~ x + (1 | g) + offset(x)"]),
)
def test_fit_extract_on_generated_frames(tmp_path, frame, family, formula):
    _fit_and_extract(frame, ModelSpec("m", "d", formula, family), tmp_path)


YAML_BITS = [
    "a",
    ": ",
    "- ",
    "\n",
    "  ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "&x ",
    "*x",
    "&y ",
    "*y",
    "!!python/object:os.system ",
    "!!binary ",
    "'",
    '"',
    "#",
    "? ",
    "---\n",
    "\t",
    "1e9",
    ".nan",
    "~",
    "\u00e9",
    "\ufeff",
    "\x00",
    "%YAML 1.1\n",
]


@FUZZ
@given(
    text=st.lists(st.sampled_from(YAML_BITS), max_size=40).map("".join),
    encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]),
)
def test_read_yaml_on_generated_files(tmp_path, text, encoding):
    """Whatever bytes a config file holds, reading it gives a mapping or the project's
    one-line error: never another exception, never a constructed object."""
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode(encoding, errors="replace"))
    try:
        data = read_yaml(path)
    except GlmmError as e:
        _error_is_ours(e)
        event("refused")
    else:
        assert isinstance(data, dict)
        event("read")
