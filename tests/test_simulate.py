import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from glmm_steps.config import load_config
from glmm_steps.simulate import Design, Level, Outcome, simulate, simulate_to_files


@pytest.fixture(scope="module")
def design(root):
    return load_config(root / "config" / "config.yaml").designs["bp_study"]


def test_design_shape_and_ids(design):
    data, truth = simulate(design, 123)
    assert list(data.columns) == ["hospital_id", "patient_id", "time", "bp", "hypertension", "adverse_events"]
    assert len(data) == 500 == design.nrows
    assert data["hospital_id"].nunique() == 10
    assert data["patient_id"].nunique() == 100
    # every patient sits in exactly one hospital and is seen at visits 1..5
    assert (data.groupby("patient_id")["hospital_id"].nunique() == 1).all()
    assert (data.groupby("patient_id")["time"].apply(list).apply(lambda v: v == [1, 2, 3, 4, 5])).all()
    assert set(data["hypertension"].unique()) <= {0, 1}
    assert (data["adverse_events"] >= 0).all()
    assert truth["outcomes"]["bp"]["fixed_effects"] == {"(Intercept)": 120.0, "time": 0.5}
    assert truth["outcomes"]["bp"]["random_variance"] == {"hospital_id": 4.0, "patient_id": 1.0}
    assert truth["outcomes"]["hypertension"]["link"] == "logit"


def test_same_seed_same_bytes_and_matches_committed_file(design, tmp_path, root):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    simulate_to_files(load_config(root / "config" / "config.yaml").config["datasets"]["bp_study"]["simulate"],
                      123, str(a), str(tmp_path / "truth.json"))
    data, _ = simulate(design, 123)
    data.to_csv(b, index=False, lineterminator="\n")
    committed = root / "tests" / "reference" / "data" / "bp_study_seed123.csv"
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    # The committed file is what lme4 was fitted to: the simulator must still produce it.
    assert digest(a) == digest(b) == digest(committed)
    assert json.loads((tmp_path / "truth.json").read_text())["seed"] == 123


def test_other_seed_differs(design):
    a, _ = simulate(design, 123)
    b, _ = simulate(design, 124)
    assert not np.allclose(a["bp"], b["bp"])


def test_adding_an_outcome_leaves_the_others_unchanged():
    levels = (Level("g", 5), Level("u", 4))
    y = Outcome("y", "gaussian", 1.0, {"x": 0.5}, {"g": 1.0, "u": 0.5}, residual_sd=1.0)
    z = Outcome("z", "poisson", 0.0, {}, {"g": 0.3})
    one, _ = simulate(Design(levels, "x", (0, 1, 2), (y,)), 7)
    two, _ = simulate(Design(levels, "x", (0, 1, 2), (z, y)), 7)
    pd.testing.assert_series_equal(one["y"], two["y"])


def test_large_design_recovers_the_truth():
    """Sample moments of a big replicate match the parameters (checks the generator,
    not the fit): the grand mean of a gaussian outcome and the patient-level spread."""
    design = Design((Level("h", 50), Level("p", 40)), "t", (1, 2, 3, 4, 5),
                    (Outcome("y", "gaussian", 10.0, {"t": 0.5}, {"h": 2.0, "p": 1.0}, residual_sd=0.5),))
    data, _ = simulate(design, 1)
    # mean over everything: 10 + 0.5 * 3 plus hospital noise averaged over 50 hospitals (sd 2/sqrt(50))
    assert abs(data["y"].mean() - 11.5) < 4 * 2 / np.sqrt(50)
    # within-patient slope is exact up to residual noise
    slope = np.polyfit(data["t"], data["y"] - data.groupby("p")["y"].transform("mean"), 1)[0]
    assert abs(slope - 0.5) < 0.02


def test_binomial_trials_column():
    design = Design((Level("g", 3),), "x", (0, 1), (Outcome("k", "binomial", 0.0, {}, {}, trials=10),))
    data, truth = simulate(design, 3)
    assert (data["k_trials"] == 10).all()
    assert data["k"].between(0, 10).all()
    assert truth["outcomes"]["k"]["trials"] == 10


def test_integer_intercept_and_coefficients_simulate_as_floats():
    """A Design built in Python may carry ints (the config path converts them)."""
    as_ints = Design((Level("g", 4),), "x", (0, 1, 2), (Outcome("y", "gaussian", 10, {"x": 2}, {"g": 1}, residual_sd=1),))
    as_floats = Design((Level("g", 4),), "x", (0, 1, 2),
                       (Outcome("y", "gaussian", 10.0, {"x": 2.0}, {"g": 1.0}, residual_sd=1.0),))
    pd.testing.assert_frame_equal(simulate(as_ints, 5)[0], simulate(as_floats, 5)[0])
