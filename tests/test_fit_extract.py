import json

import numpy as np
import pandas as pd
import pytest

from glmm_steps import extract
from glmm_steps.engines.base import ModelSpec
from glmm_steps.errors import DataError
from glmm_steps.fit import fit_file, fit_model, load_fit, save_fit

REF = ModelSpec("bp_lmm", "bp_study", "bp ~ time + (1 | hospital_id) + (1 | patient_id)")


@pytest.fixture(scope="module")
def bp_fit(bp_data):
    return fit_model(bp_data, REF)


def test_fit_result_shapes(bp_fit, bp_data):
    assert bp_fit.ok and bp_fit.converged and not bp_fit.singular
    assert bp_fit.nobs == 500 and bp_fit.ngroups == {"hospital_id": 10, "patient_id": 100}
    assert list(bp_fit.fixef["term"]) == ["(Intercept)", "time"]
    assert list(bp_fit.varcorr["group"]) == ["hospital_id", "patient_id", "Residual"]
    assert len(bp_fit.ranef) == 110
    np.testing.assert_allclose(bp_fit.observed, bp_data["bp"])


def test_tidy_wald_columns(bp_fit):
    t = extract.tidy(bp_fit)
    assert list(t.columns) == extract.FIXED_COLUMNS
    row = t.set_index("term").loc["time"]
    assert row["statistic"] == pytest.approx(row["estimate"] / row["std_error"])
    assert row["conf_low"] == pytest.approx(row["estimate"] - 1.959964 * row["std_error"], rel=1e-6)
    assert 0 < row["p_value"] < 1e-4  # slope 0.5 over 500 rows is clearly detected


def test_augment_consistent(bp_fit):
    a = extract.augment(bp_fit)
    np.testing.assert_allclose(a["residual"], a["observed"] - a["fitted"])
    # the marginal prediction is the fixed part alone
    fe = bp_fit.fixef.set_index("term")["estimate"]
    np.testing.assert_allclose(a["fitted_marginal"], fe["(Intercept)"] + fe["time"] * a["time"])
    # conditional = marginal + hospital BLUP + patient BLUP
    re = bp_fit.ranef
    h = re[re.group == "hospital_id"].set_index("level")["estimate"]
    p = re[re.group == "patient_id"].set_index("level")["estimate"]
    expected = a["fitted_marginal"] + a["hospital_id"].astype(str).map(h) + a["patient_id"].astype(str).map(p)
    np.testing.assert_allclose(a["fitted"], expected, rtol=1e-9)


def test_extract_writes_tables(bp_fit, tmp_path):
    outputs = {
        k: tmp_path / f"{k}.{'json' if k == 'fit_stats' else 'csv'}"
        for k in ("fixed_effects", "variance_components", "random_effects", "predictions", "fit_stats")
    }
    record = extract.extract(bp_fit, outputs, seed=123, data_path="x.csv")
    stats = json.loads(outputs["fit_stats"].read_text())
    assert stats == record
    for key in (
        "model",
        "dataset",
        "seed",
        "formula",
        "family",
        "reml",
        "engine",
        "engine_version",
        "data_path",
        "nobs",
        "ngroups",
        "logLik",
        "AIC",
        "BIC",
        "deviance",
        "converged",
        "singular",
        "warnings",
        "wall_time_s",
        "maximum_likelihood",
        "engine_details",
    ):
        assert key in stats
    assert stats["AIC"] == pytest.approx(-2 * stats["logLik"] + 2 * 5)
    assert list(pd.read_csv(outputs["variance_components"]).columns) == [
        "group",
        "term",
        "variance",
        "sd",
        "correlation",
        "conf_low",
        "conf_high",
        "method",
    ]
    assert list(pd.read_csv(outputs["random_effects"]).columns) == [
        "group",
        "level",
        "term",
        "estimate",
        "cond_sd",
        "method",
    ]
    assert (pd.read_csv(outputs["fixed_effects"])["method"] == "REML").all()
    assert len(pd.read_csv(outputs["predictions"])) == 500
    # fixed float format: 10 significant digits
    assert all(
        len(v.replace("-", "").replace(".", "").lstrip("0")) <= 10
        for v in outputs["fixed_effects"].read_text().splitlines()[1].split(",")[1:]
    )


