"""Read data files and prepare the columns a formula needs, refusing data that
cannot be fitted as declared.

Every problem is a one-line :class:`DataError` that starts with the file and names
the column, the line and what was expected; what is done to the data instead of
refusing it (rows with missing values dropped when the dataset allows it, numeric
grouping columns treated as factors) is returned as notes for ``fit_stats.json``.
Line numbers count the header as line 1, as an editor shows the file.

Grouping columns become pandas categoricals whose levels keep their natural order
(numeric ids sort as numbers, 2 before 10, as R's ``factor()`` does), so tables of
random effects list hospitals 1..10, not 1, 10, 2, ...
"""

from __future__ import annotations

import csv
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from glmm_steps import tables
from glmm_steps.errors import ConfigError, DataError
from glmm_steps.formula import Formula

_PARQUET_ERRORS = (OSError, ValueError)


@contextmanager
def _parquet_errors(path: str | Path):
    """Turn pyarrow's error on an unreadable Parquet file into a one-line DataError."""
    try:
        yield
    except _PARQUET_ERRORS as e:
        raise DataError(f"{path}: cannot read as Parquet ({str(e).splitlines()[0]})") from None


# First bytes of files people save with a .csv name by mistake.
_MAGIC = {
    b"PK\x03\x04": "a zip archive (an Excel .xlsx file?)",
    b"\xd0\xcf\x11\xe0": "an old Excel .xls file",
    b"PAR1": "a Parquet file",
    b"\x89PNG": "a PNG image",
    b"%PDF": "a PDF document",
    b"\x1f\x8b": "gzip-compressed (name it .csv.gz)",
}
_SNIFF_LINES = 50  # lines checked against the header before any name is quoted
_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _sniff(path: Path) -> list[str]:
    """Check that ``path`` looks like a CSV file and return its header's names.
    Raises DataError (empty file, binary content, one column that holds a ';' or
    tab-separated header, repeated column names)."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    if not head.strip():
        raise DataError(f"{path}: empty file")
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            raise DataError(f"{path}: not a CSV file, it is {kind}")
    if b"\x00" in head:
        raise DataError(f"{path}: not a CSV file (binary content)")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a character cut at the 64 KiB boundary
            raise DataError(
                f"{path}: not UTF-8 text (byte 0x{head[e.start]:02x} at offset {e.start}); "
                "save it as CSV with UTF-8 encoding"
            ) from None
        text = head[: e.start].decode("utf-8")
    # Column names are quoted in messages (a missing column, a typo's "did you mean"),
    # so a file must read as a table first: a first line without separators, or lines
    # that do not match it, are reported without quoting the file (path: /etc/passwd).
    lines = text.lstrip("\ufeff").splitlines()
    if len(head) == 65536 and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut at the 64 KiB boundary
    rows = csv.reader(lines[:_SNIFF_LINES])
    header = next(rows, [])
    if len(header) == 1:
        for sep, name in ((";", "';'"), ("\t", "tabs")):
            if sep in header[0]:
                raise DataError(
                    f"{path}: not comma-separated: its first line has {name} and no ','; "
                    "save the file with ',' between columns"
                )
        raise DataError(f"{path}: not a table: its first line has no ',' between column names")
    try:
        for row in rows:
            if row and len(row) != len(header):
                raise DataError(f"{path}: line {rows.line_num} has {len(row)} fields, the header has {len(header)}")
    except csv.Error:
        pass  # a quoted field cut by the 50-line window; pandas reads the whole file next
    seen = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path}: column {name!r} appears twice in the header")
        seen.add(name)
    return header


def read_header(path: str | Path, key: str = "path") -> list[str]:
    """Column names of a CSV file, reading only its first bytes.

    ``key`` names the config key for the message when the file is missing.
    Raises ConfigError (missing file) or DataError (not a usable CSV file)."""
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "no such file"
        raise ConfigError(key, f"{what} '{path}'")
    if tables.format_of(p) == "parquet":
        with _parquet_errors(path):
            return tables.read_columns(p)
    return [n.lstrip("\ufeff") for n in _sniff(p)]


def read_data(path: str | Path, columns=None) -> pd.DataFrame:
    """Read a data file (CSV, or Parquet by its ``.parquet`` extension) into a
    DataFrame, keeping only ``columns`` when given (those the file lacks are left
    out: :func:`model_frame` names them).

    Raises DataError on a missing, empty or unreadable file, or one with no rows.
    Parquet reads only ``columns``; every CSV column is parsed: with ``usecols``
    pandas silently drops the extra field of a row that has one too many, a row
    shifted by a stray comma."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: no such file")
    if tables.format_of(p) == "parquet":
        with _parquet_errors(path):
            frame = tables.read_table(p, columns=columns)  # names the file lacks are skipped there
        if frame.empty:
            raise DataError(f"{path}: no data rows")
        return frame
    _sniff(p)
    try:
        frame = pd.read_csv(p, encoding="utf-8-sig")
    except pd.errors.ParserError as e:
        m = _FIELDS.search(str(e))
        if m:
            raise DataError(f"{path}: line {m.group(2)} has {m.group(3)} fields, the header has {m.group(1)}") from None
        raise DataError(f"{path}: cannot read as CSV ({str(e).splitlines()[0]})") from None
    except (pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: cannot read as CSV ({str(e).splitlines()[0]})") from None
    if frame.empty:
        raise DataError(f"{path}: no data rows below the header")
    if columns is not None:
        frame = frame.loc[:, [c for c in frame.columns if c in set(columns)]]
    return frame


def as_factor(values: pd.Series) -> pd.Categorical:
    """A grouping column as a categorical with levels in natural (sorted) order."""
    if pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype):
        # One hashing pass instead of unique-then-lookup: 2x faster on a million ids.
        codes, levels = pd.factorize(values, sort=True)
        return pd.Categorical.from_codes(codes, categories=levels)
    from glmm_steps.model_matrix import r_sort_key

    if isinstance(values.dtype, pd.CategoricalDtype):
        return pd.Categorical(values)
    # Text sorts as R sorts it (ICU: case-insensitive first, '3+' after '2'); numbers
    # mixed with text become all text, as R's factor() would make them.
    values = values.map(lambda v: v if pd.isna(v) else str(v))
    levels = sorted(pd.unique(values.dropna()), key=r_sort_key)
    return pd.Categorical(values, categories=levels)


