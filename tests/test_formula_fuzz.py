"""Fuzz tests of the formula parser and the model-matrix builder: generated formulas
(nested calls, odd spacing, unknown functions, injection attempts) either parse or
fail with the project's one-line error, never run anything as Python, and take work
linear in the formula's length (counted, not timed). Derandomized, as tests/test_fuzz.py."""

from __future__ import annotations

import builtins
import contextlib
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from glmm_steps import formula as formula_mod
from glmm_steps.errors import GlmmError
from glmm_steps.formula import MAX_LENGTH, parse, parse_work
from glmm_steps.model_matrix import build

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)),
    deadline=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

COLUMNS = ["x", "z", "f", "g"]
INJECTIONS = [
    "__import__('os').system('touch pwned')",
    "().__class__.__bases__",
    "eval(x)",
    "exec(x)",
    "lambda: 0",
    "x; import os",
    "open('/etc/passwd')",
    "getattr(x, 'y')",
    "x.__class__",
    "`x`",
    "`__import__`(x)",
    "\\n(1 | g)",
    "x\nz",
    "$x",
    "x[0]",
    "{x}",
    "@x",
    "x == 1",
    "'x'",
    "sys.exit(1)",
    "os.system",
    "compile(x)",
    "globals()",
    "I(__import__)",
    "log(x).real",
]
calls = [
    "log",
    "log1p",
    "log2",
    "log10",
    "exp",
    "sqrt",
    "abs",
    "I",
    "scale",
    "poly",
    "factor",
    "as.factor",
    "as.numeric",
    "offset",
    "cbind",
    "foo",
    "eval",
    "exec",
    "__import__",
    "open",
    "lambda",
    "print",
]
space = st.sampled_from(["", " ", "  ", "\t", " \n "])


def _expr(children):
    return st.one_of(
        st.tuples(
            children, space, st.sampled_from(["+", "-", "*", "/", ":", "^", "%in%", "|", "||"]), space, children
        ).map(lambda t: "".join(t)),
        st.tuples(st.sampled_from(calls), children).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(
            st.sampled_from(["poly", "scale"]),
            children,
            st.sampled_from(
                [
                    ", 2",
                    ", raw = TRUE",
                    ", 2, raw = TRUE",
                    ", scale = FALSE",
                    ", center = F",
                    ", 0",
                    ", 2.5",
                    ", x",
                    ", degree = 3",
                    ", bogus = 1",
                ]
            ),
        ).map(lambda t: f"{t[0]}({t[1]}{t[2]})"),
        children.map(lambda c: f"({c})"),
        children.map(lambda c: f"-{c}"),
    )


atoms = st.one_of(
    st.sampled_from(COLUMNS), st.sampled_from(["0", "1", "2", "1e5", ".5", "TRUE"]), st.sampled_from(INJECTIONS)
)
expressions = st.recursive(atoms, _expr, max_leaves=12)
random_terms = st.tuples(
    expressions, st.sampled_from(["|", "||"]), st.sampled_from(["g", "g:f", "g/f", "x", "(g)"])
).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
formulas = st.tuples(
    st.sampled_from(["y", "log(y)", "I(y^2)", "cbind(y, n - y)", "sqrt(y + 1)", "foo(y)", "y + z"]),
    space,
    expressions,
    space,
    st.lists(random_terms, max_size=2),
).map(lambda t: f"{t[0]}{t[1]}~{t[2]}{t[3]}" + "".join(f" + {r}" for r in t[4]))

FRAME = pd.DataFrame(
    {
        "y": np.linspace(1, 3, 12),
        "n": 5.0,
        "x": np.linspace(0.5, 6, 12),
        "z": np.tile([1.0, 2.0, 4.0], 4),
        "f": np.tile(["a", "b", "c"], 4),
        "g": np.repeat(["u", "v", "w", "k"], 3),
    }
)


@contextlib.contextmanager
def _no_python_eval():
    """Parsing and building never run text as Python: eval/exec/compile raise while
    they run (patched only around them: pytest itself compiles)."""

    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec/compile called")

    saved = {name: getattr(builtins, name) for name in ("eval", "exec", "compile")}
    for name in saved:
        setattr(builtins, name, refuse)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(builtins, name, fn)


def _parse(text):
    with _no_python_eval():
        return parse(text)