@pytest.mark.parametrize(
    "formula, family",
    [
        ("hypertension ~ time + (1 | hospital_id) + (1 | patient_id)", "binomial"),
        ("adverse_events ~ time + (1 | hospital_id) + (1 | patient_id)", "poisson"),
    ],
)
def test_glmm_fits_response_scale(bp_data, formula, family):
    r = fit_model(bp_data, ModelSpec("m", "d", formula, family))
    assert r.ok and r.converged
    assert r.spec.method == "Laplace"
    assert "Residual" not in set(r.varcorr["group"])
    if family == "binomial":
        assert ((r.fitted > 0) & (r.fitted < 1)).all()
    else:
        assert (r.fitted > 0).all()


def test_failed_fit_is_recorded_not_raised(bp_data):
    # values near 1e200 pass every data check, but the engine cannot fit them
    data = bp_data.assign(huge=bp_data["bp"] * 1e200)
    r = fit_model(data, ModelSpec("m", "d", "huge ~ time + (1 | hospital_id)"))
    assert not r.ok and not r.converged
    assert "finite" in r.error
    stats = extract.glance(r)
    assert stats["status"] == "failed" and stats["converged"] is False
    assert extract.augment(r)["fitted"].isna().all()


@pytest.mark.parametrize("engine, error", [("mixedlm", "ValueError"), ("statsmodels", "RuntimeError")])
def test_what_each_engine_raises_is_recorded(bp_data, engine, error):
    """An engine's own failure (ValueError from mixedlm's finite checks; the statsmodels
    engine's RuntimeError when every optimizer fails) is a failed fit, not a crash."""
    data = bp_data.assign(huge=bp_data["bp"] * 1e200)
    r = fit_model(data, ModelSpec("m", "d", "huge ~ time + (1 | hospital_id)", engine=engine))
    assert not r.ok and r.error.startswith(f"{error}: ")


@pytest.mark.parametrize("bug", [KeyError("term"), TypeError("unsupported operand"), AttributeError("tidy")])
def test_a_bug_in_the_projects_own_code_is_raised_not_recorded(bp_data, monkeypatch, bug):
    """The project's post-processing around the engine call (here its VarCorr table)
    failing is a bug to see, not a fit to record as failed."""
    from glmm_steps.engines import mixedlm_engine

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(mixedlm_engine, "_varcorr", broken)
    with pytest.raises(type(bug)):
        fit_model(bp_data, ModelSpec("m", "d", "bp ~ time + (1 | hospital_id)"))


def test_text_response_is_a_data_error(bp_data):
    with pytest.raises(DataError, match="column 'bp' must be numeric"):
        fit_model(bp_data.assign(bp="high"), REF)


def test_fit_file_roundtrip(tmp_path, bp_data, bp_fit):
    path = tmp_path / "d.csv"
    bp_data.to_csv(path, index=False)
    r = fit_file(path, REF)
    save_fit(r, tmp_path / "fit.zip")
    back = load_fit(tmp_path / "fit.zip")
    pd.testing.assert_frame_equal(back.fixef, bp_fit.fixef)
    assert back.loglik == bp_fit.loglik


@pytest.mark.parametrize("engine", ["mixedlm", "statsmodels"])
def test_skipping_random_effects_changes_no_other_number(bp_data, engine):
    """A study's batches fit with random_effects=False: the ranef table is empty (with
    its usual columns) and every other estimate is the one a full fit gives."""
    spec = ModelSpec("bp_lmm", "bp_study", "bp ~ time + (1 | hospital_id) + (1 | patient_id)", engine=engine)
    full, lean = fit_model(bp_data, spec), fit_model(bp_data, spec, random_effects=False)
    assert len(full.ranef) == 110 and lean.ranef.empty
    assert list(lean.ranef.columns) == list(full.ranef.columns)
    pd.testing.assert_frame_equal(lean.fixef, full.fixef)
    pd.testing.assert_frame_equal(lean.varcorr, full.varcorr)
    assert lean.loglik == full.loglik


