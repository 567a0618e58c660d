"""A FitResult on disk, in a format whose reading cannot run code.

The fit step hands its result to the extract, verify and compare steps through the
results folder, which anyone with write access to it can edit: a pickle there would
run whatever it holds when read. Instead a fit file is a zip archive of plain data,
readable without this package or the engine:

- ``fields.json``: every field that is JSON (numbers, strings, booleans, None, and
  lists and string-keyed dicts of them), nested dataclasses (the ModelSpec) as
  objects of their fields;
- ``<field>.arrow``: each DataFrame field, as an Arrow IPC file (readable by pyarrow,
  R's arrow, ...); unlike Parquet it keeps every dtype exactly, categoricals of
  numeric ids included, and the index;
- ``<field>.npy``: each numpy array field, in NumPy's format, read back with
  ``allow_pickle=False`` (object arrays are refused when writing).

pyarrow builds no Python objects from a file's contents beyond
tables (it has refused pickled extension types since 14.0.1).

Writing and reading go over the dataclass's fields, so a new FitResult field of one
of these kinds round-trips with no change here; a field of any other kind is refused
when written, never silently changed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import typing
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

FIELDS = "fields.json"
# A fit file of a million-row fit is some tens of MB; a member claiming more than this
# is not one of ours (a zip bomb), and is refused before it is inflated.
MAX_MEMBER_BYTES = 4 << 30
# Fixed member dates, so the archive's bytes depend on the fit alone.
_DATE = (1980, 1, 1, 0, 0, 0)


class FitFileError(ValueError):
    """A fit file that is not one this module wrote (corrupt, edited, or not a fit)."""


def save(obj: Any, path: str | Path) -> None:
    """Write the dataclass instance ``obj`` to ``path`` (see the module docstring).
    Raises TypeError naming a field whose value is none of the supported kinds."""
    members: dict[str, bytes] = {}
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, pd.DataFrame):
            members[f"{f.name}.arrow"] = _arrow_bytes(value, f.name)
        elif isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError(f"field {f.name!r}: an object array cannot be stored without pickle")
            buffer = io.BytesIO()
            np.save(buffer, value, allow_pickle=False)
            members[f"{f.name}.npy"] = buffer.getvalue()
        else:
            fields[f.name] = _to_json(value, f.name)
    members[FIELDS] = json.dumps(fields, sort_keys=True).encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(members):
            archive.writestr(zipfile.ZipInfo(name, date_time=_DATE), members[name])


def load(cls: type, path: str | Path) -> Any:
    """Read an instance of dataclass ``cls`` written by :func:`save`. Reading runs no
    code from the file: JSON, Arrow IPC (pyarrow) and ``.npy`` with pickles refused.
    Raises FitFileError for a file that is not such an archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.file_size > MAX_MEMBER_BYTES:
                    raise FitFileError(f"{path}: member {info.filename!r} is too large for a fit file")
            names = set(archive.namelist())
            fields = json.loads(archive.read(FIELDS))
            values: dict[str, Any] = {}
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                if f"{f.name}.arrow" in names:
                    reader = pa.ipc.open_file(pa.BufferReader(archive.read(f"{f.name}.arrow")))
                    values[f.name] = reader.read_all().to_pandas()
                elif f"{f.name}.npy" in names:
                    values[f.name] = np.load(io.BytesIO(archive.read(f"{f.name}.npy")), allow_pickle=False)
                elif f.name in fields:
                    values[f.name] = _from_json(fields[f.name], hints.get(f.name))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, pa.ArrowException) as e:
        if isinstance(e, FitFileError):
            raise
        raise FitFileError(f"{path}: not a readable fit file ({type(e).__name__}: {e})") from None
    try:
        return cls(**values)
    except TypeError as e:
        raise FitFileError(f"{path}: not a fit file of this version ({e})") from None


def _arrow_bytes(frame: pd.DataFrame, name: str) -> bytes:
    """``frame`` (with its index) as an Arrow IPC file; TypeError for a column Arrow
    cannot type (mixed values in one column)."""
    try:
        table = pa.Table.from_pandas(frame, preserve_index=True)
    except (pa.ArrowException, ValueError) as e:
        raise TypeError(f"field {name!r}: {e}") from None
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _to_json(value: Any, name: str) -> Any:
    """``value`` as JSON data (numpy scalars as Python numbers, dataclasses as dicts of
    their fields); TypeError for anything that would not read back equal."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name), f"{name}.{f.name}") for f in dataclasses.fields(value)}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, list):
        return [_to_json(v, f"{name}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _to_json(v, f"{name}.{k}") for k, v in value.items()}
    raise TypeError(
        f"field {name!r}: a {type(value).__name__} is not stored in a fit file "
        "(use a DataFrame, a numpy array, or JSON data: numbers, strings, lists, string-keyed dicts)"
    )


def _from_json(value: Any, hint: Any) -> Any:
    """The inverse of :func:`_to_json`; ``hint`` (the field's type) rebuilds dataclasses."""
    for candidate in typing.get_args(hint) or (hint,):
        if dataclasses.is_dataclass(candidate) and isinstance(value, dict):
            inner = typing.get_type_hints(candidate)
            return candidate(**{k: _from_json(v, inner.get(k)) for k, v in value.items()})
    if isinstance(value, dict):
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _from_json(v, None) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v, None) for v in value]
    return value