def _build(f, frame):
    with _no_python_eval():
        return build(f, frame)


@FUZZ
@given(text=formulas)
def test_generated_formulas_parse_or_fail_in_one_line(text):
    try:
        f = _parse(text)
    except GlmmError as e:
        # one line: the formula is quoted with repr(), so its own newlines are escaped
        assert "\n" not in str(e), str(e)
        event("refused")
        return
    event("parsed")
    assert f.random and all(isinstance(c, str) and c for c in f.columns)
    # the builder on a small frame either codes the formula or refuses in one line
    try:
        mm = _build(f, FRAME)
    except GlmmError as e:
        assert "\n" not in str(e), str(e)
        event("refused by the builder")
    else:
        assert mm.X.shape[0] == len(FRAME) and len(mm.fixed_names) == mm.X.shape[1]
        event("built")


@pytest.mark.parametrize(
    "text",
    [f"y ~ {inj} + (1 | g)" for inj in INJECTIONS]
    + ["y ~ x + (1 | __import__('os'))", "__import__('os').system('x') ~ x + (1 | g)"],
)
def test_injection_attempts_are_refused_or_read_as_column_names(text):
    """Each injection either fails with one line or is read as a plain column name that
    the data must hold (a name is looked up, never evaluated)."""
    try:
        f = _parse(text)
    except GlmmError as e:
        assert str(e).startswith("formula ") and "\n" not in str(e)
        return
    # Read as names: each must be a column of the data, looked up, never evaluated.
    if set(f.columns) <= set(FRAME.columns):
        assert _build(f, FRAME).X.shape[0] == len(FRAME)
    else:
        with pytest.raises(GlmmError, match="column"):
            _build(f, FRAME)


def _work(shape: str, n: int) -> int:
    text = {
        "sum": "y ~ " + " + ".join(f"x{i}" for i in range(n)) + " + (1 | g)",
        "arith": "y ~ " + " + ".join(f"I(x{i} * 2 - x^2)" for i in range(n)) + " + (1 | g)",
        "colon": "y ~ "
        + ":".join(f"x{i}" for i in range(min(n, 60)))
        + " + "
        + " + ".join(f"log(x{i} + 1)" for i in range(n))
        + " + (1 | g)",
        "random": "y ~ x + " + " + ".join(f"(1 + z{i} | g{i})" for i in range(n)),
        "spaces": "y ~ x " + " " * (20 * n) + "+ (1 | g)",
        "slopes": "y ~ x + (1 + " + " + ".join(f"z{i}" for i in range(n)) + " | g)",
    }[shape]
    assert len(text) <= MAX_LENGTH
    work = parse_work(text)
    assert work > 0, parse(text)
    return work


@pytest.mark.parametrize("shape", ["sum", "arith", "colon", "random", "spaces", "slopes"])
def test_parsing_work_grows_linearly(shape):
    """Doubling a formula's length at most doubles the parser's work (tokens, nodes and
    terms visited), from 100 to 800 repeats."""
    works = [_work(shape, n) for n in (100, 200, 400, 800)]
    for small, big in zip(works, works[1:]):
        assert big <= 2.1 * small, works


def test_blow_up_and_depth_are_capped_in_one_line():
    with pytest.raises(GlmmError, match="more than 1,000 terms"):
        parse("y ~ (" + " + ".join(f"x{i}" for i in range(20)) + ")^20 + (1 | g)")
    with pytest.raises(GlmmError, match="nested more than 64"):
        parse("y ~ " + "log(" * 100 + "x" + ")" * 100 + " + (1 | g)")
    with pytest.raises(GlmmError, match="longer than"):
        parse("y ~ x" + " + x" * MAX_LENGTH + " + (1 | g)")
    with pytest.raises(GlmmError, match="nested more than 64"):
        parse("y ~ " + "-" * 200 + "x + (1 | g)")
    with pytest.raises(GlmmError, match="more than 200 operators inside one function call"):
        parse("y ~ I(" + " + ".join(["x"] * 300) + ") + (1 | g)")
    with pytest.raises(GlmmError, match="belongs inside a random term") as info:
        parse("y ~ " + " + ".join(["x"] * 3000) + " | g")
    assert len(str(info.value)) < 1000
    assert formula_mod.MAX_DEPTH == 64
