"""lme4-style model formulas: parse into R's terms, check against data columns.

This is a small recursive-descent parser of R's formula language, written here
because nothing installed gives R's semantics and lme4's names without running the
user's text as Python. Measured on formulaic 1.2.2 (a statsmodels dependency in the
venv): it evaluates each term as a Python expression (``np.log(x)`` works, so the
formula reaches any attribute of any name in its namespace), reads ``I(x^2)`` as a
bitwise xor (an error on floats), has no ``factor()``, and names columns
``Intercept``, ``f[T.b]``, ``poly(x, 2)[1]`` where lme4 prints ``(Intercept)``,
``fb``, ``poly(x, 2)1``.

Nothing is evaluated here: :func:`parse` turns the text into a tree of
:class:`Name`, :class:`Num`, :class:`Call`, :class:`BinOp`, :class:`Neg` and
:class:`Paren` nodes, checks every call against a short list of functions
(:data:`FUNCTIONS`), and expands the right-hand side into R's terms (``a*b``,
``a:b``, ``(a + b)^2``, ``a/b``, ``b %in% a``, ``- a``, ``0 +``, ``-1``) with R's
term order and labels. Turning terms into numbers is
:mod:`glmm_steps.model_matrix`'s job. Parsing is linear in the formula's length:
one pass of a compiled scanner, one descent over the tokens; nesting and the number
of terms an expansion may create are capped, so a hostile formula fails fast.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

import numpy as np

from glmm_steps.errors import GlmmError

# Functions a formula may call, by where they may appear. Anything else is refused
# before any data is read.
TRANSFORMS = ("log", "log1p", "log2", "log10", "exp", "sqrt", "abs")
FUNCTIONS = TRANSFORMS + ("I", "scale", "poly", "factor", "as.factor", "as.numeric")
SPECIAL = ("offset", "cbind")
# What the messages list: every call a formula may make, as it is written.
SUPPORTED = (
    "log(x), log1p(x), log2(x), log10(x), exp(x), sqrt(x), abs(x), I(+ - * / ^), "
    "scale(x, center = TRUE, scale = TRUE), poly(x, degree, raw = FALSE), factor(x), "
    "as.factor(x), as.numeric(x), offset(x), cbind(successes, failures)"
)
# Keyword arguments each function takes, with the values allowed.
_BOOL = {"TRUE": True, "T": True, "FALSE": False, "F": False}
MAX_LENGTH = 20_000
MAX_DEPTH = 64
# Terms an expression may expand to: c1*...*c30 stands for a billion, so expansion
# stops as soon as it passes this; each fixed term is at least one model-matrix column.
MAX_TERMS = 1000
TOO_MANY_TERMS = (
    f"it expands to more than {MAX_TERMS:,} terms (an interaction a*b*c*... of k "
    "variables has 2^k - 1); write the interactions you mean, e.g. (a + b + c)^2 for those of two variables"
)
# Operators inside one function call (I(a + b + ...)): evaluating and naming the call
# walks its tree recursively, so it is kept well inside Python's recursion limit.
MAX_CALL_OPERATORS = 200
# Operators by binding power (R's ?Syntax, low to high); '^' is right-associative.
_BINARY = {"|": 1, "||": 1, "+": 2, "-": 2, "*": 3, "/": 3, "%in%": 4, ":": 5, "^": 7}
_UNARY = 6
_UNSUPPORTED = ("==", "!=", "<=", ">=", "<", ">", "&", "&&", "!")

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w.]))
  | (?P<name>[A-Za-z_.][\w.]*)
  | (?P<quoted>`[^`]*`)
  | (?P<op>\|\||%in%|==|!=|<=|>=|&&|[~+\-*/^:|(),=<>&!])
""",
    re.VERBOSE,
)
_SYNTACTIC = re.compile(r"^(?:[A-Za-z]|\.(?![0-9]))[\w.]*$")


# ---- the tree ---------------------------------------------------------------------


@dataclass(frozen=True)
class Name:
    """A column (or TRUE/FALSE as an argument)."""

    name: str

    def __str__(self) -> str:
        return self.name if _SYNTACTIC.match(self.name) else f"`{self.name}`"


@dataclass(frozen=True)
class Num:
    """A number as R deparses it (``1e+05``, ``0.5``)."""

    value: float

    def __str__(self) -> str:
        return r_number(self.value)


@dataclass(frozen=True)
class Call:
    """``fn(args..., key = value, ...)``."""

    fn: str
    args: tuple
    kwargs: tuple = ()

    def __str__(self) -> str:
        parts = [str(a) for a in self.args] + [f"{k} = {v}" for k, v in self.kwargs]
        return f"{self.fn}({', '.join(parts)})"


