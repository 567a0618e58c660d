"""The fit file: every FitResult field round-trips exactly, a new field of a supported
kind round-trips with no change to the writer, and reading a hostile file runs no code."""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest

from glmm_steps import fitfile
from glmm_steps.engines.base import FitResult, ModelSpec
from glmm_steps.fit import fit_model, load_fit, save_fit

FORMULA = "bp ~ time + (1 | hospital_id) + (1 | patient_id)"


def _same(a, b) -> bool:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        return True
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, np.generic):  # numpy scalars are stored as the Python numbers they equal
        a = a.item()
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def _assert_roundtrip(result, tmp_path, cls=FitResult):
    path = tmp_path / "fit.zip"
    fitfile.save(result, path)
    back = fitfile.load(cls, path)
    for f in dataclasses.fields(cls):
        assert _same(getattr(result, f.name), getattr(back, f.name)), f.name
    return path


@pytest.fixture(scope="module")
def fits(bp_data):
    """Fits of every kind the tables are made from: REML, a Poisson GLMM with an
    offset, a binomial with cbind, statsmodels (engine details), and a failed fit."""
    data = bp_data.assign(exposure=1.0 + bp_data["time"], events=(bp_data["bp"] > 121).astype(int) * 2, fails=1)
    specs = [
        ModelSpec("a", "d", FORMULA),
        ModelSpec("b", "d", "events ~ time + offset(log(exposure)) + (1 | patient_id)", family="poisson"),
        ModelSpec("c", "d", "cbind(events, fails) ~ time + (1 | hospital_id)", family="binomial"),
        ModelSpec("d", "d", FORMULA, engine="statsmodels"),
    ]
    return [fit_model(data, s) for s in specs] + [FitResult(spec=specs[0], engine_version="x", error="boom")]


def test_every_field_of_every_kind_of_fit_roundtrips(fits, tmp_path):
    assert fits[0].frame["hospital_id"].dtype == "category" and fits[3].details  # the hard cases are there
    for result in fits:
        _assert_roundtrip(result, tmp_path)


def test_save_fit_and_load_fit_use_it(fits, tmp_path):
    save_fit(fits[0], tmp_path / "fit.zip")
    assert zipfile.is_zipfile(tmp_path / "fit.zip")
    pd.testing.assert_frame_equal(load_fit(tmp_path / "fit.zip").fixef, fits[0].fixef)


def test_a_new_field_roundtrips_without_changes(fits, tmp_path):
    """Other work adds fields (inference tables, formula transforms): a DataFrame, an
    array or JSON data needs nothing new here."""

    @dataclasses.dataclass
    class Grown(FitResult):
        inference: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
        hessian: np.ndarray | None = None
        transforms: dict = dataclasses.field(default_factory=dict)

    grown = Grown(
        **{f.name: getattr(fits[0], f.name) for f in dataclasses.fields(FitResult)},
        inference=pd.DataFrame({"term": ["time"], "df": [89.0], "p": [1e-5]}),
        hessian=np.eye(2),
        transforms={"scale": {"time": [3.0, 1.41]}, "poly": [], "n": 3, "x": None},
    )
    _assert_roundtrip(grown, tmp_path, Grown)


def test_values_that_would_not_read_back_equal_are_refused(fits, tmp_path):
    with pytest.raises(TypeError, match="object array"):
        fitfile.save(dataclasses.replace(fits[0], observed=np.array([1, "a"], dtype=object)), tmp_path / "f.zip")
    with pytest.raises(TypeError, match="'ngroups'"):
        fitfile.save(dataclasses.replace(fits[0], ngroups={1: 2}), tmp_path / "f.zip")
    with pytest.raises(TypeError, match="tuple"):
        fitfile.save(dataclasses.replace(fits[0], warnings=("a",)), tmp_path / "f.zip")


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/glmm_fitfile_pwned", "w"))


def test_reading_a_hostile_file_runs_no_code(fits, tmp_path):
    marker = "/tmp/glmm_fitfile_pwned"
    # a pickle where a fit file should be
    (tmp_path / "pickle.zip").write_bytes(pickle.dumps(_Boom()))
    # a fit archive whose array member carries a pickle
    good = _assert_roundtrip(fits[0], tmp_path)
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Boom()], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / "npy.zip", "w") as dst:
        for name in src.namelist():
            dst.writestr(name, buffer.getvalue() if name == "observed.npy" else src.read(name))
    for name in ("pickle.zip", "npy.zip"):
        with pytest.raises(fitfile.FitFileError, match="not a readable fit file"):
            load_fit(tmp_path / name)
    assert not os.path.exists(marker)
