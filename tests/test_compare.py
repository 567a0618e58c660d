"""Model comparison against lme4's anova() (tests/reference/lme4_anova.csv).

The comparison reads only FitResults, so one engine suffices here; each engine's ML
and REML fits are checked against lme4 in test_lme4_reference.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glmm_steps.compare import IC_COLUMNS, LRT_COLUMNS, compare, compare_files, ml_fit
from glmm_steps.engines.base import FitResult, ModelSpec
from glmm_steps.fit import fit_model, save_fit

REF = Path(__file__).parent / "reference"
ANOVA = pd.read_csv(REF / "lme4_anova.csv")
CASES = pd.read_csv(REF / "lme4_cases.csv", keep_default_na=False).set_index("case")
# Same rules as test_lme4_reference.py: -2 logLik-scale quantities to 2e-6 per
# observation; the p-value is a smooth function of chisq, compared relatively.
CRIT_PER_OBS, P_RTOL = 2e-6, 1e-4


def _fits(comparison: str, engine: str) -> list[FitResult]:
    fits = []
    for case in dict.fromkeys(ANOVA[ANOVA["comparison"] == comparison]["model"]):
        row = CASES.loc[case]
        spec = ModelSpec(
            case, row["data"], row["formula"], row["family"], str(row["reml"]).upper() == "TRUE", engine=engine
        )
        fits.append(fit_model(pd.read_csv(REF / "data" / f"{row['data']}.csv"), spec))
    return fits


def test_matches_lme4_anova(tmp_path):
    fits = _fits("sleepstudy_slopes", "mixedlm")
    paths = []
    for f in reversed(fits):  # larger model first: the table must still be ordered by npar
        paths.append(tmp_path / f"{f.spec.name}.zip")
        save_fit(f, paths[-1])
    outputs = {"likelihood_ratio": tmp_path / "lrt.csv", "information_criteria": tmp_path / "ic.csv"}
    compare_files(paths, outputs)
    lrt, ic = pd.read_csv(outputs["likelihood_ratio"]), pd.read_csv(outputs["information_criteria"])
    assert list(lrt.columns) == LRT_COLUMNS and list(ic.columns) == IC_COLUMNS
    ref = ANOVA[ANOVA["comparison"] == "sleepstudy_slopes"]
    assert lrt["model"].tolist() == list(dict.fromkeys(ref["model"]))
    assert lrt["refitted_ml"].all() and (ic["method"] == "ML").all()
    n = fits[0].nobs
    for _, r in ref.iterrows():
        i = lrt.index[lrt["model"] == r["model"]][0]
        q, want = r["quantity"], r["value"]
        if q in ("npar", "Df"):
            assert lrt.loc[i, q.lower() if q == "Df" else q] == want
        elif q in ("AIC", "BIC"):
            assert abs(ic.loc[i, q] - want) / n <= CRIT_PER_OBS
        elif q in ("logLik", "deviance", "Chisq"):
            got = lrt.loc[i, q.lower() if q == "Chisq" else q]
            assert abs(got - want) / n <= CRIT_PER_OBS, (q, got, want)
        else:
            assert lrt.loc[i, "p_value"] == pytest.approx(want, rel=P_RTOL)
    assert np.isnan(lrt.loc[0, "chisq"]) and ic["delta_AIC"].min() == 0


def test_ml_fits_are_not_refitted(bp_data):
    spec = ModelSpec("h", "bp", "hypertension ~ time + (1 | hospital_id)", "binomial")
    fit = fit_model(bp_data, spec)
    assert ml_fit(fit) == (fit, False)


def test_problems_become_notes_not_errors(bp_data):
    big = fit_model(bp_data, ModelSpec("big", "bp", "bp ~ time + (1 | hospital_id)", reml=False))
    small = fit_model(bp_data.iloc[:-5], ModelSpec("small", "bp", "bp ~ 1 + (1 | hospital_id)", reml=False))
    lrt, ic = compare([big, small])
    assert lrt["chisq"].isna().all() and lrt["p_value"].isna().all()
    assert "fitted to 495 rows" in lrt.set_index("model").loc["small", "note"]
    failed = dataclasses.replace(small, error="boom", nobs=500)
    lrt, _ = compare([big, failed])
    assert lrt.set_index("model").loc["small", "note"] == "fit failed: boom"
    assert lrt["p_value"].isna().all()