@dataclass(frozen=True)
class BinOp:
    """A binary operator; printed with R's deparse spacing (``x^2``, ``x/2``, ``x * 2``)."""

    op: str
    left: object
    right: object

    def __str__(self) -> str:
        if self.op == "^":
            return f"{self.left}^{self.right}"
        # A long chain a + b + c ... is deep on the left: walk it with a loop.
        spine, node = [], self
        while isinstance(node, BinOp) and node.op != "^":
            spine.append(node)
            node = node.left
        text = str(node)
        for n in reversed(spine):
            text += f"{n.op}{n.right}" if n.op in ("^", "/", ":") else f" {n.op} {n.right}"
        return text


@dataclass(frozen=True)
class Neg:
    """Unary minus."""

    operand: object

    def __str__(self) -> str:
        return f"-{self.operand}"


@dataclass(frozen=True)
class Paren:
    """Parentheses as written (R keeps them in a term's label: ``I((x + 1)^2)``)."""

    inner: object

    def __str__(self) -> str:
        return f"({self.inner})"


def quote(text: str, limit: int = 200) -> str:
    """A formula for a message: quoted, and cut at ``limit`` characters so the line stays
    bounded."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def cut(problem: str, limit: int = 600) -> str:
    """A message part cut at ``limit`` characters (it may quote a long term)."""
    return problem if len(problem) <= limit else problem[:limit] + "..."


def r_number(value: float) -> str:
    """A number as R's deparse writes it: 15 significant digits, fixed notation unless
    scientific is shorter (``1e+05``, ``123456``, ``0.001``, ``1e-20``)."""
    if value == int(value) and abs(value) < 1e15:
        fixed = str(int(value))
    else:
        fixed = f"{value:.15g}"
        if "e" in fixed:
            fixed = np.format_float_positional(value, precision=15, trim="-")
    mantissa, _, exp = f"{value:.14e}".partition("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    sci = f"{mantissa}e{'-' if int(exp) < 0 else '+'}{abs(int(exp)):02d}"
    return fixed if len(fixed) <= len(sci) else sci


# ---- the formula --------------------------------------------------------------------


@dataclass(frozen=True)
class RandomTerm:
    """One ``(expr | group)`` term: ``group`` is a tuple for an interaction such as
    ``a:b`` (what ``a/b`` expands to); ``slopes`` are the labels of the terms varying by
    group (``x``, ``scale(x)``, ``factor(visit)``); ``terms`` the same as tuples of
    variable labels (for the model matrix); ``group_name`` is the grouping factor as
    lme4 names it (``a:b`` as written, ``b:a`` for the inner factor of ``a/b``)."""

    group: tuple[str, ...]
    intercept: bool
    slopes: tuple[str, ...]
    correlated: bool
    group_name: str
    terms: tuple[tuple[str, ...], ...] = ()

    def __str__(self) -> str:
        bar = "|" if self.correlated else "||"
        expr = " + ".join(("1",) + self.slopes if self.intercept else ("0",) + self.slopes)
        return f"({expr} {bar} {self.group_name})"


@dataclass(frozen=True)
class Formula:
    """A parsed lme4-style formula.

    ``response`` is the response's label (``y``, ``log(y)``; for a ``cbind`` response
    the proportion column ``<successes>_prop``, fitted with trials as weights, as glm
    and lme4 do internally); ``response_node`` its tree (None for cbind). ``trials``
    holds the two columns of the ``cbind``: (successes, failures), or (successes,
    trials) when ``trials_total`` (the ``cbind(s, n - s)`` form). ``fixed_terms`` are
    R's terms of the fixed part in R's order, each a tuple of variable labels;
    ``variables`` maps every variable label (fixed and random) to its tree."""

    text: str
    response: str
    trials: tuple[str, str] | None
    offset: str | None
    offset_log: bool
    fixed_variables: tuple[str, ...]
    random: tuple[RandomTerm, ...]
    trials_total: bool = False
    intercept: bool = True
    fixed_terms: tuple[tuple[str, ...], ...] = ()
    variables: dict = field(default_factory=dict, compare=False)
    response_node: object = None

    def n_trials(self, frame) -> np.ndarray:
        """Binomial trials per row of ``frame`` for a ``cbind`` response (else ones)."""
        if not self.trials:
            return np.ones(len(frame))
        s, other = self.trials
        total = frame[other] if self.trials_total else frame[s] + frame[other]
        return total.to_numpy(dtype=float)

    @property
    def trials_text(self) -> str:
        """The cbind response as written: ``cbind(s, f)`` or ``cbind(s, n - s)``."""
        s, other = self.trials
        return f"cbind({s}, {other} - {s})" if self.trials_total else f"cbind({s}, {other})"

    @property
    def fixed_term_labels(self) -> tuple[str, ...]:
        """R's term labels of the fixed part (``age``, ``I(age^2)``, ``age:urban``)."""
        return tuple(":".join(t) for t in self.fixed_terms)

    @property
    def response_columns(self) -> tuple[str, ...]:
        """The data columns the response reads (both columns of a cbind)."""
        if self.trials:
            return tuple(dict.fromkeys(self.trials))
        return tuple(dict.fromkeys(columns_of(self.response_node)))

    @property
    def outcome(self) -> str:
        """The data column the response is made of: the successes of a cbind, ``y`` of
        ``log(y)`` (the first column when an ``I()`` reads several)."""
        return self.response_columns[0]

    @property
    def factor_columns(self) -> tuple[str, ...]:
        """Columns the formula wraps in ``factor()``/``as.factor()``: categorical by intent."""
        out: dict[str, None] = {}
        for node in self.variables.values():
            for c in _factor_args(node):
                out.setdefault(c, None)
        return tuple(out)

    @property
    def converted_columns(self) -> tuple[str, ...]:
        """Columns the formula reads through ``as.numeric()``: text that holds numbers is
        converted there, as R's as.numeric() does."""
        out: dict[str, None] = {}
        for node in list(self.variables.values()) + [self.response_node]:
            for c in _factor_args(node, ("as.numeric",)):
                out.setdefault(c, None)
        return tuple(out)

    @property
    def slope_columns(self) -> tuple[str, ...]:
        """The data columns random slopes read."""
        out: dict[str, None] = {}
        for t in self.random:
            for term in t.terms:
                for v in term:
                    for c in columns_of(self.variables[v]):
                        out.setdefault(c, None)
        return tuple(out)

    @property
    def grouping_factors(self) -> tuple[str, ...]:
        """Every column used as (part of) a grouping factor, in formula order."""
        seen: dict[str, None] = {}
        for term in self.random:
            for g in term.group:
                seen.setdefault(g, None)
        return tuple(seen)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every data column the formula reads, in a stable order."""
        cols: dict[str, None] = {}
        for c in (
            self.response_columns
            + self.fixed_variables
            + self.slope_columns
            + self.grouping_factors
            + ((self.offset,) if self.offset else ())
        ):
            cols.setdefault(c, None)
        return tuple(cols)


def columns_of(node) -> list[str]:
    """The data columns a tree reads (TRUE/FALSE keyword values are not columns)."""
    out: list[str] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Name):
            out.append(n.name)
        elif isinstance(n, Call):
            stack.extend(reversed(n.args))  # keyword values are constants
        elif isinstance(n, BinOp):
            stack.extend((n.right, n.left))
        elif isinstance(n, (Neg, Paren)):
            stack.append(n.operand if isinstance(n, Neg) else n.inner)
    return out


def _factor_args(node, functions=("factor", "as.factor")) -> list[str]:
    """Columns given directly to one of ``functions`` anywhere in the tree."""
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Call):
            if n.fn in functions and n.args and isinstance(n.args[0], Name):
                out.append(n.args[0].name)
            stack.extend(n.args)
        elif isinstance(n, BinOp):
            stack += [n.left, n.right]
        elif isinstance(n, (Neg, Paren)):
            stack.append(n.operand if isinstance(n, Neg) else n.inner)
    return out


# ---- scanning and parsing -------------------------------------------------------------


class _Parser:
    """Recursive descent over the token list; ``work`` counts tokens consumed and
    nodes built (the fuzz tests check it grows linearly with the formula)."""

    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise self.error(f"unexpected character {text[pos]!r} at character {pos + 1}")
            kind = m.lastgroup
            if kind != "space":
                value = m.group()
                if kind == "quoted":
                    kind, value = "name", value[1:-1]
                    if not value:
                        raise self.error(f"empty `` name at character {pos + 1}")
                self.tokens.append((kind, value, pos))
            pos = m.end()
        self.tokens.append(("end", "", len(text)))
        self.i = 0
        self.depth = 0
        self.in_call = 0
        self.call_operators = 0
        self.work = len(self.tokens)

    def error(self, problem: str) -> GlmmError:
        return GlmmError(f"formula {quote(self.text)}: {cut(problem)}")

    def operator(self) -> None:
        self.work += 1
        if self.in_call:
            self.call_operators += 1
            if self.call_operators > MAX_CALL_OPERATORS:
                raise self.error(f"more than {MAX_CALL_OPERATORS} operators inside one function call")

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def near(self) -> str:
        kind, value, pos = self.peek()
        return "the end of the formula" if kind == "end" else f"{self.text[pos : pos + 12].strip()!r}"

    def take(self, value: str) -> None:
        if self.peek()[1] != value or self.peek()[0] not in ("op",):
            raise self.error(f"expected '{value}' near {self.near()}")
        self.i += 1

    def expression(self, min_power: int = 0):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} levels deep")
        left = self.unary()
        while True:
            kind, op, _ = self.peek()
            if kind == "op" and op in _UNSUPPORTED:
                raise self.error(
                    f"'{op}' is not supported in a formula (comparisons and logic are not "
                    f"transforms); supported: {SUPPORTED}"
                )
            power = _BINARY.get(op) if kind == "op" else None
            if power is None or power < min_power:
                break
            self.i += 1
            self.operator()
            right = self.expression(power if op == "^" else power + 1)
            left = BinOp(op, left, right)
        self.depth -= 1
        return left

    def unary(self):
        kind, value, pos = self.peek()
        if kind == "op" and value in ("-", "+"):
            self.i += 1
            self.operator()
            operand = self.expression(_UNARY)
            return Neg(operand) if value == "-" else operand
        return self.primary()

    def primary(self):
        kind, value, pos = self.peek()
        self.work += 1
        if kind == "number":
            self.i += 1
            return Num(float(value))
        if kind == "name":
            self.i += 1
            if self.peek()[:2] == ("op", "("):
                return self.call(value, pos)
            return Name(value)
        if kind == "op" and value == "(":
            self.i += 1
            inner = self.expression()
            self.take(")")
            return Paren(inner)
        if kind == "end":
            raise self.error("the formula ends where a term was expected")
        raise self.error(f"expected a column, number or '(' near {self.near()}")

    def call(self, fn: str, pos: int):
        if fn not in FUNCTIONS + SPECIAL:
            close = difflib.get_close_matches(fn, FUNCTIONS + SPECIAL, n=1)
            hint = f" (did you mean {close[0]}()?)" if close else ""
            raise self.error(f"unknown function {fn}(){hint}; supported: {SUPPORTED}")
        self.take("(")
        if not self.in_call:
            self.call_operators = 0
        self.in_call += 1
        args, kwargs = [], []
        if self.peek()[:2] != ("op", ")"):
            while True:
                kind, value, _ = self.peek()
                if kind == "name" and self.tokens[self.i + 1][:2] == ("op", "="):
                    self.i += 2
                    kwargs.append((value, self.expression()))
                else:
                    if kwargs:
                        raise self.error(f"{fn}(): a positional argument follows a named one")
                    args.append(self.expression())
                if self.peek()[:2] == ("op", ","):
                    self.i += 1
                    continue
                break
        self.take(")")
        self.in_call -= 1
        return Call(fn, tuple(args), tuple(kwargs))


def _check_call(node: Call, err) -> None:
    """Arguments of a call, checked without evaluating anything: one column or
    arithmetic expression (``+ - * / ^``, numbers, listed calls) per transform, as R
    evaluates ``log(x + 1)``; literal degrees and flags; ``factor()`` takes a column, and
    ``factor()`` and ``poly()`` are only terms of their own."""
    stack = [(node, False, True)]
    while stack:
        n, in_i, top = stack.pop()
        if isinstance(n, BinOp):
            if n.op not in ("+", "-", "*", "/", "^") or not in_i:
                raise err(f"'{n.op}' inside a function call in {node} (write arithmetic inside I(), e.g. I(x^2))")
            stack += [(n.left, in_i, False), (n.right, in_i, False)]
        elif isinstance(n, Neg):
            if not in_i:
                raise err(f"'-' inside {node} (write arithmetic inside I(), e.g. I(-x))")
            stack.append((n.operand, in_i, False))
        elif isinstance(n, Paren):
            stack.append((n.inner, in_i, False))
        elif isinstance(n, Num) and not in_i:
            raise err(f"a number inside {node} where a column was expected")
        elif isinstance(n, Name) and n.name in _BOOL:
            raise err(f"{n.name} inside {node} where a column was expected")
        elif isinstance(n, Call):
            _check_one_call(n, err)
            if n.fn in SPECIAL:
                raise err(f"{n.fn}() inside {node}")
            if n.fn in ("factor", "as.factor", "poly") and not top:
                raise err(f"{n.fn}() inside {node}: {n.fn}() must be a term of its own")
            # Inside a call R's operators are arithmetic (log(x + 1)); only factor() takes a column.
            stack.append((n.args[0], n.fn not in ("factor", "as.factor"), False))


def _check_one_call(n: Call, err) -> None:
    _check_arguments(n, lambda problem: err(f"{problem}; supported: {SUPPORTED}"))


def _check_arguments(n: Call, err) -> None:
    allowed = {"scale": ("center", "scale"), "poly": ("degree", "raw")}.get(n.fn, ())
    for key, value in n.kwargs:
        if key not in allowed:
            known = f" (it takes {', '.join(allowed)})" if allowed else ""
            raise err(f"{n.fn}() has no argument '{key}'{known}")
        if key in ("center", "scale", "raw") and not (isinstance(value, Name) and value.name in _BOOL):
            raise err(f"{n.fn}({key} = ...) must be TRUE or FALSE, got {value}")
    if n.fn == "poly":
        given = dict(n.kwargs)
        degree = n.args[1] if len(n.args) > 1 else given.get("degree", Num(1))
        if len(n.args) > 2 or (len(n.args) > 1 and "degree" in given) or not n.args:
            raise err(f"{n}: write poly(x, degree) or poly(x, degree, raw = TRUE)")
        if not (isinstance(degree, Num) and degree.value == int(degree.value) and 1 <= degree.value <= 20):
            raise err(f"{n}: the degree must be a whole number from 1 to 20")
    elif n.fn == "scale":
        if len(n.args) != 1:
            raise err(f"{n}: write scale(x), scale(x, scale = FALSE) or scale(x, center = FALSE)")
    elif n.fn == "cbind":
        pass
    elif len(n.args) != 1 or (n.fn == "offset" and n.kwargs):
        raise err(f"{n.fn}() takes one argument, got {len(n.args)}")


# ---- R's terms ------------------------------------------------------------------------


class _Exp:
    """An expansion: R's terms in order (a dict used as an ordered set) and what it says
    about the intercept (None: nothing; True: ``+ 1``; False: ``0 +`` or ``- 1``)."""

    __slots__ = ("terms", "intercept")

    def __init__(self, terms=(), intercept: bool | None = None):
        self.terms: dict[frozenset, None] = dict.fromkeys(terms)
        self.intercept = intercept


_LEFT_ASSOC = ("+", "-", "*", "/", ":", "%in%")


class _Terms:
    """Expands a right-hand side into R's terms (terms.formula): ``+`` joins, ``-``
    deletes, ``:`` crosses, ``*`` is ``a + b + a:b``, ``/`` is ``a + (all of a):b``,
    ``%in%`` is ``b:(all of a)``, ``^ n`` all interactions up to order n. Variables
    are numbered in order of first appearance, as R numbers them. Chains of
    left-associative operators are walked with a loop and each step costs the size of
    its right operand, so the work is linear in the formula's length."""

    def __init__(self, err, variables: dict[str, object]):
        self.err = err
        self.variables = variables  # label -> tree, in order of first appearance
        self.work = 0

    def var(self, node) -> frozenset:
        label = str(node)
        self.variables.setdefault(label, node)
        return frozenset({label})

    def expand(self, node) -> _Exp:
        while isinstance(node, Paren):
            node = node.inner
        spine = []
        while isinstance(node, BinOp) and node.op in _LEFT_ASSOC:
            spine.append((node.op, node.right))
            node = node.left
            while isinstance(node, Paren):
                node = node.inner
        result = self.single(node)
        for op, right in reversed(spine):
            result = self.apply(op, result, self.expand(right), right)
        return result

    def single(self, node) -> _Exp:
        self.work += 1
        if isinstance(node, Num):
            if node.value == 1:
                return _Exp(intercept=True)
            if node.value == 0:
                return _Exp(intercept=False)
            raise self.err(f"the number {node} is not a term (only 0, 1 and -1 are)")
        if isinstance(node, (Name, Call)):
            if isinstance(node, Name) and node.name in _BOOL:
                raise self.err(f"{node.name} is not a column")
            if isinstance(node, Call):
                if node.fn == "offset":
                    raise self.err("offset() must be a term of its own, outside random terms")
                if node.fn == "cbind":
                    raise self.err("cbind() belongs on the left of '~'")
                _check_call(node, self.err)
            return _Exp([self.var(node)])
        if isinstance(node, Neg):
            # R: a unary minus deletes from nothing, so only '-1' / '-0' say anything.
            inner = self.expand(node.operand)
            return _Exp(intercept=None if inner.intercept is None else not inner.intercept)
        if isinstance(node, BinOp) and node.op in ("|", "||"):
            raise self.err(f"'{node.op}' outside a random term: write ({node})")
        if isinstance(node, BinOp) and node.op == "^":
            if not (
                isinstance(node.right, Num) and node.right.value == int(node.right.value) and node.right.value >= 1
            ):
                raise self.err(f"the power in {node} must be a whole number (write I(x^2) for a squared covariate)")
            base = list(self.factors_of(self.expand(node.left), "^", node.left))
            if len(base) == 1:
                # R reads x^2 as x (the power crosses terms): almost always a square was meant.
                raise self.err(
                    f"{node} outside I() is R's term power, which leaves the single term "
                    f"{node.left} as it is: write I({node}) for its power, or {node.left} for itself"
                )
            out = dict.fromkeys(base)
            for _ in range(min(int(node.right.value), len(base)) - 1):
                out.update(dict.fromkeys(self.cross(list(out), base)))
            return _Exp(out)
        raise self.err(f"cannot read {node} as a term")  # pragma: no cover

    def factors_of(self, e: _Exp, op: str, node) -> dict:
        if e.intercept is not None or not e.terms:
            raise self.err(f"'{op}' joins columns and terms, not numbers: {node}")
        return e.terms

    def apply(self, op: str, left: _Exp, right: _Exp, node) -> _Exp:
        self.work += 1 + len(right.terms)
        if op == "+":
            left.terms.update(right.terms)
            if right.intercept is not None:
                left.intercept = right.intercept
            return self.guard(left)
        if op == "-":
            for t in right.terms:
                left.terms.pop(t, None)
            if right.intercept is not None:
                left.intercept = not right.intercept
            return left
        a = list(self.factors_of(left, op, node))
        b = list(self.factors_of(right, op, node))
        if op == ":":
            return _Exp(self.cross(a, b))
        if op == "*":
            left.terms.update(right.terms)
            left.terms.update(dict.fromkeys(self.cross(a, b)))
            return self.guard(left)
        if op == "/":
            whole = frozenset().union(*a)
            left.terms.update(dict.fromkeys(self.cross([whole], b)))
            return self.guard(left)
        whole = frozenset().union(*b)  # %in%
        return _Exp(self.cross(a, [whole]))

    def cross(self, a: list, b: list) -> list:
        out: dict[frozenset, None] = {}
        for x in a:
            for y in b:
                out[x | y] = None
                self.work += 1
                if len(out) > MAX_TERMS:
                    raise self.err(TOO_MANY_TERMS)
        return list(out)

    def guard(self, e: _Exp) -> _Exp:
        if len(e.terms) > MAX_TERMS:
            raise self.err(TOO_MANY_TERMS)
        return e

    def finish(self, e: _Exp, intercept: bool = True) -> tuple[bool, tuple[tuple[str, ...], ...]]:
        """(intercept, terms): terms sorted by order (stable), variables within a term
        in order of first appearance."""
        rank = {v: i for i, v in enumerate(self.variables)}
        ordered = sorted(e.terms, key=len)
        self.work += len(ordered)
        return (
            intercept if e.intercept is None else e.intercept,
            tuple(tuple(sorted(t, key=rank.__getitem__)) for t in ordered),
        )