def _show(value) -> str:
    """A cell value as the user wrote it: ``1``, ``0.5``, ``'abc'`` (not ``np.int64(1)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _line(frame: pd.DataFrame, mask) -> int:
    """File line of the first row where ``mask`` holds. The frame's index is the row's
    position in the data as read (header is line 1, so row 0 is line 2)."""
    return int(frame.index[np.flatnonzero(np.asarray(mask))[0]]) + 2


def _check_text(frame: pd.DataFrame, formula: Formula, where: str, factors) -> None:
    """Refuse text where numbers are needed: in the response, trials and offset, and
    in a covariate whose values are mostly numbers (one stray 'n/a' or '1,5' makes
    pandas read the whole column as text, which would silently fit it as a factor)."""
    numeric = [c for c in formula.response_columns if c not in formula.converted_columns] + (
        [formula.offset] if formula.offset else []
    )
    wrapped = set(formula.factor_columns) | set(formula.converted_columns)
    covariates = {c: None for c in formula.fixed_variables + formula.slope_columns if c not in wrapped}
    for c in list(dict.fromkeys(numeric)) + [c for c in covariates if c not in numeric]:
        col = frame[c]
        if (
            pd.api.types.is_numeric_dtype(col)
            or pd.api.types.is_bool_dtype(col)
            or c in factors
            or isinstance(col.dtype, pd.CategoricalDtype)
        ):  # a refit's rows: already a factor
            continue
        values = col.dropna()
        parsed = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
        bad = parsed.isna()
        if c in numeric:
            if bad.any():
                raise DataError(
                    f"{where}: column '{c}' must be numeric, found text "
                    f"{_show(values[bad].iloc[0])} on line {values[bad].index[0] + 2}"
                )
        elif not bad.any() or bad.mean() > 0.5:
            # All text, or all numbers stored as text: a categorical covariate by intent.
            if not bad.any() and len(values):
                raise DataError(
                    f"{where}: column '{c}' holds numbers stored as text (e.g. {_show(values.iloc[0])}); "
                    f"store them as numbers, or write factor({c}) in the formula or list the column "
                    "under the dataset's factors:"
                )
            continue
        else:
            raise DataError(
                f"{where}: column '{c}' looks numeric but holds text {_show(values[bad].iloc[0])} "
                f"on line {values[bad].index[0] + 2}; if '{c}' is categorical write factor({c}) "
                "in the formula or list it under the dataset's factors:, else fix the value "
                "or leave the cell empty to mark it missing"
            )
        frame[c] = pd.to_numeric(col.astype(str).str.strip(), errors="coerce").where(col.notna())


def _factor_response(frame: pd.DataFrame, formula: Formula, family: str | None) -> list[str]:
    """A binomial response held as text (``use``: N/Y) is a factor, as in R's glm and
    lme4's glmer: its first level (R's sort order) is failure (0), every other success
    (1). Converted in place; returns the note saying so."""
    from glmm_steps.model_matrix import r_sort_key

    y = formula.response
    if family != "binomial" or formula.trials or formula.response_columns != (y,) or y not in frame:
        return []
    col = frame[y]
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return []
    values = col.dropna().astype(str)
    if not pd.to_numeric(values.str.strip(), errors="coerce").isna().any():
        return []  # numbers stored as text: _check_text says so
    levels = sorted(pd.unique(values), key=r_sort_key)
    frame[y] = (col.astype(str) != levels[0]).astype(float).where(col.notna())
    others = ", ".join(f"'{v}'" for v in levels[1:]) or "none"
    return [f"binomial response '{y}' is text: '{levels[0]}' (its first level) is 0, {others} 1, as in R"]


def _drop_missing(frame: pd.DataFrame, where: str, drop_missing: bool) -> tuple[pd.DataFrame, list[str]]:
    """Rows with a missing value: an error unless the dataset allows dropping them,
    then a note with the count per column."""
    missing = frame.isna()
    rows = missing.any(axis=1)
    if not rows.any():
        return frame, []
    per_column = ", ".join(f"{c}: {int(n)}" for c, n in missing.sum().items() if n)
    if not drop_missing:
        first = frame.columns[missing.loc[_line(frame, rows) - 2].to_numpy()][0]
        raise DataError(
            f"{where}: {int(rows.sum())} rows have missing values ({per_column}; first on line "
            f"{_line(frame, rows)}, column '{first}'); fill them in, or set drop_missing: true "
            "on the dataset to drop those rows"
        )
    kept = frame.loc[~rows]
    if kept.empty:
        raise DataError(f"{where}: no complete rows for the columns {', '.join(frame.columns)}")
    return kept, [f"dropped {int(rows.sum())} of {len(frame)} rows with missing values ({per_column})"]


def _check_response(frame: pd.DataFrame, formula: Formula, where: str, family: str | None) -> None:
    """The response can be modelled: it varies, and its values fit the family
    (binomial 0/1, or cbind counts with trials >= successes; Poisson counts)."""

    def first_bad(col: str, bad) -> str:
        return f"{_show(frame[col].to_numpy()[np.asarray(bad)][0])} on line {_line(frame, bad)}"

    def whole(col: str):
        v = frame[col].to_numpy(dtype=float)
        return v != np.round(v)

    if formula.trials:
        s, f = formula.trials
        second = "trials" if formula.trials_total else "failures"
        for col, role in ((s, "successes"), (f, second)):
            if (neg := frame[col].to_numpy(dtype=float) < 0).any():
                extra = ": trials (successes + failures) are fewer than successes" if role == "failures" else ""
                raise DataError(f"{where}: column '{col}' ({role} in cbind) is negative ({first_bad(col, neg)}){extra}")
            if (frac := whole(col)).any():
                raise DataError(
                    f"{where}: column '{col}' ({role} in cbind) must hold whole counts, found {first_bad(col, frac)}"
                )
        n = formula.n_trials(frame)
        if (short := n < frame[s].to_numpy(dtype=float)).any():
            raise DataError(f"{where}: column '{f}' (trials in cbind) is below the successes ({first_bad(f, short)})")
        if (empty := n == 0).any():
            zero = "" if formula.trials_total else " (both 0)"
            raise DataError(f"{where}: {formula.trials_text} has no trials{zero} on line {_line(frame, empty)}")
    elif family == "binomial":
        y = frame[formula.response]
        if (bad := ~y.astype(float).isin([0.0, 1.0]).to_numpy()).any():
            raise DataError(
                f"{where}: binomial response '{formula.response}' must be 0 or 1, found "
                f"{first_bad(formula.response, bad)}; for counts out of n trials write "
                "cbind(successes, failures)"
            )
    elif family == "poisson":
        y = frame[formula.response].to_numpy(dtype=float)
        if (bad := (y < 0) | (y != np.round(y))).any():
            raise DataError(
                f"{where}: Poisson response '{formula.response}' must be a count (0, 1, 2, ...), "
                f"found {first_bad(formula.response, bad)}"
            )
    if formula.offset and formula.offset_log:
        if (bad := frame[formula.offset].to_numpy(dtype=float) <= 0).any():
            raise DataError(
                f"{where}: offset column '{formula.offset}' must be positive for log(), "
                f"found {first_bad(formula.offset, bad)}"
            )
    if formula.trials:
        y, name = frame[formula.trials[0]] / formula.n_trials(frame), formula.trials_text
    else:
        y, name = frame[formula.response], f"'{formula.response}'"
    # Whether any value differs from the first: nunique() hashes a million floats.
    v = y.to_numpy()
    if not (v != v[0]).any():
        raise DataError(
            f"{where}: the response {name} has the same value ({_show(y.iloc[0])}) on every row; "
            "there is nothing to model"
        )


def _check_groups(frame: pd.DataFrame, formula: Formula, where: str, family: str | None) -> None:
    """Each random term's grouping factor has at least 2 levels, and (for a linear
    mixed model, as lme4's check.nobs.vs.nlev) fewer levels than rows."""
    for term in formula.random:
        n = len(frame[list(term.group)].drop_duplicates())
        if n < 2:
            level = _show(frame[term.group[0]].iloc[0])
            raise DataError(
                f"{where}: grouping factor '{term.group_name}' has only 1 level ({level}); "
                "a random effect needs at least 2"
            )
        if family == "gaussian" and n >= len(frame):
            raise DataError(
                f"{where}: grouping factor '{term.group_name}' has as many levels ({n}) as rows; "
                "its random effect cannot be told apart from the residual"
            )


