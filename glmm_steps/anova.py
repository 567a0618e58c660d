"""Type III analysis of variance of the fixed effects, as ``lmerTest::anova(type = 3)``.

One test per model term (``recipe``, ``temp``, ``recipe:temp``), not per column: the
term's type III hypothesis matrix L is built as lmerTest's
``extract_contrasts_type3`` builds it (from the over-parameterised cell-means design
of every term, orthogonalised against the terms that contain it), then tested by an
F test whose denominator df follow the model's ``inference`` (Satterthwaite or
Kenward-Roger, :mod:`glmm_steps.inference`), or, for binomial and Poisson models and
``inference: wald``, a Wald chi-square test with rank(L) df.

Which coefficient belongs to which term (R's ``assign``) is an input,
``term_columns``: a mapping from term label to the coefficient names of its columns,
as :func:`glmm_steps.model_matrix.build` records it.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pandas as pd
from scipy import special

from glmm_steps import inference
from glmm_steps.engines.base import ANOVA_COLUMNS

_FACTOR_CALL = re.compile(r"^(?:as\.)?factor\((\w[\w.]*)\)$")


def _is_factor(col: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(col) or isinstance(col.dtype, pd.CategoricalDtype)


def _levels(col: pd.Series) -> list:
    return list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype) else sorted(col.unique())


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's zapsmall: round to ``digits`` significant digits of the largest entry."""
    big = float(np.max(np.abs(x))) if x.size else 0.0
    if big == 0 or not math.isfinite(big):
        return x
    return np.round(x, max(0, digits - int(math.ceil(math.log10(big)))))


def _variable(label: str, frame: pd.DataFrame) -> pd.Series:
    """The values of a term's variable: a column, or ``factor(col)`` of one. Other
    transforms (``poly``, ``I()``, ...) inside a term that another term contains raise
    ValueError: their cells are not the column's values."""
    if label in frame.columns:
        return frame[label]
    m = _FACTOR_CALL.match(label)
    if m and m.group(1) in frame.columns:
        return frame[m.group(1)].astype("category")
    raise ValueError(f"type III contrasts for a term containing '{label}' are not supported")