def _split_plus(node) -> list:
    """The top-level summands of a right-hand side in order, each with whether it is
    subtracted (``y ~ a*b - a + (1 | g)``: a*b, then a subtracted, then the bar)."""
    out, stack = [], [(node, False)]
    while stack:
        n, neg = stack.pop()
        if isinstance(n, BinOp) and n.op in ("+", "-"):
            stack += [(n.right, neg != (n.op == "-")), (n.left, neg)]
        else:
            out.append((n, neg))
    return out


def _is_bar(node) -> bool:
    return isinstance(node, Paren) and isinstance(node.inner, BinOp) and node.inner.op in ("|", "||")


def _contains_bar(node) -> bool:
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, BinOp):
            if n.op in ("|", "||"):
                return True
            stack += [n.left, n.right]
        elif isinstance(n, Paren):
            stack.append(n.inner)
        elif isinstance(n, Neg):
            stack.append(n.operand)
    return False


def _group_parts(node, err) -> list[list[str]]:
    """A grouping expression as lme4 reads it: ``g``, ``a:b``, ``a/b`` (``a`` and
    ``a:b``); returns the grouping factors, each a list of columns."""
    if isinstance(node, Paren):
        return _group_parts(node.inner, err)
    if isinstance(node, Name):
        return [[node.name]]
    if isinstance(node, BinOp) and node.op == ":":
        parts = []
        for side in (node.left, node.right):
            sub = _group_parts(side, err)
            if len(sub) != 1:
                raise err(f"grouping factor {node}: write a:b of columns")
            parts += sub[0]
        return [parts]
    if isinstance(node, BinOp) and node.op == "/":
        outer = _group_parts(node.left, err)
        inner = _group_parts(node.right, err)
        whole = list(dict.fromkeys(c for g in outer for c in g))
        return outer + [whole + g for g in inner]
    raise err(f"the grouping factor after '|' must be a column, a:b or a/b, got {node}")


