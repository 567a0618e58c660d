"""The one model-matrix builder: a parsed formula and a data frame in, lme4's columns out.

Both engines, the config check and the fit step build their numbers here, so a
transform means the same everywhere. :func:`build` returns a :class:`ModelMatrix`:
the response (transformed), the fixed-effect columns named as lme4 prints them
(``(Intercept)``, ``I(age^2)``, ``factor(livch)1``, ``poly(Days, 2)1``,
``age:urbanY``) in R's column order, which columns belong to which term (R's
``assign``), the random-effect columns of each ``(expr | group)`` term, and the
*transform state*: what the data decided (factor levels and contrasts, ``scale``
centres and SDs, ``poly`` coefficients), as plain JSON values. Passing that state
back (``build(..., state=...)``) reapplies it to new rows exactly, as R's
``predict`` does with ``makepredictcall``: nothing data-dependent is recomputed.

Coding follows R's ``model.matrix``: a factor in a term gets contrasts when the term
without it is empty or lies within an earlier term, else one indicator per level;
without an intercept the first factor gets one indicator per level; interaction
columns vary the first variable fastest.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from glmm_steps.errors import ConfigError, DataError
from glmm_steps.formula import BinOp, Call, Formula, Name, Neg, Num, Paren, cut, quote, r_number

CONTRASTS = ("treatment", "sum")
_UNARY = {
    "log": np.log,
    "log1p": np.log1p,
    "log2": np.log2,
    "log10": np.log10,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
}


# ---- R's sort order for text --------------------------------------------------------

# R sorts strings with ICU's collation here (Sys.getlocale() is C.UTF-8 and
# capabilities("ICU") is TRUE): punctuation, then digits, then letters ignoring case;
# accents break ties, then lowercase before uppercase. The printable ASCII order below
# is R's own sort() of those characters on this machine.
_ASCII_ORDER = " _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$0123456789" + "".join(c for c in "abcdefghijklmnopqrstuvwxyz")
_PRIMARY = {c: i for i, c in enumerate(_ASCII_ORDER)}


def r_sort_key(text: str) -> tuple:
    """A sort key that orders strings as R's ``sort()`` does here (ICU root
    collation): ``_x < 10 < 2 < 3+ < a < A < a b < ab < aB < b``."""
    decomposed = unicodedata.normalize("NFD", str(text))
    primary, secondary, tertiary = [], [], []
    for ch in decomposed:
        if unicodedata.combining(ch):
            if secondary:
                secondary[-1] += ord(ch)
            continue
        low = ch.lower()
        primary.append(_PRIMARY.get(low, 1000 + ord(low)))
        secondary.append(0)
        tertiary.append(1 if ch != low else 0)
    return tuple(primary), tuple(secondary), tuple(tertiary)


def level_text(value) -> str:
    """A factor level as R prints it: ``1`` for 1.0, ``2.5``, ``TRUE``, text as is."""
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return r_number(float(value))
    return str(value)


# ---- factor options from the config --------------------------------------------------


@dataclass(frozen=True)
class FactorOption:
    """A dataset's choices for one factor column: level order, reference level and
    contrasts (``treatment`` against the first level, or ``sum``)."""

    column: str
    levels: tuple[str, ...] | None = None
    reference: str | None = None
    contrasts: str = "treatment"


def factor_options(factors) -> dict[str, FactorOption]:
    """The dataset's ``factors:`` list, each item a column name or a mapping
    ``{column, levels, reference, contrasts}``, as FactorOptions by column."""
    out: dict[str, FactorOption] = {}
    for i, item in enumerate(factors or ()):
        if isinstance(item, FactorOption):
            out[item.column] = item
        elif isinstance(item, str):
            out[item] = FactorOption(item)
        elif isinstance(item, dict):
            levels = item.get("levels")
            option = FactorOption(
                column=str(item["column"]),
                levels=tuple(level_text(v) for v in levels) if levels is not None else None,
                reference=level_text(item["reference"]) if item.get("reference") is not None else None,
                contrasts=item.get("contrasts", "treatment"),
            )
            if option.contrasts not in CONTRASTS:
                raise ConfigError(f"factors.{i}.contrasts", f"must be one of {', '.join(CONTRASTS)}")
            if option.levels and option.reference and option.reference not in option.levels:
                raise ConfigError(
                    f"factors.{i}.reference",
                    f"'{option.reference}' is not one of the levels {', '.join(option.levels)}",
                )
            out[option.column] = option
    return out


def factor_columns(factors) -> tuple[str, ...]:
    """The column names a dataset's ``factors:`` list declares."""
    return tuple(factor_options(factors))


