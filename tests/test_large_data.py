"""Columnar data: CSV and Parquet inputs, Parquet outputs for large fits, and plots
that sample or summarise instead of drawing every row (issue 8). All on small files:
the million-row timing is benchmarks/large_fit.py."""

from __future__ import annotations

import copy
import hashlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml

from glmm_steps import extract, plot, tables
from glmm_steps.config import check_config
from glmm_steps.data import read_data, read_header
from glmm_steps.engines.base import ModelSpec
from glmm_steps.errors import ConfigError, DataError
from glmm_steps.fit import fit_file
from glmm_steps.simulate import simulate_to_files

REF = ModelSpec("bp_lmm", "bp_study", "bp ~ time + (1 | hospital_id) + (1 | patient_id)")


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def design(root):
    return yaml.safe_load((root / "config" / "config.yaml").read_text())["datasets"]["bp_study"]["simulate"]


@pytest.fixture(scope="module")
def both_files(design, tmp_path_factory):
    """The reference replicate simulated to CSV and to Parquet."""
    folder = tmp_path_factory.mktemp("formats")
    for ext in ("csv", "parquet"):
        simulate_to_files(design, 123, str(folder / f"data.{ext}"), str(folder / f"truth_{ext}.json"))
    return folder / "data.csv", folder / "data.parquet"


def test_csv_and_parquet_hold_the_same_data(both_files, bp_data):
    csv, parquet = both_files
    # The CSV is still the committed reference file, byte for byte.
    assert csv.read_bytes() == (__import__("conftest").REFERENCE / "data" / "bp_study_seed123.csv").read_bytes()
    assert read_header(parquet) == read_header(csv) == list(bp_data.columns)
    pd.testing.assert_frame_equal(read_data(parquet), read_data(csv))


@pytest.mark.parametrize(
    "formula, family",
    [
        ("bp ~ time + (1 | hospital_id) + (1 | patient_id)", "gaussian"),
        ("hypertension ~ time + (1 | hospital_id) + (1 | patient_id)", "binomial"),
    ],
)
def test_csv_and_parquet_inputs_give_identical_estimates(both_files, formula, family):
    spec = ModelSpec("m", "bp_study", formula, family)
    a, b = (fit_file(path, spec) for path in both_files)
    assert a.ok and b.ok
    for table in ("fixef", "varcorr", "ranef"):
        pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table), check_exact=True)
    assert (a.loglik, a.deviance, a.nobs) == (b.loglik, b.deviance, b.nobs)
    np.testing.assert_array_equal(a.fitted, b.fitted)


def test_fit_reads_only_the_formula_columns(both_files):
    _, parquet = both_files
    frame = read_data(parquet, columns=("bp", "time", "hospital_id", "absent"))
    # in the file's order, whatever the order asked; a missing name is left to model_frame
    assert list(frame.columns) == ["hospital_id", "time", "bp"]


def test_parquet_outputs_are_byte_reproducible(both_files, design, tmp_path):
    _, parquet = both_files
    simulate_to_files(design, 123, str(tmp_path / "again.parquet"), str(tmp_path / "truth.json"))
    assert _digest(tmp_path / "again.parquet") == _digest(parquet)
    digests = []
    for run in ("a", "b"):
        outputs = {
            t: tmp_path / run / f"{t}.{'json' if t == 'fit_stats' else 'csv'}"
            for t in ("fixed_effects", "variance_components", "fit_stats")
        }
        outputs |= {t: tmp_path / run / f"{t}.parquet" for t in ("predictions", "random_effects")}
        extract.extract(fit_file(parquet, REF), outputs)
        digests.append([_digest(outputs[t]) for t in ("predictions", "random_effects")])
    assert digests[0] == digests[1]


def test_parquet_tables_match_the_csv_tables(both_files, tmp_path):
    """Same columns and values (10 significant digits in both); levels stay text."""
    result = fit_file(both_files[1], REF)
    for fmt in ("csv", "parquet"):
        extract.extract(
            result,
            {
                "fixed_effects": tmp_path / "fe.csv",
                "variance_components": tmp_path / "vc.csv",
                "random_effects": tmp_path / f"re.{fmt}",
                "predictions": tmp_path / f"p.{fmt}",
                "fit_stats": tmp_path / "s.json",
            },
        )
    for name in ("re", "p"):
        a = tables.read_table(tmp_path / f"{name}.csv", csv_dtype={"level": str})
        b = tables.read_table(tmp_path / f"{name}.parquet")
        assert list(a.columns) == list(b.columns)
        for col in a.columns:
            if pd.api.types.is_float_dtype(a[col]):
                np.testing.assert_allclose(b[col], a[col], rtol=1e-9)
            else:
                assert list(b[col].astype(str)) == list(a[col].astype(str)), col
    assert tables.read_table(tmp_path / "re.parquet")["level"].map(type).eq(str).all()