def _lme4_group_name(parts: list[str], slash: bool) -> str:
    """lme4 names the inner factor of ``a/b/c`` ``c:(b:a)``; ``a:b`` written stays."""
    if not slash or len(parts) == 1:
        return ":".join(parts)
    name = parts[0]
    for p in parts[1:]:
        inner = f"({name})" if ":" in name else name
        name = f"{p}:{inner}"
    return name


def _random_terms(node, terms: _Terms, err) -> list[RandomTerm]:
    bar = node.inner
    correlated = bar.op == "|"
    intercept, expanded = terms.finish(terms.expand(bar.left))
    # The grouping is parsed as (lhs | rhs) with rhs possibly a/b or a:b.
    groups = _group_parts(bar.right, err)
    right = bar.right
    while isinstance(right, Paren):
        right = right.inner
    slash = isinstance(right, BinOp) and right.op == "/"
    out = []
    for depth, parts in enumerate(groups):
        out.append(
            RandomTerm(
                group=tuple(parts),
                intercept=intercept,
                slopes=tuple(":".join(t) for t in expanded),
                correlated=correlated,
                group_name=_lme4_group_name(parts, slash and depth > 0),
                terms=expanded,
            )
        )
    return out


def _response(node, err):
    """(label, node, trials, trials_total) of the left-hand side."""
    if isinstance(node, Call) and node.fn == "cbind":
        a = node.args
        if (
            len(a) == 2
            and not node.kwargs
            and isinstance(a[0], Name)
            and (
                isinstance(a[1], Name)
                or (
                    isinstance(a[1], BinOp)
                    and a[1].op == "-"
                    and isinstance(a[1].left, Name)
                    and isinstance(a[1].right, Name)
                )
            )
        ):
            if isinstance(a[1], Name):
                return f"{a[0].name}_prop", None, (a[0].name, a[1].name), False
            if a[1].right.name != a[0].name:
                raise err(f"cbind(s, n - s) must subtract the successes '{a[0].name}', not '{a[1].right.name}'")
            return f"{a[0].name}_prop", None, (a[0].name, a[1].left.name), True
        raise err(
            "a binomial response is cbind(successes, failures) or cbind(successes, trials - successes), "
            "with column names"
        )
    if isinstance(node, Name):
        return node.name, node, None, False
    if isinstance(node, Call) and node.fn in TRANSFORMS + ("I", "as.numeric"):
        _check_call(node, err)
        return str(node), node, None, False
    raise err(
        f"the response must be a column, {', '.join(f'{f}(y)' for f in TRANSFORMS)}, I(...) or cbind(...), got {node}"
    )