# ---- the result -------------------------------------------------------------------------


@dataclass
class RandomBlock:
    """The columns of one ``(expr | group)`` term: lme4's names and values (rows x
    columns); ``term_of`` gives each column's term label (``(Intercept)`` for the
    intercept)."""

    names: list[str]
    values: np.ndarray
    term_of: list[str]


@dataclass
class ModelMatrix:
    """What :func:`build` makes of a formula and data: ``response`` (transformed; the
    proportion for a cbind), ``X`` with ``fixed_names`` (lme4's names, R's order),
    ``term_columns`` (term label -> its columns, ``(Intercept)`` included: R's
    ``assign``), ``random`` (one :class:`RandomBlock` per formula random term) and
    ``state`` (JSON-able: pass it back to :func:`build` to code new rows the same way)."""

    response: np.ndarray
    X: np.ndarray
    fixed_names: list[str]
    term_columns: dict[str, list[str]]
    random: list[RandomBlock]
    state: dict[str, Any] = field(default_factory=dict)

    def fixed_frame(self) -> pd.DataFrame:
        """X as a DataFrame with lme4's column names."""
        return pd.DataFrame(self.X, columns=self.fixed_names)


# ---- evaluation ------------------------------------------------------------------------


class _Builder:
    def __init__(
        self,
        formula: Formula,
        frame: pd.DataFrame,
        options: dict[str, FactorOption],
        state: dict[str, Any] | None,
        where: str,
    ):
        self.formula = formula
        self.frame = frame
        self.n = len(frame)
        self.options = options
        self.fitting = state is None
        self.state = {"factors": {}, "scale": {}, "poly": {}} if state is None else state
        self.where = where

    def error(self, problem: str) -> DataError:
        return DataError(f"{self.where}: {cut(problem)}")

    def column(self, name: str) -> pd.Series:
        if name not in self.frame.columns:
            raise self.error(f"formula {quote(self.formula.text)} needs column '{name}', which is missing")
        return self.frame[name]

    def is_factor(self, name: str) -> bool:
        col = self.column(name)
        return (
            name in self.options
            or isinstance(col.dtype, pd.CategoricalDtype)
            or not pd.api.types.is_numeric_dtype(col)
            or pd.api.types.is_bool_dtype(col)
        )

    def numeric(self, node, label: str) -> np.ndarray:
        """Evaluate an arithmetic tree to one float per row (no Python eval: a walk over
        the parsed tree with the listed functions)."""
        if isinstance(node, Name):
            col = self.column(node.name)
            if self.is_factor(node.name) and not pd.api.types.is_bool_dtype(col):
                raise self.error(
                    f"column '{node.name}' is categorical (text or listed under factors), but {label} needs numbers"
                )
            return col.to_numpy(dtype=float)
        if isinstance(node, Num):
            return np.full(self.n, node.value)
        if isinstance(node, Paren):
            return self.numeric(node.inner, label)
        if isinstance(node, Neg):
            return -self.numeric(node.operand, label)
        if isinstance(node, BinOp):
            a, b = self.numeric(node.left, label), self.numeric(node.right, label)
            with np.errstate(all="ignore"):
                return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "^": np.power}[node.op](a, b)
        if isinstance(node, Call):
            if node.fn in _UNARY:
                with np.errstate(all="ignore"):
                    return _UNARY[node.fn](self.numeric(node.args[0], label))
            if node.fn == "I":
                return self.numeric(node.args[0], label)
            if node.fn == "as.numeric":
                arg = node.args[0]
                if isinstance(arg, Name) and not pd.api.types.is_numeric_dtype(self.column(arg.name)):
                    col = self.column(arg.name)
                    if isinstance(col.dtype, pd.CategoricalDtype):
                        return col.cat.codes.to_numpy(dtype=float) + 1  # R: the level's number
                    parsed = pd.to_numeric(col.astype(str).str.strip(), errors="coerce")
                    if parsed.isna().any():
                        bad = int(np.flatnonzero(parsed.isna().to_numpy())[0])
                        raise self.error(
                            f"as.numeric({arg}): column '{arg.name}' holds text {col.iloc[bad]!r} on line {bad + 2}"
                        )
                    return parsed.to_numpy(dtype=float)
                return self.numeric(arg, label)
            if node.fn == "scale":
                return self.scale(node, label)
        raise self.error(f"{label}: cannot use {node} as a number")  # the parser refuses the rest

    def scale(self, node: Call, label: str) -> np.ndarray:
        """R's scale(): centre on the mean, divide by the SD (or, uncentred, by the root
        mean square with n - 1), remembered by the call's text."""
        key = str(node)
        x = self.numeric(node.args[0], label)
        flags = {k: v.name in ("TRUE", "T") for k, v in node.kwargs}
        if self.fitting and key not in self.state["scale"]:
            center = float(np.mean(x)) if flags.get("center", True) else 0.0
            if flags.get("scale", True):
                sd = float(np.sqrt(np.sum((x - center) ** 2) / max(len(x) - 1, 1)))
                if not sd > 0:
                    raise self.error(f"{key}: '{node.args[0]}' is constant, it cannot be scaled")
            else:
                sd = 1.0
            self.state["scale"][key] = {"center": center, "scale": sd}
        s = self.state["scale"].get(key)
        if s is None:
            raise self.error(f"{key}: no stored centre and scale in the fit's transform state")
        return (x - s["center"]) / s["scale"]

    def poly(self, node: Call, label: str) -> tuple[np.ndarray, list[str]]:
        """R's poly(): orthogonal polynomials by QR of the centred powers, or raw powers.
        The coefficients (alpha, norm2) are R's, so new rows are coded by its three-term
        recurrence, as predict() does."""
        given = dict(node.kwargs)
        degree = int((node.args[1] if len(node.args) > 1 else given.get("degree", Num(1))).value)
        raw = "raw" in given and given["raw"].name in ("TRUE", "T")
        x = self.numeric(node.args[0], label)
        names = [str(k) for k in range(1, degree + 1)]
        if raw:
            return np.column_stack([x**k for k in range(1, degree + 1)]), names
        key = str(node)
        if self.fitting and key not in self.state["poly"]:
            if len(np.unique(x)) <= degree:
                raise self.error(
                    f"{key}: the degree must be less than the number of distinct values "
                    f"of '{node.args[0]}' ({len(np.unique(x))})"
                )
            xbar = float(np.mean(x))
            xc = x - xbar
            powers = np.column_stack([xc**k for k in range(degree + 1)])
            q, r = np.linalg.qr(powers)
            z = q * np.diag(r)
            norm2 = np.sum(z**2, axis=0)
            alpha = (np.sum(xc[:, None] * z**2, axis=0) / norm2 + xbar)[:degree]
            self.state["poly"][key] = {"alpha": alpha.tolist(), "norm2": [1.0] + norm2.tolist()}
            return z[:, 1:] / np.sqrt(norm2[1:]), names
        coefs = self.state["poly"].get(key)
        if coefs is None:
            raise self.error(f"{key}: no stored coefficients in the fit's transform state")
        alpha, norm2 = np.asarray(coefs["alpha"]), np.asarray(coefs["norm2"])
        z = np.ones((len(x), degree + 1))
        z[:, 1] = x - alpha[0]
        for i in range(1, degree):
            z[:, i + 1] = (x - alpha[i]) * z[:, i] - (norm2[i + 1] / norm2[i]) * z[:, i - 1]
        return z[:, 1:] / np.sqrt(norm2[2:]), names

    def factor(self, label: str, column: str) -> tuple[np.ndarray, list[str], str]:
        """(codes, levels, contrasts) of a factor, levels as R orders them (or as the
        dataset's ``factors:`` says), remembered under the variable's label."""
        col = self.column(column)
        # One hashing pass: a code per row into the distinct values, then per value its level.
        if isinstance(col.dtype, pd.CategoricalDtype):
            # The categories in their order (the dataset's or natural), those present first
            # in line for the levels.
            numeric = pd.api.types.is_numeric_dtype(col.cat.categories.dtype)
            row_codes = col.cat.codes.to_numpy()
            uniques = list(col.cat.categories)
            present = [uniques[k] for k in np.unique(row_codes[row_codes >= 0])]
        else:
            row_codes, found_values = pd.factorize(col, sort=False)
            uniques = present = list(found_values)
            numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        texts = {u: level_text(u) for u in uniques}
        option = self.options.get(column, FactorOption(column))
        if self.fitting and label not in self.state["factors"]:
            found = list(dict.fromkeys(texts[u] for u in present))
            if option.levels is not None:
                extra = [t for t in found if t not in option.levels]
                if extra:
                    raise self.error(
                        f"column '{column}' has level '{extra[0]}', which its factors: levels "
                        f"({', '.join(option.levels)}) leave out"
                    )
                levels = [lv for lv in option.levels if lv in found]
            elif numeric:
                levels = [texts[u] for u in sorted(present)]
            elif pd.api.types.is_bool_dtype(col):
                levels = [t for t in ("FALSE", "TRUE") if t in found]
            elif isinstance(col.dtype, pd.CategoricalDtype):
                levels = found
            else:
                levels = sorted(found, key=r_sort_key)
            if len(levels) < 2:
                raise self.error(
                    f"{label} has only one level ({', '.join(levels) or 'none'}); a factor "
                    "needs two or more (R: contrasts can be applied only to factors with 2 or "
                    "more levels)"
                )
            if option.reference is not None:
                if option.reference not in levels:
                    raise self.error(
                        f"column '{column}' has no level '{option.reference}' (its factors: "
                        f"reference); levels: {', '.join(levels)}"
                    )
                levels.remove(option.reference)
                levels.insert(0, option.reference)
            self.state["factors"][label] = {"column": column, "levels": levels, "contrasts": option.contrasts}
        spec = self.state["factors"].get(label)
        if spec is None:
            raise self.error(f"{label}: no stored levels in the fit's transform state")
        index = {lv: i for i, lv in enumerate(spec["levels"])}
        lookup = np.array([index.get(texts[u], -1) for u in uniques] + [-1], dtype=np.int64)
        codes = lookup[np.asarray(row_codes)]  # a missing value's code -1 picks the final -1
        if (codes < 0).any():
            bad = int(np.flatnonzero(codes < 0)[0])
            raise self.error(
                f"column '{column}' has level {level_text(col.iloc[bad])!r} on line {bad + 2}, "
                f"not among the fitted levels ({', '.join(spec['levels'])})"
            )
        return codes, list(spec["levels"]), spec["contrasts"]

    def variable(self, label: str):
        """A variable's value: ("num", matrix, suffixes) or ("factor", codes, levels, contrasts)."""
        node = self.formula.variables[label]
        if isinstance(node, Call) and node.fn in ("factor", "as.factor"):
            arg = node.args[0]
            if not isinstance(arg, Name):
                raise self.error(f"{label}: factor() takes a column")
            return ("factor", *self.factor(label, arg.name))
        if isinstance(node, Name) and self.is_factor(node.name):
            return ("factor", *self.factor(label, node.name))
        if isinstance(node, Call) and node.fn == "poly":
            values, names = self.poly(node, label)
        else:
            values, names = self.numeric(node, label)[:, None], [""]
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise self.error(
                f"{label} is not a finite number on line {row + 2} "
                f"({', '.join(f'{c} = {_show(self.frame[c].iloc[row])}' for c in _columns(node))})"
            )
        return ("num", values, names)