def model_frame(
    data: pd.DataFrame,
    formula: Formula,
    where: str,
    factors=(),
    *,
    family: str | None = None,
    drop_missing: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """The columns ``formula`` reads, checked and typed for fitting, and notes on what
    was done to them. Returns ``(frame, notes)``.

    Grouping columns and the columns named in ``factors`` become categoricals with
    levels in natural order (a numeric-coded covariate in ``factors`` gets treatment
    contrasts, one coefficient per level, as R's ``factor()``); a ``cbind(s, f)`` response
    adds the proportion column ``formula.response`` (successes / trials). Rows with
    a missing value are an error unless ``drop_missing``. ``family`` (when given)
    checks the response's values. ``where`` names the data in error messages.
    Raises DataError. A transformed response (``log(y)``) is added as a column of that name.
    ``factors`` is the dataset's ``factors:`` list (names or option mappings)."""
    from glmm_steps.model_matrix import factor_columns, response_values

    factors = factor_columns(factors)
    missing = [c for c in formula.columns if c not in data.columns]
    if missing:
        raise DataError(f"{where}: formula {formula.text!r} needs column '{missing[0]}', which is missing")
    # Keep the file's column order so predictions.csv reads like the input.
    frame = data.loc[:, [c for c in data.columns if c in formula.columns]].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"{where}: no data rows")
    outcome = set(formula.response_columns) | {formula.offset}
    for c in factors:
        if c in outcome:
            raise DataError(
                f"{where}: column '{c}' is listed under the dataset's factors, but the formula "
                f"{formula.text!r} uses it as a number (response, trials or offset)"
            )
    notes_first = _factor_response(frame, formula, family)
    _check_text(frame, formula, where, factors)
    for c in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]):
            if (inf := np.isinf(frame[c].to_numpy(dtype=float))).any():
                raise DataError(f"{where}: column '{c}' holds an infinite value on line {_line(frame, inf)}")
    frame, notes = _drop_missing(frame, where, drop_missing)
    notes = notes_first + notes
    numeric_groups = [
        g for g in formula.grouping_factors if pd.api.types.is_numeric_dtype(frame[g]) and g not in factors
    ]
    if numeric_groups:
        plural = len(numeric_groups) > 1
        notes.append(
            f"numeric grouping column{'s' if plural else ''} {', '.join(numeric_groups)} "
            f"treated as {'factors' if plural else 'a factor'} (one level per value)"
        )
    _check_groups(frame, formula, where, family)
    for g in dict.fromkeys(formula.grouping_factors + tuple(c for c in factors if c in frame)):
        frame[g] = as_factor(frame[g])
    if not formula.trials and formula.response not in frame.columns:
        frame[formula.response] = response_values(formula, frame, where=where)
    _check_response(frame, formula, where, family)
    if formula.trials:
        frame[formula.response] = response_values(formula, frame, where=where)
    return frame.reset_index(drop=True), notes