def _offset(node, err) -> tuple[str, bool]:
    arg = node.args[0] if len(node.args) == 1 and not node.kwargs else None
    if isinstance(arg, Name):
        return arg.name, False
    if isinstance(arg, Call) and arg.fn == "log" and len(arg.args) == 1 and isinstance(arg.args[0], Name):
        return arg.args[0].name, True
    raise err(f"{node}: write offset(column) or offset(log(column))")


def parse(text: str) -> Formula:
    """Parse an lme4 formula string into a :class:`Formula`.

    Raises GlmmError naming the formula and the problem when it is malformed, calls a
    function outside :data:`FUNCTIONS`, or has no random-effect term (a mixed model
    needs at least one ``(expr | group)``)."""
    return _parse(text)[0]


def parse_work(text: str) -> int:
    """How many steps parsing ``text`` takes (tokens, nodes and terms visited): the
    fuzz tests check it grows linearly with the formula's length."""
    try:
        return _parse(text)[1]
    except GlmmError:
        return -1


def _parse(text: str) -> tuple[Formula, int]:
    if not isinstance(text, str) or "~" not in text:
        raise GlmmError(
            f"formula {quote(text) if isinstance(text, str) else repr(text)[:200]}: "
            "expected 'response ~ terms + (terms | group)'"
        )
    if len(text) > MAX_LENGTH:
        raise GlmmError(f"formula {quote(text, 40)}: longer than {MAX_LENGTH} characters")
    if text.count("~") > 1:
        raise GlmmError(f"formula {quote(text)}: more than one '~'")
    problem = _structure_problem(text)
    if problem:
        raise GlmmError(f"formula {quote(text)}: {problem}")

    def err(problem: str) -> GlmmError:
        return GlmmError(f"formula {quote(text)}: {cut(problem)}")

    parser = _Parser(text)
    lhs = parser.expression()
    if parser.peek()[:2] != ("op", "~"):
        raise err(f"unexpected {parser.near()} after the response")
    parser.i += 1
    rhs = parser.expression()
    if parser.peek()[0] != "end":
        raise err(f"expected '+' or the end of the formula near {parser.near()}")
    response, response_node, trials, trials_total = _response(lhs, err)

    # The fixed part numbers its variables by itself (lme4 fits nobars(formula)); each
    # random term's by itself (model.matrix of its left side).
    fixed = _Terms(err, {})
    random_builder = _Terms(err, {})
    random_variables: dict[str, object] = {}
    random: list[RandomTerm] = []
    offset, offset_log = None, False
    fixed_items = _Exp()
    for node, negated in _split_plus(rhs):
        inner = node.operand if isinstance(node, Neg) else node
        if _is_bar(inner):
            if negated or isinstance(node, Neg):
                raise err(f"a random term cannot be removed with '-': {inner}")
            random_builder.variables = {}
            random += _random_terms(inner, random_builder, err)
            for label, tree in random_builder.variables.items():
                random_variables.setdefault(label, tree)
            continue
        if _contains_bar(node):
            raise err(f"'|' belongs inside a random term in parentheses, e.g. (1 | g); got {node}")
        if isinstance(node, Call) and node.fn == "offset":
            if offset is not None:
                raise err("more than one offset() term")
            offset, offset_log = _offset(node, err)
            continue
        fixed_items = fixed.apply("-" if negated else "+", fixed_items, fixed.expand(node), node)
    intercept, fixed_terms = fixed.finish(fixed_items)
    variables = {**fixed.variables, **{k: v for k, v in random_variables.items() if k not in fixed.variables}}
    if not random:
        raise err("no random-effect term such as (1 | group)")
    fixed_cols: dict[str, None] = {}
    for t in fixed_terms:
        for v in t:
            for c in columns_of(variables[v]):
                fixed_cols.setdefault(c, None)
    problem = _term_problem(response, trials, response_node, tuple(fixed_cols), random, offset, variables)
    if problem:
        raise err(problem)
    formula = Formula(
        text=text,
        response=response,
        trials=trials,
        offset=offset,
        offset_log=offset_log,
        fixed_variables=tuple(sorted(fixed_cols)),
        random=tuple(random),
        trials_total=trials_total,
        intercept=intercept,
        fixed_terms=fixed_terms,
        variables={**variables},
        response_node=response_node,
    )
    return formula, parser.work + fixed.work + random_builder.work