def _show(value) -> str:
    """A cell value as the user wrote it (``-5.56``, not ``np.float64(-5.56)``)."""
    value = value.item() if isinstance(value, np.generic) else value
    return level_text(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)


def _columns(node) -> list[str]:
    from glmm_steps.formula import columns_of

    return list(dict.fromkeys(columns_of(node)))


def _codes(terms: tuple[tuple[str, ...], ...], intercept: bool, is_factor) -> list[dict[str, int]]:
    """R's TermCode: for each term and factor in it, 1 (contrasts) when the term without
    that factor is empty or lies within an earlier term, else 2 (one column per level);
    without an intercept the first factor of the first term holding one gets 2."""
    out = []
    for j, term in enumerate(terms):
        code = {}
        for v in term:
            rest = set(term) - {v}
            code[v] = 1 if not rest or any(rest <= set(p) for p in terms[:j]) else 2
        out.append(code)
    if not intercept:
        for j, term in enumerate(terms):
            first = next((v for v in term if is_factor(v)), None)
            if first is not None:
                out[j][first] = 2
                break
    return out


def _variable_columns(value, label: str, code: int) -> list[tuple[str, np.ndarray]]:
    if value[0] == "num":
        _, values, suffixes = value
        return [(label + s, values[:, k]) for k, s in enumerate(suffixes)]
    _, codes, levels, contrasts = value
    k = len(levels)
    if code == 2:
        return [(f"{label}{lv}", (codes == i).astype(float)) for i, lv in enumerate(levels)]
    if contrasts == "sum":
        last = (codes == k - 1).astype(float)
        return [(f"{label}{i + 1}", (codes == i).astype(float) - last) for i in range(k - 1)]
    return [(f"{label}{lv}", (codes == i).astype(float)) for i, lv in enumerate(levels) if i > 0]