def test_mantissa_rounding_keeps_ten_digits():
    values = np.random.default_rng(1).normal(size=1000) * 10.0 ** np.random.default_rng(2).integers(-30, 30, 1000)
    rounded = tables._round_mantissa(values, 10)
    assert (np.abs(rounded - values) <= np.abs(values) * 2.0**-35).all()
    assert (np.abs(rounded - values) > 0).any()
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324])
    np.testing.assert_array_equal(tables._round_mantissa(special, 10), special)


def test_unreadable_parquet_is_a_data_error(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_text("hospital_id,bp\n1,2\n")
    with pytest.raises(DataError, match="cannot read as Parquet"):
        read_data(bad)
    with pytest.raises(DataError, match="cannot read as Parquet"):
        read_header(bad)


# ---- the config decides every file name before any job runs -----------------------------


@pytest.fixture()
def cfg(root):
    return yaml.safe_load((root / "config" / "config.yaml").read_text())


def _big(cfg):
    big = copy.deepcopy(cfg)
    big["datasets"]["bp_study"]["simulate"]["levels"][1]["n"] = 20_000  # 10 x 20,000 x 5 = 1,000,000 rows
    return big


def test_auto_formats_follow_the_row_count(cfg):
    small = check_config(cfg)
    assert small.data_path("bp_study", "seed-123").endswith("/data.csv")
    assert {small.table_format(m) for m in cfg["models"]} == {"csv"}
    big = check_config(_big(cfg))
    assert big.data_path("bp_study", "seed-123") == "results/data/bp_study/seed-123/data.parquet"
    assert big.models_with_table_format("parquet") == list(cfg["models"])
    assert big.models_with_table_format("csv") == []


def test_explicit_formats_win(cfg):
    big = _big(cfg)
    big["datasets"]["bp_study"]["format"] = "csv"
    big["models"]["bp_lmm"]["table_format"] = "csv"
    plan = check_config(big)
    assert plan.data_format("bp_study") == "csv"
    assert plan.models_with_table_format("csv") == ["bp_lmm"]
    cfg["datasets"]["bp_study"]["format"] = "parquet"
    assert check_config(cfg).data_path("bp_study", "seed-123").endswith("/data.parquet")


def test_data_file_format_is_its_extension(cfg, both_files):
    csv, parquet = both_files
    cfg["datasets"]["real"] = {"path": str(parquet)}
    cfg["models"]["real_lmm"] = {"dataset": "real", "formula": "bp ~ time + (1 | hospital_id)"}
    plan = check_config(cfg)
    assert plan.data_format("real") == "parquet" and plan.rows["real"] == 500
    assert plan.table_format("real_lmm") == "csv"
    cfg["datasets"]["real"]["path"] = str(csv)
    assert check_config(cfg).rows["real"] == 500
    cfg["datasets"]["real"]["format"] = "csv"
    with pytest.raises(ConfigError, match=r"datasets\.real\.format: applies to simulated datasets"):
        check_config(cfg)


# ---- plots of large fits sample or summarise, and say so ---------------------------------


@pytest.fixture(scope="module")
def many():
    """Predictions and random effects of a fake large fit: 3,000 patients x 10 visits."""
    rng = np.random.default_rng(0)
    n_patients, visits = 3000, 10
    patient = np.repeat(np.arange(1, n_patients + 1), visits)
    fitted = 100 + rng.normal(size=len(patient))
    predictions = pd.DataFrame(
        {
            "hospital_id": (patient - 1) // 300 + 1,
            "patient_id": patient,
            "time": np.tile(np.arange(1, visits + 1), n_patients),
            "observed": fitted + rng.normal(size=len(patient)),
            "fitted": fitted,
            "fitted_marginal": np.full(len(patient), 100.0),
        }
    )
    ranef = pd.DataFrame(
        {
            "group": "patient_id",
            "level": np.arange(1, n_patients + 1).astype(str),
            "term": "(Intercept)",
            "estimate": rng.normal(size=n_patients),
            "cond_sd": 0.3,
        }
    )
    return predictions, ranef


def test_large_plots_say_what_they_show(many):
    predictions, ranef = many
    fig, ax = plt.subplots()
    plot._caterpillar_panel(ax, ranef, "patient_id", "(Intercept)")
    assert "200 of 3,000 levels" in ax.get_title()
    assert len(ax.lines[0].get_xdata()) == plot.MAX_UNITS
    # the extremes are kept
    assert ax.lines[0].get_xdata().min() == ranef["estimate"].min()
    plot._residual_panel(ax, predictions["fitted"].to_numpy(), np.zeros(len(predictions)), "residual")
    assert "all 30,000 in hexagonal bins" in ax.get_title()
    plot._qq(ax, predictions["observed"].to_numpy(), "QQ")
    assert f"{plot.QQ_QUANTILES} quantiles of 30,000 values" in ax.get_title()
    assert len(ax.collections[-1].get_offsets()) == plot.QQ_QUANTILES
    plt.close(fig)


def test_small_plots_draw_every_point(bp_data):
    fig, ax = plt.subplots()
    ranef = pd.DataFrame(
        {"group": "g", "level": list("abcde"), "term": "t", "estimate": np.arange(5.0), "cond_sd": 0.1}
    )
    plot._caterpillar_panel(ax, ranef, "g", "t")
    assert len(ax.lines[0].get_xdata()) == 5 and "levels" not in ax.get_title()
    plot._qq(ax, bp_data["bp"].to_numpy(), "QQ")
    assert ax.get_title() == "QQ" and len(ax.collections[-1].get_offsets()) == 500
    plt.close(fig)


def test_plots_read_parquet_tables(both_files, tmp_path):
    outputs = {
        "fixed_effects": tmp_path / "fe.csv",
        "variance_components": tmp_path / "vc.csv",
        "random_effects": tmp_path / "re.parquet",
        "predictions": tmp_path / "p.parquet",
        "fit_stats": tmp_path / "s.json",
    }
    stats = extract.extract(fit_file(both_files[1], REF), outputs)
    pngs = {p: tmp_path / f"{p}.png" for p in ("trajectories", "caterpillar", "diagnostics")}
    plot.plot_fit(outputs["predictions"], outputs["random_effects"], stats, pngs)
    assert all(p.stat().st_size > 10_000 for p in pngs.values())


# ---- the real workflow with both formats ---------------------------------------------------


@pytest.mark.slow
def test_workflow_with_parquet_data_and_tables(tmp_path, design):
    """A design simulated to Parquet, one model writing Parquet tables and one (on the
    same data) CSV: Snakemake knows every file name up front, the second run does
    nothing, and the Parquet data is the same bytes as a simulation in this process."""
    from conftest import run_snakemake

    small = copy.deepcopy(design)
    small["outcomes"] = {"bp": small["outcomes"]["bp"]}
    config = {
        "datasets": {"bp": {"seeds": [7], "format": "parquet", "simulate": small}},
        "models": {
            "wide": {
                "dataset": "bp",
                "formula": "bp ~ time + (1 | hospital_id) + (1 | patient_id)",
                "table_format": "parquet",
            },
            "plain": {"dataset": "bp", "formula": "bp ~ time + (1 | patient_id)"},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    results = tmp_path / "results"
    # The whole workflow: every table of both models and their plots (the plot rule reads Parquet).
    run_snakemake(tmp_path, "--configfile", str(path))
    data = results / "data" / "bp" / "seed-7" / "data.parquet"
    simulate_to_files(small, 7, str(tmp_path / "here.parquet"), str(tmp_path / "here.json"))
    assert _digest(data) == _digest(tmp_path / "here.parquet")
    for model, fmt in (("wide", "parquet"), ("plain", "csv")):
        folder = results / "models" / model / "latest" / "seed-7"
        for name in ("predictions", "random_effects"):
            other = "csv" if fmt == "parquet" else "parquet"
            assert (folder / f"{name}.{fmt}").is_file() and not (folder / f"{name}.{other}").exists()
        assert (folder / "fixed_effects.csv").is_file()
    wide = tables.read_table(results / "models" / "wide" / "latest" / "seed-7" / "predictions.parquet")
    assert (results / "models" / "wide" / "latest" / "seed-7" / "plots" / "caterpillar.png").is_file()
    # ids read back as the numbers they were, as from the CSV tables
    assert len(wide) == 500 and pd.api.types.is_integer_dtype(wide["patient_id"])
    proc = run_snakemake(tmp_path, "--configfile", str(path))
    assert "Nothing to be done" in proc.stdout + proc.stderr