def _structure_problem(text: str) -> str | None:
    """What is wrong with the shape of ``text`` (parentheses, sides of '~', empty
    random terms), in words, or None. Checked before parsing so the common mistakes
    get a message that says what to write instead."""
    lhs, rhs = text.split("~")
    if not lhs.strip():
        return "no response before '~'"
    if not rhs.strip():
        return "no terms after '~'"
    opened: list[int] = []
    groups: list[tuple[int, int]] = []
    for i, ch in enumerate(text):
        if ch == "(":
            opened.append(i)
            if len(opened) > MAX_DEPTH:
                return f"parentheses nested more than {MAX_DEPTH} levels deep"
        elif ch == ")":
            if not opened:
                return f"unbalanced parentheses: ')' at character {i + 1} has no matching '('"
            start = opened.pop()
            if not opened:
                groups.append((start, i))
    if opened:
        return f"unbalanced parentheses: '(' at character {opened[-1] + 1} is never closed"
    for start, end in groups:
        inner = text[start + 1 : end]
        if not inner.strip():
            if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "._"):
                continue  # a call without arguments: the parser names the function
            return f"empty parentheses '{' '.join(text[start : end + 1].split())}'"
        bar = inner.find("|")
        if bar < 0 or inner.count("(", 0, bar) != inner.count(")", 0, bar):
            continue
        term = " ".join(text[start : end + 1].split())
        left, _, right = inner.partition("|")
        right = right.lstrip("|")
        if not left.strip():
            return f"empty random term '{term}': write (1 | group) for a random intercept"
        if not right.strip():
            return f"random term '{term}' names no grouping factor after '|'"
    return None