def _design(b: _Builder, terms, intercept: bool, values: dict) -> tuple[list[str], list[np.ndarray], dict, list[str]]:
    names, cols, assign, term_of = [], [], {}, []
    if intercept:
        names.append("(Intercept)")
        cols.append(np.ones(b.n))
        assign["(Intercept)"] = ["(Intercept)"]
        term_of.append("(Intercept)")
    codes = _codes(terms, intercept, lambda v: values[v][0] == "factor")
    for term, code in zip(terms, codes):
        current = [("", np.ones(b.n))]
        for v in term:
            parts = _variable_columns(values[v], v, code[v])
            current = [(f"{n1}:{n2}" if n1 else n2, a1 * a2) for n2, a2 in parts for n1, a1 in current]
        label = ":".join(term)
        assign[label] = [n for n, _ in current]
        names += assign[label]
        cols += [a for _, a in current]
        term_of += [label] * len(current)
    return names, cols, assign, term_of


def build(
    formula: Formula,
    frame: pd.DataFrame,
    factors=(),
    state: dict[str, Any] | None = None,
    where: str = "data",
    response: bool = True,
) -> ModelMatrix:
    """Build the model matrices of ``formula`` on ``frame`` (see the module docstring).

    ``factors``: the dataset's ``factors:`` list (names or option mappings). ``state``:
    a fit's transform state to reapply to new rows (None: compute it from ``frame``).
    ``response=False`` leaves the response out (an empty array): the right-hand side of
    a simulated design is checked before any outcome is drawn.
    Raises DataError naming the column, term and line of a value it cannot code."""
    b = _Builder(formula, frame, factor_options(factors), None if state is None else _copy(state), where)
    values = {}
    for term in formula.fixed_terms:
        for v in term:
            if v not in values:
                values[v] = b.variable(v)
    names, cols, assign, _ = _design(b, formula.fixed_terms, formula.intercept, values)
    X = np.column_stack(cols) if cols else np.zeros((b.n, 0))
    random = []
    for rterm in formula.random:
        for term in rterm.terms:
            for v in term:
                if v not in values:
                    values[v] = b.variable(v)
        rnames, rcols, rassign, term_of = _design(b, rterm.terms, rterm.intercept, values)
        if not rterm.correlated:
            wide = [t for t, cs in rassign.items() if len(cs) > 1]
            if wide:
                raise b.error(
                    f"{rterm}: '{wide[0]}' has {len(rassign[wide[0]])} columns, and '||' would make "
                    "them independent where lme4 keeps a factor's columns correlated; write "
                    f"(0 + {wide[0]} | {rterm.group_name}) as a term of its own, as lme4 "
                    "expands '||'"
                )
        random.append(RandomBlock(rnames, np.column_stack(rcols), term_of))
    y = response_values(formula, frame, b) if response else np.zeros(0)
    return ModelMatrix(response=y, X=X, fixed_names=names, term_columns=assign, random=random, state=b.state)


def response_values(
    formula: Formula, frame: pd.DataFrame, builder: _Builder | None = None, where: str = "data"
) -> np.ndarray:
    """The response per row: the column, its transform (``log(y)``), or for a cbind the
    proportion successes / trials. Raises DataError where a transform is not finite."""
    if formula.trials:
        return frame[formula.trials[0]].to_numpy(dtype=float) / formula.n_trials(frame)
    b = builder or _Builder(formula, frame, {}, None, where)
    y = b.numeric(formula.response_node, f"the response {formula.response}")
    bad = ~np.isfinite(y)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        cols = ", ".join(f"{c} = {_show(frame[c].iloc[row])}" for c in _columns(formula.response_node))
        line = frame.index[row] + 2 if isinstance(frame.index, pd.RangeIndex) or frame.index.is_integer() else row + 2
        raise b.error(f"the response {formula.response} is not a finite number on line {line} ({cols})")
    return y


def _copy(state: dict[str, Any]) -> dict[str, Any]:
    return {k: dict(state.get(k, {})) for k in ("factors", "scale", "poly")}