def _term_design(label: str, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """R's ``model.matrix(~ 0 + <label>)``: one column per cell of the term's factors
    (first factor varying fastest), times its numeric variables; R's column names."""
    variables = label.split(":")
    values = {v: _variable(v, frame) for v in variables}
    factors = [v for v in variables if _is_factor(values[v])]
    numeric = np.ones(len(frame))
    for v in variables:
        if v not in factors:
            numeric = numeric * values[v].to_numpy(dtype=float)
    if not factors:
        return numeric[:, None], [label]
    cols, names = [], []
    level_lists = [_levels(values[f]) for f in factors]
    for combo in itertools.product(*reversed(level_lists)):
        combo = combo[::-1]
        ind = np.ones(len(frame), dtype=bool)
        cell = dict(zip(factors, combo))
        for f, lev in cell.items():
            ind &= (values[f] == lev).to_numpy()
        cols.append(ind * numeric)
        names.append(":".join(f"{v}{cell[v]}" if v in cell else v for v in variables))
    return np.column_stack(cols), names


def _doolittle(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The unit lower-triangular factor of lmerTest's ``doolittle`` (LU without pivoting)."""
    n = x.shape[0]
    L = np.eye(n)
    U = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            U[i, j] = x[i, j] - L[i, :i] @ U[:i, j]
        for j in range(i + 1, n):
            L[j, i] = x[j, i] - L[j, :i] @ U[:i, i]
            L[j, i] = 0.0 if abs(U[i, i]) < eps else L[j, i] / U[i, i]
    L[np.abs(L) < eps] = 0.0
    return L


def type3_contrasts(
    X: np.ndarray, names: list[str], term_columns: dict[str, list[str]], frame: pd.DataFrame
) -> dict[str, np.ndarray]:
    """lmerTest's ``get_contrasts_type3`` for a treatment-coded design: ``X`` (n x p)
    with coefficient ``names``, ``term_columns`` {term: coefficient names} (no
    intercept), ``frame`` the fitted rows (factors categorical). Returns
    {term: L (q x p)}: the term's type III hypothesis, rows of zeros dropped."""
    X = np.asarray(X, dtype=float)
    index = {n: i for i, n in enumerate(names)}
    terms = list(term_columns)
    cols = {t: [index[c] for c in term_columns[t]] for t in terms}
    if X.shape[1] <= 1 or len(terms) <= 1:
        Lt = _doolittle(X.T @ X).T
        return {t: Lt[cols[t]] for t in terms}
    variables = {t: set(t.split(":")) for t in terms}
    if not any(variables[t] < variables[u] for t in terms for u in terms):
        # No term is marginal to another: each term's type III hypothesis is that its
        # own coefficients are zero (the same row space lmerTest's construction spans).
        eye = np.eye(X.shape[1])
        return {t: eye[cols[t]] for t in terms}
    has_intercept = "(Intercept)" in index
    parts, rd_names = ([np.ones((len(frame), 1))], ["(Intercept)"]) if has_intercept else ([], [])
    for t in terms:
        block, block_names = _term_design(t, frame)
        parts.append(block)
        rd_names += block_names
    rdX = np.hstack(parts)
    L = _zapsmall(np.linalg.lstsq(X, rdX, rcond=None)[0].T)  # rows: rdX columns; columns: X's
    numerics = {t: {v for v in variables[t] if not _is_factor(_variable(v, frame))} for t in terms}
    order = sorted(terms, key=lambda t: -len(variables[t]))
    for t in order:
        contains = [u for u in terms if variables[t] < variables[u] and numerics[t] == numerics[u]]
        if contains:
            A = L[:, [c for u in contains for c in cols[u]]]
            B = L[:, cols[t]]
            L[:, cols[t]] = _zapsmall(B - A @ np.linalg.lstsq(A, B, rcond=None)[0])
    rows = {n: i for i, n in enumerate(rd_names)}
    missing = [n for n in names if n not in rows]
    if missing:
        raise ValueError(f"no cell of the term design matches coefficient {missing[0]!r}")
    L = L[[rows[n] for n in names]]
    out = {}
    for t in terms:
        Lt = L[:, cols[t]].T
        out[t] = Lt[np.abs(Lt).sum(axis=1) > 1e-8]
    return out


def anova_table(
    contrasts: dict[str, np.ndarray],
    beta: np.ndarray,
    vcov: np.ndarray,
    parts: inference.SatterthwaiteParts | inference.KenwardRogerParts | None,
) -> pd.DataFrame:
    """One test per term of ``contrasts`` (from :func:`type3_contrasts`): an F test with
    Satterthwaite or Kenward-Roger denominator df when ``parts`` are given (as
    lmerTest's anova), else a Wald chi-square test with rank(L) df (``den_df`` empty).
    Columns: term, statistic, num_df, den_df, p_value, test (F or chisq), df_method."""
    rows = []
    for term, L in contrasts.items():
        if isinstance(parts, inference.SatterthwaiteParts):
            F, q, ddf = inference.satterthwaite_f(L, beta, parts)
            rows.append([term, F, q, ddf, float(special.fdtrc(q, ddf, F)), "F", "Satterthwaite"])
        elif isinstance(parts, inference.KenwardRogerParts):
            F, q, ddf = inference.kenward_roger_f(L, beta, parts)
            rows.append([term, F, q, ddf, float(special.fdtrc(q, ddf, F)), "F", "Kenward-Roger"])
        else:
            Lb = L @ beta
            chisq = float(Lb @ np.linalg.solve(L @ vcov @ L.T, Lb))
            q = int(np.linalg.matrix_rank(L))
            rows.append([term, chisq, q, np.nan, float(special.chdtrc(q, chisq)), "chisq", "Wald"])
    return pd.DataFrame(rows, columns=ANOVA_COLUMNS)
