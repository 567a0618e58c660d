"""Cross-engine verification: agreement on real fits, a deliberately mismatched case,
and the verdict in the run summary."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from glmm_steps import verify
from glmm_steps.engines.base import FitResult, ModelSpec
from glmm_steps.extract import glance, write_csv, write_json
from glmm_steps.fit import fit_model, save_fit
from glmm_steps.summary import summarize

SPEC = ModelSpec("bp_lmm", "bp_study", "bp ~ time + (1 | hospital_id) + (1 | patient_id)")


@pytest.fixture(scope="module")
def verified(bp_data):
    primary = fit_model(bp_data, SPEC)
    table, other = verify.verify(primary, rtol=1e-3, loglik_tol=1e-3)
    return primary, table, other


def test_engines_agree_on_the_reference_study(verified):
    primary, table, other = verified
    assert other.spec.engine == "statsmodels" and primary.spec.engine == "mixedlm"
    assert list(table.columns) == verify.COLUMNS
    assert table["agree"].all(), table.to_string()
    # one row per fixed effect, variance (with the residual) and the logLik
    assert list(zip(table["quantity"], table["group"], table["term"])) == [
        ("fixed_effect", "", "(Intercept)"),
        ("fixed_effect", "", "time"),
        ("variance", "hospital_id", "(Intercept)"),
        ("variance", "patient_id", "(Intercept)"),
        ("variance", "Residual", "(Intercept)"),
        ("logLik", "", ""),
    ]
    assert table["rel_diff"].max() < 1e-6  # measured: both reach lme4's optimum
    assert verify.verdict(table) == "agree"


def test_a_mismatched_fit_is_flagged(verified):
    """A statsmodels fit stopped where its default fit() stops on this data (hospital
    variance 18.05 instead of 6.07, logLik 2.6 lower) must be flagged, with the worst
    quantity named."""
    primary, _, other = verified
    vc = other.varcorr.copy()
    vc.loc[vc["group"] == "hospital_id", "variance"] = 18.046
    stopped = dataclasses.replace(other, varcorr=vc, loglik=-1545.921)
    table = verify.agreement(primary, stopped, rtol=1e-3, loglik_tol=1e-3)
    bad = table[~table["agree"]]
    assert set(bad["quantity"]) == {"variance", "logLik"}
    assert bad[bad["quantity"] == "variance"]["group"].tolist() == ["hospital_id"]
    # the verdict names the row furthest outside its tolerance (logLik: 2.57 vs 0.001)
    line = verify.verdict(table)
    assert line.startswith("DISAGREE: logLik: mixedlm -1543.349854 vs statsmodels -1545.921") and "and 1 more" in line


def test_a_failed_or_incomplete_fit_disagrees(verified):
    primary, _, other = verified
    failed = FitResult(spec=other.spec, engine_version="x", error="LinAlgError: singular")
    table = verify.agreement(primary, failed, 1e-3, 1e-3)
    assert not table["agree"].any() and "statsmodels failed" in table["note"].item()
    fewer = dataclasses.replace(other, fixef=other.fixef.iloc[:1])
    table = verify.agreement(primary, fewer, 1e-3, 1e-3)
    assert table.set_index("term").loc["time", "note"] == "missing in statsmodels"


def test_verdict_in_the_run_summary(verified, tmp_path):
    primary, table, other = verified
    rows = []
    for name, tab in (("good", table), ("bad", table.assign(agree=[True] * 5 + [False]))):
        folder = tmp_path / name
        write_json(
            glance(dataclasses.replace(primary, spec=dataclasses.replace(SPEC, name=name))), folder / "fit_stats.json"
        )
        write_csv(tab, folder / "verification.csv")
        rows.append(folder)
    write_json(glance(primary), tmp_path / "plain" / "fit_stats.json")
    summary = summarize(
        [f / "fit_stats.json" for f in rows] + [tmp_path / "plain" / "fit_stats.json"],
        [f / "verification.csv" for f in rows],
    )
    assert summary["verification"].tolist()[0] == "agree"
    assert summary["verification"].tolist()[1].startswith("DISAGREE: logLik")
    assert summary["verification"].tolist()[2] == ""


def test_verify_file_writes_both_records(verified, tmp_path):
    primary, _, _ = verified
    save_fit(primary, tmp_path / "fit.zip")
    outputs = {"verification": tmp_path / "verification.csv", "fit_stats": tmp_path / "other.json"}
    line = verify.verify_file(tmp_path / "fit.zip", outputs, 1e-3, 1e-3, seed=123)
    assert line == "agree"
    back = verify.read_table(outputs["verification"])
    assert back["agree"].all() and back["group"].tolist()[0] == ""
    other = json.loads(outputs["fit_stats"].read_text())
    assert other["engine"] == "statsmodels" and other["seed"] == 123
    assert [a["method"] for a in other["engine_details"]["optimizers"]][:2] == ["powell", "nm"]
    assert pd.read_csv(outputs["verification"]).shape == (6, len(verify.COLUMNS))