def test_engine_messages_name_the_users_columns():
    """mixedlm sees prepared columns under safe names (g__0, x__1): its warnings are
    recorded with the data's own names, which is what a reader can act on."""
    rng = np.random.default_rng(1)
    site = np.repeat(["a", "b", "c"], 20)
    x = rng.normal(size=60)
    y = x + np.repeat(rng.normal(size=3), 20) + rng.normal(size=60)
    spec = ModelSpec.from_config("m", {"dataset": "d", "formula": "y ~ x + (1 | site)"})
    result = fit_model(pd.DataFrame({"y": y, "x": x, "site": site}), spec, answers={})
    few = [w for w in result.warnings if "only 3 levels" in w]
    assert few and "'site'" in few[0] and "g__" not in " ".join(result.warnings)


def test_from_columns_builds_the_table_a_dict_builds():
    """tables.from_columns (the refit path's fast constructor) gives the frame
    pd.DataFrame(dict) gives: same values, dtypes, index and column names, and a table
    built from shared text arrays or a shared column index is changed by copy, not in
    place."""
    import numpy as np
    import pandas as pd

    from glmm_steps import tables

    columns = {"group": ("g", "Residual"), "term": ["(Intercept)", "(Intercept)"], "sd": (1.5, np.nan)}
    fast, slow = tables.from_columns(columns), pd.DataFrame({k: list(v) for k, v in columns.items()})
    pd.testing.assert_frame_equal(fast, slow)
    again = tables.from_columns(columns)
    again.loc[0, "group"] = "other"
    assert fast.loc[0, "group"] == "g" and again.loc[0, "group"] == "other"
    # the column index is shared between tables, so renaming one must leave the other alone
    again.rename(columns={"group": "level"}, inplace=True)
    again["extra"] = 1.0
    assert list(fast.columns) == ["group", "term", "sd"] and list(again.columns) == ["level", "term", "sd", "extra"]
    assert list(tables.from_columns(columns).columns) == ["group", "term", "sd"]
    values = np.array([1.0, 2.0])
    table = tables.from_columns({"x": values})
    table.loc[0, "x"] = 5.0
    assert values[0] == 1.0 and table.loc[0, "x"] == 5.0
    with pytest.raises(ValueError, match="different lengths"):
        tables.from_columns({"a": ("x",), "b": (1.0, 2.0)})


@pytest.mark.parametrize(
    ("data", "formula", "family"),
    [
        ("sleepstudy.csv", "Reaction ~ Days + (Days | Subject)", "gaussian"),
        ("sleepstudy.csv", "Reaction ~ Days + (Days || Subject)", "gaussian"),
        ("sleepstudy.csv", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", "gaussian"),
        ("sleepstudy.csv", "Reaction ~ Days + (Days | Subject)", "gamma"),
        ("bp_study_seed123.csv", "hypertension ~ time + (1 | hospital_id) + (time | patient_id)", "binomial"),
    ],
)
def test_variance_components_are_mixedlms_varcorr(data, formula, family):
    """The engine's variance components and singularity, from covariance blocks built
    once (a study refit needs both), are mixedlm's own VarCorr() and isSingular() to
    the bit: block names, variances and correlations."""
    import warnings

    from conftest import REFERENCE

    from glmm_steps.data import model_frame, read_data
    from glmm_steps.engines import mixedlm_engine as engine
    from glmm_steps.formula import parse
    from glmm_steps.model_matrix import build

    parsed = parse(formula)
    frame, _ = model_frame(read_data(str(REFERENCE / "data" / data)), parsed, data, family=family)
    spec = ModelSpec.from_config("m", {"dataset": "d", "formula": formula, "family": family})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, columns, groups = engine.engine_model(frame, spec, parsed, build(parsed, frame))
    table = engine._varcorr(model, groups, columns)
    table = table[table["group"] != "Residual"]
    expected = []
    for name, g in model.VarCorr().groups.items():
        group, terms = engine._group_name(name, groups), [columns.get(t, t) for t in g.term_names]
        expected += [(group, t, float(g.cov[i, i])) for i, t in enumerate(terms)]
        if g.corr is not None:
            expected += [
                (group, f"cor({a},{b})", float(g.corr[i, j]))
                for i, a in enumerate(terms)
                for j, b in enumerate(terms)
                if i < j
            ]
    got = [
        (g, t, c if t.startswith("cor(") else v)
        for g, t, v, c in zip(table["group"], table["term"], table["variance"], table["correlation"])
    ]
    assert sorted(got) == sorted(expected) and len(got) > 1
    assert engine._singular(engine._relative_covariances(model)) == bool(model.isSingular())