def _term_problem(response: str, trials, response_node, fixed, random, offset, variables) -> str | None:
    """Terms that parse but cannot be meant: the response used as a predictor, a
    random term that estimates nothing, the same random term twice."""
    outcome = set(trials or columns_of(response_node))
    for term in random:
        used = outcome & (set(term.group) | {c for t in term.terms for v in t for c in columns_of(variables[v])})
        if used:
            return f"the response '{used.pop()}' also appears in the random term for '{term.group_name}'"
        if not term.intercept and not term.slopes:
            return f"empty random term for '{term.group_name}': it has neither an intercept nor slopes"
    used = outcome & (set(fixed) | {offset})
    if used:
        return f"the response '{used.pop()}' also appears on the right of '~'"
    seen = set()
    for term in random:
        key = (term.group, term.intercept, term.slopes)
        if key in seen:
            return f"the random term for '{term.group_name}' appears twice"
        seen.add(key)
    return None


def check_columns(formula: Formula, columns, where: str) -> None:
    """Raise GlmmError if the formula reads a column absent from ``columns``.

    ``where`` names the data for the message (a dataset name or file path)."""
    have = [str(c) for c in columns]
    for col in formula.columns:
        if col not in have:
            close = difflib.get_close_matches(col, have, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"columns: {', '.join(sorted(have))}"
            raise GlmmError(f"formula {quote(formula.text)} names column '{col}', which {where} lacks ({hint})")
