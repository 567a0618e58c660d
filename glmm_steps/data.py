"""Read data files (CSV or Parquet) and prepare the columns a formula needs.

Grouping columns become pandas categoricals whose levels keep their natural order
(numeric ids sort as numbers, 2 before 10, as R's ``factor()`` does), so tables of
random effects list hospitals 1..10, not 1, 10, 2, ...
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from glmm_steps import tables
from glmm_steps.errors import DataError, GlmmError
from glmm_steps.formula import Formula

_UNREADABLE = (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError)


def _unreadable(path: str | Path, error: Exception) -> DataError:
    kind = tables.format_of(path).replace("csv", "CSV").replace("parquet", "Parquet")
    return DataError(f"{path}: cannot read as {kind} ({str(error).splitlines()[0]})")


def read_header(path: str | Path, key: str = "path") -> list[str]:
    """Column names of a data file (CSV, or Parquet by its ``.parquet`` extension),
    reading only its first line or its schema.

    ``key`` names the config key for the message when the file is missing."""
    p = Path(path)
    if not p.is_file():
        raise GlmmError(f"config error: {key}: no such file '{path}'")
    try:
        return tables.read_columns(p)
    except _UNREADABLE as e:
        raise _unreadable(path, e) from None


def read_data(path: str | Path, columns=None) -> pd.DataFrame:
    """Read a data file (CSV, or Parquet by its ``.parquet`` extension) into a DataFrame.

    ``columns`` limits the read to those of the named columns the file has (in the
    file's order): a fit reads only its formula's columns, not a wide file's every
    column. Raises DataError on a missing or unreadable file."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    try:
        return tables.read_table(path, columns=None if columns is None else list(columns))
    except _UNREADABLE as e:
        raise _unreadable(path, e) from None


def as_factor(values: pd.Series) -> pd.Categorical:
    """A grouping column as a categorical with levels in natural (sorted) order."""
    levels = sorted(pd.unique(values.dropna()))
    return pd.Categorical(values, categories=levels)


def model_frame(data: pd.DataFrame, formula: Formula, where: str, factors=()) -> pd.DataFrame:
    """The columns ``formula`` reads, typed for fitting, rows with a missing value removed.

    Grouping columns and the columns named in ``factors`` become categoricals with
    levels in natural order (a numeric-coded covariate in ``factors`` gets treatment
    contrasts, one coefficient per level, as R's ``factor()``); a ``cbind(s, f)`` response
    adds the proportion column ``formula.response`` (trials are ``s + f``).
    ``where`` names the data in error messages. Raises DataError."""
    missing = [c for c in formula.columns if c not in data.columns]
    if missing:
        raise DataError(f"{where}: formula {formula.text!r} needs column '{missing[0]}', which is missing")
    # Keep the file's column order so predictions.csv reads like the input.
    frame = data.loc[:, [c for c in data.columns if c in formula.columns]].dropna()
    if frame.empty:
        raise DataError(f"{where}: no complete rows for the columns {', '.join(formula.columns)}")
    for g in dict.fromkeys(formula.grouping_factors + tuple(c for c in factors if c in frame)):
        frame[g] = as_factor(frame[g])
    # Fixed-effect covariates may be text (factors with treatment contrasts, as in R);
    # the response, trials and offset must be numbers.
    numeric = list(formula.trials or (formula.response,)) + ([formula.offset] if formula.offset else [])
    for c in numeric:
        if not pd.api.types.is_numeric_dtype(frame[c]):
            raise DataError(f"{where}: column '{c}' must be numeric, found text such as {frame[c].iloc[0]!r}")
    if formula.trials:
        s, f = formula.trials
        frame[formula.response] = frame[s] / (frame[s] + frame[f])
    return frame.reset_index(drop=True)
