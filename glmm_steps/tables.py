"""Tables on disk as CSV or Parquet, the format chosen by the file's extension.

CSV stays the default for small files (a person can read it); Parquet is for large
ones: a million-row CSV takes seconds to write and parse, the same Parquet file a
fraction of that. Both writers are byte-reproducible: the same table gives the same
bytes. Parquet files carry no timestamp; their metadata (pyarrow's version and
pandas' schema) depends only on the pinned packages, and the compression and its
level are fixed here rather than left to pyarrow's defaults.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Above this many rows an "auto" format chooses Parquet (config keys datasets.<name>.format
# and models.<name>.table_format): 100,000 rows are 3-8 MB of CSV, written in under a second;
# a million rows of predictions take seconds.
LARGE_ROWS = 100_000
# The significant digits of every number in a result table (CSV and Parquet alike).
SIGNIFICANT_DIGITS = 10
# Fixed here, not left to pyarrow's defaults: the same table must give the same bytes.
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1, "write_statistics": True, "data_page_version": "2.0"}


@functools.lru_cache(maxsize=1024)
def _text(values: tuple[str, ...]):
    return pd.array(list(values), dtype="str")


@functools.lru_cache(maxsize=256)
def _column_index(names: tuple[str, ...]) -> pd.Index:
    # An Index is immutable, so tables with the same columns can share one: building it
    # infers pandas' str dtype, three times the cost of the rest of a small table.
    return pd.Index(list(names))


def from_columns(columns: dict[str, Any]) -> pd.DataFrame:
    """The table of equal-length ``columns`` (name -> values), as ``pd.DataFrame(columns)``
    gives it for text and float columns: a tuple or list of strings becomes a column of
    pandas' str dtype (its array built once per distinct list of strings), anything
    else float64. Built without pandas' per-column inference and with one shared column
    index per list of names: about 20 µs for a small table against 60-90 µs from a dict,
    and a study's refit makes two per replicate. Every
    column is the table's own (pandas does not track arrays shared this way for
    copy-on-write)."""
    # Each table gets its own copy of a cached text array (a new wrapper of the same
    # immutable Arrow data, 0.4 µs): a frame built this way does not register shared
    # arrays for copy-on-write, so a shared one would be changed in place by an edit.
    arrays = [
        _text(tuple(v)).copy()
        if isinstance(v, tuple | list) and v and isinstance(v[0], str)
        else np.array(v, dtype=float)  # a copy, never the caller's array
        for v in columns.values()
    ]
    n = len(arrays[0]) if arrays else 0
    if any(len(a) != n for a in arrays):
        raise ValueError("columns of different lengths")
    # pandas' own constructor behind DataFrame(dict), less the inference (pinned pandas).
    return pd.DataFrame._from_arrays(
        arrays, columns=_column_index(tuple(columns)), index=pd.RangeIndex(n), verify_integrity=False
    )


def column(table: pd.DataFrame, name: str):
    """The array holding ``table``'s column ``name`` (numpy, or pandas' for text; the
    names must be unique), not a copy: read it, never write to it. Reached without
    building a Series, which costs ten times as much (a study's batch reads a few
    columns of each refit's tables)."""
    # pandas' own accessor behind table[name] (pinned pandas), less the Series.
    return table._get_column_array(table.columns.get_loc(name))


def format_of(path: str | Path) -> str:
    """``"parquet"`` for a ``.parquet`` file, ``"csv"`` for any other name."""
    return "parquet" if Path(path).suffix.lower() == ".parquet" else "csv"


def auto_format(nrows: int) -> str:
    """The format an ``auto`` setting picks for a table of ``nrows`` rows."""
    return "parquet" if nrows > LARGE_ROWS else "csv"


def read_columns(path: str | Path) -> list[str]:
    """Column names of a table file, without reading its rows."""
    if format_of(path) == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    return list(pd.read_csv(path, nrows=0).columns)


def read_table(path: str | Path, columns: list[str] | None = None, csv_dtype: dict | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file; ``columns`` limits the read to those columns, in the
    file's order (names the file lacks are skipped). ``csv_dtype`` sets column types of a
    CSV file (Parquet stores its own). Parser errors propagate."""
    if format_of(path) == "parquet":
        import pyarrow.parquet as pq

        if columns is not None:
            wanted = set(columns)
            columns = [c for c in pq.read_schema(path).names if c in wanted]
        return pq.read_table(path, columns=columns).to_pandas()
    if columns is None:
        return pd.read_csv(path, dtype=csv_dtype)
    wanted = set(columns)
    return pd.read_csv(path, usecols=lambda c: c in wanted, dtype=csv_dtype)


def write_result(table: pd.DataFrame, path: str | Path) -> None:
    """Write a result table as CSV or Parquet (by ``path``'s extension), numbers rounded
    to ``SIGNIFICANT_DIGITS`` significant digits (:func:`write_table`)."""
    write_table(table, path, digits=SIGNIFICANT_DIGITS)


def _round_mantissa(values: np.ndarray, digits: int) -> np.ndarray:
    """``values`` rounded to nearest with enough mantissa bits for ``digits`` decimal
    digits (34 bits for 10): last-bit differences between machines vanish, as in a
    CSV written with ``%.{digits}g``, at a tenth of the cost of decimal rounding."""
    drop = 52 - int(np.ceil(digits * np.log2(10)))
    if drop <= 0:
        return values
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
    rounded = ((bits + (1 << (drop - 1))) & ~((1 << drop) - 1)).view(np.float64)
    # Subnormal numbers have fewer bits to spare, and infinities and NaN none.
    normal = np.isfinite(rounded) & (np.abs(values) >= np.finfo(np.float64).tiny)
    return np.where(normal, rounded, values)


def write_table(table: pd.DataFrame, path: str | Path, digits: int | None = None) -> None:
    """Write ``table`` (no index) as CSV or Parquet, by ``path``'s extension.

    ``digits`` keeps that many significant decimal digits of floating-point columns
    (CSV: ``%.{digits}g``; Parquet: the mantissa bits they need); None writes them
    exactly (CSV: shortest round-trip form)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if format_of(path) == "csv":
        table.to_csv(path, index=False, float_format=f"%.{digits}g" if digits else None, lineterminator="\n")
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    floats = [c for c in table.columns if pd.api.types.is_float_dtype(table[c])]
    if digits:
        table = table.assign(**{c: _round_mantissa(table[c].to_numpy(), digits) for c in floats})
    # Dictionary encoding pays for ids and codes, not for a million distinct floats.
    dictionary = [c for c in table.columns if c not in floats]
    # Floats are stored byte-stream-split: their bytes regrouped by position compress to
    # about 70% of the plain encoding's size, and the writer is faster too (a million
    # rows of predictions: 16 MB in 0.12 s against 23 MB in 0.14 s).
    pq.write_table(
        pa.Table.from_pandas(table, preserve_index=False),
        path,
        use_dictionary=dictionary,
        column_encoding={c: "BYTE_STREAM_SPLIT" for c in floats} or None,
        **PARQUET_OPTIONS,
    )
