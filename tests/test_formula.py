from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glmm_steps.errors import GlmmError
from glmm_steps.formula import check_columns, parse


def test_reference_formula():
    f = parse("bp ~ time + (1 | hospital_id) + (1 | patient_id)")
    assert f.response == "bp"
    assert f.fixed_variables == ("time",)
    assert f.grouping_factors == ("hospital_id", "patient_id")
    assert [t.intercept for t in f.random] == [True, True]
    assert f.columns == ("bp", "time", "hospital_id", "patient_id")


def test_slopes_nested_uncorrelated():
    f = parse("y ~ x + (1 + x | g)")
    assert f.random[0].slopes == ("x",) and f.random[0].correlated
    f = parse("y ~ x + (1 + x || g)")
    assert not f.random[0].correlated
    f = parse("y ~ 1 + (1 | a/b)")
    # lme4's names: the inner factor of a/b is b:a, an interaction written a:b stays a:b
    assert [t.group_name for t in f.random] == ["a", "b:a"]
    assert f.grouping_factors == ("a", "b")
    assert [t.group_name for t in parse("y ~ 1 + (1 | a/b/c) + (1 | d:e)").random] == ["a", "b:a", "c:(b:a)", "d:e"]
    assert str(parse("y ~ x + (1 + x || g)").random[0]) == "(1 + x || g)"


def test_offset_and_cbind():
    f = parse("cbind(s, fails) ~ x + offset(log(expo)) + (1 | g)")
    assert f.trials == ("s", "fails")
    assert f.offset == "expo" and f.offset_log
    assert f.fixed_term_labels == ("x",) and f.response_node is None
    assert set(f.columns) == {"s", "fails", "x", "g", "expo"}
    assert f.response == "s_prop"


def test_cbind_trials_minus_successes():
    f = parse("cbind(s, n - s) ~ x + (1 | g)")
    assert f.trials == ("s", "n") and f.trials_total
    frame = pd.DataFrame({"s": [1, 3], "n": [4, 5]})
    np.testing.assert_array_equal(f.n_trials(frame), [4, 5])
    g = parse("cbind(s, fails) ~ x + (1 | g)")
    np.testing.assert_array_equal(g.n_trials(frame.rename(columns={"n": "fails"})), [5, 8])
    with pytest.raises(GlmmError, match="must subtract the successes 's'"):
        parse("cbind(s, n - k) ~ x + (1 | g)")
    with pytest.raises(GlmmError, match="cbind"):
        parse("cbind(s, 10 - s) ~ x + (1 | g)")


@pytest.mark.parametrize(
    "text, needle",
    [
        ("y ~ x + (1 | g", "unbalanced parentheses: '(' at character 9 is never closed"),
        ("y ~ x + (1 | g))(", "unbalanced parentheses: ')' at character 16 has no matching '('"),
        ("y ~ x + (1 | )", "random term '(1 | )' names no grouping factor after '|'"),
        ("y ~ x + ( | g)", "empty random term '( | g)': write (1 | group)"),
        ("y ~ x + (0 | g)", "empty random term for 'g': it has neither an intercept nor slopes"),
        ("y ~ x + ()", "empty parentheses '()'"),
        ("~ x + (1 | g)", "no response before '~'"),
        ("y ~ x ~ z + (1 | g)", "more than one '~'"),
        ("y ~ y + (1 | g)", "the response 'y' also appears on the right of '~'"),
        ("y ~ x + (1 | g) + (1 | g)", "the random term for 'g' appears twice"),
        ("y x + (1|g)", "expected 'response ~"),
        ("y ~ x", "no random-effect term"),
        # the engine parser's token names come out as symbols, with the text found there
        ("y ~ x + (1 | g h)", "expected ')' near 'h)'"),
        ("y ~ x +* (1 | g)", "expected a column, number or '(' near '* (1 | g)'"),
    ],
)
def test_malformed(text, needle):
    with pytest.raises(GlmmError) as info:
        parse(text)
    assert str(info.value).startswith(f"formula {text!r}: ") and needle in str(info.value)


def test_missing_column_named():
    with pytest.raises(GlmmError, match="names column 'age'"):
        check_columns(parse("y ~ age + (1 | g)"), ["y", "g"], "dataset 'd'")
    with pytest.raises(GlmmError, match="lacks \\(did you mean 'patient_id'\\?\\)"):
        check_columns(parse("y ~ 1 + (1 | patient)"), ["y", "patient_id"], "dataset 'd'")


# ---- the model-matrix builder ------------------------------------------------------

from glmm_steps.engines.base import ModelSpec  # noqa: E402
from glmm_steps.errors import DataError  # noqa: E402
from glmm_steps.fit import fit_model  # noqa: E402
from glmm_steps.model_matrix import build, factor_options  # noqa: E402

FRAME = pd.DataFrame(
    {
        "y": np.linspace(1.0, 4.0, 12),
        "x": np.linspace(0.5, 6.0, 12),
        "f": ["b", "a", "B", "a b"] * 3,
        "n": [0, 1, 2, 3] * 3,
        "ok": [True, False, True] * 4,
        "g": np.repeat(["u", "v", "w"], 4),
    }
)


def test_text_factor_levels_follow_r_and_options():
    f = parse("y ~ f + (1 | g)")
    assert build(f, FRAME).fixed_names == ["(Intercept)", "fa b", "fb", "fB"]  # R: a < a b < b < B
    mm = build(f, FRAME, [{"column": "f", "reference": "b"}])
    assert mm.fixed_names == ["(Intercept)", "fa", "fa b", "fB"]
    mm = build(f, FRAME, [{"column": "f", "levels": ["B", "b", "a", "a b"], "contrasts": "sum"}])
    assert mm.fixed_names == ["(Intercept)", "f1", "f2", "f3"]
    # sum contrasts: the last level ('a b') is -1 in every column
    rows = FRAME["f"] == "a b"
    assert (mm.fixed_frame().loc[rows, ["f1", "f2", "f3"]] == -1).all().all()
    assert mm.state["factors"]["f"] == {"column": "f", "levels": ["B", "b", "a", "a b"], "contrasts": "sum"}


def test_numeric_factor_logical_and_as_numeric():
    mm = build(parse("y ~ factor(n) + ok + as.numeric(n) + (1 | g)"), FRAME)
    assert mm.fixed_names == ["(Intercept)", "factor(n)1", "factor(n)2", "factor(n)3", "okTRUE", "as.numeric(n)"]
    assert mm.term_columns["factor(n)"] == ["factor(n)1", "factor(n)2", "factor(n)3"]


def test_state_is_reapplied_never_recomputed():
    f = parse("y ~ scale(x) + poly(x, 2) + factor(n) + (1 | g)")
    fit = build(f, FRAME)
    new = FRAME.iloc[[0, 5, 7]]
    again = build(f, new, state=fit.state)
    np.testing.assert_allclose(again.X, fit.X[[0, 5, 7]], rtol=0, atol=1e-12)
    assert again.fixed_names == fit.fixed_names  # n's level 0..3 kept although only some appear
    with pytest.raises(DataError, match="level '9' on line 2, not among the fitted levels"):
        build(f, new.assign(n=[9, 1, 2]), state=fit.state)


def test_random_term_columns_and_double_bar():
    f = parse("y ~ x + (0 + factor(n) | g) + (1 + scale(x) || g)")
    mm = build(f, FRAME)
    assert mm.random[0].names == ["factor(n)0", "factor(n)1", "factor(n)2", "factor(n)3"]
    assert mm.random[1].names == ["(Intercept)", "scale(x)"]
    with pytest.raises(DataError, match="lme4 keeps a factor's columns correlated"):
        build(parse("y ~ x + (1 + f || g)"), FRAME)


def test_bad_values_name_the_term_and_line():
    with pytest.raises(DataError, match=r"log\(x - 1\) is not a finite number on line 2 \(x = 0.5\)"):
        build(parse("y ~ log(x - 1) + (1 | g)"), FRAME)
    with pytest.raises(DataError, match="column 'f' is categorical .* but log\\(f\\) needs numbers"):
        build(parse("y ~ log(f) + (1 | g)"), FRAME)
    with pytest.raises(DataError, match="the response log\\(y - 2\\) is not a finite number"):
        build(parse("log(y - 2) ~ x + (1 | g)"), FRAME)


def test_factor_options_are_checked():
    from glmm_steps.errors import ConfigError

    with pytest.raises(ConfigError, match="one of treatment, sum"):
        factor_options([{"column": "f", "contrasts": "helmert"}])
    with pytest.raises(ConfigError, match="'z' is not one of the levels"):
        factor_options([{"column": "f", "levels": ["a"], "reference": "z"}])
    assert factor_options(["n", {"column": "f", "reference": 1}])["f"].reference == "1"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("y ~ foo(x) + (1 | g)", "unknown function foo(); supported: log(x)"),
        ("y ~ poly(x) + (1 | g)", None),
        ("y ~ poly(x, 0) + (1 | g)", "degree must be a whole number from 1 to 20"),
        ("y ~ scale(x, 2) + (1 | g)", "write scale(x), scale(x, scale = FALSE)"),
        ("y ~ log(x, 2) + (1 | g)", "log() takes one argument, got 2"),
        ("y ~ log(factor(x)) + (1 | g)", "factor() must be a term of its own"),
        ("y ~ x^2 + (1 | g)", "write I(x^2) for its power, or x for itself"),
        ("y ~ (1 + 0)^2 + (1 | g)", "'^' joins columns and terms, not numbers"),
        ("y ~ (x + z)^x + (1 | g)", "must be a whole number (write I(x^2)"),
        ("y ~ x:2 + (1 | g)", "the number 2 is not a term"),
        ("y ~ x + (1 | log(g))", "the grouping factor after '|' must be a column"),
        ("y ~ x + offset(x + z) + (1 | g)", "write offset(column) or offset(log(column))"),
        ("y ~ x + (1 | g) + (1 + offset(z) | g)", "offset() must be a term of its own"),
        ("y ~ scale(x, centre = TRUE) + (1 | g)", "scale() has no argument 'centre'"),
        ("y ~ I(x == 1) + (1 | g)", "'==' is not supported in a formula"),
        ("y ~ x + (1 | g) & z", "'&' is not supported in a formula"),
    ],
)
def test_bad_calls_are_one_line(text, needle):
    if needle is None:
        assert parse(text).fixed_term_labels == ("poly(x)",)
        return
    with pytest.raises(GlmmError) as info:
        parse(text)
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_r_labels_and_intercept_forms():
    assert parse("y ~ I(x^2 + 3*x - 1/2) + (1 | g)").fixed_term_labels == ("I(x^2 + 3 * x - 1/2)",)
    assert parse("y ~ I(100000*x) + I(123456*x) + I(-(x)) + (1 | g)").fixed_term_labels == (
        "I(1e+05 * x)",
        "I(123456 * x)",
        "I(-(x))",
    )
    assert not parse("y ~ 0 + x + (1 | g)").intercept and not parse("y ~ x - 1 + (1 | g)").intercept
    assert parse("y ~ x - 1 + 1 + (1 | g)").intercept
    assert parse("y~x+(1|g)").fixed_term_labels == parse("y ~  x\t+ ( 1 |  g )").fixed_term_labels


def test_transformed_response_and_study_formula_fit():
    """A transformed response lands in the fitted frame under its label, and both
    engines fit the same transformed columns."""
    data = FRAME.assign(x2=FRAME["x"] ** 1.5 + np.sin(np.arange(12)))
    spec = ModelSpec(name="m", dataset="d", formula="log(y) ~ scale(x2) + (1 | g)")
    res = fit_model(data, spec)
    assert res.ok and "log(y)" in res.frame.columns
    np.testing.assert_allclose(res.observed, np.log(data["y"]))
    assert res.fixef["term"].tolist() == ["(Intercept)", "scale(x2)"]
    other = fit_model(
        res.frame,
        ModelSpec(name="m", dataset="d", formula=spec.formula, engine="statsmodels"),
        state=res.transform_state,
    )
    np.testing.assert_allclose(other.fixef["estimate"], res.fixef["estimate"], rtol=1e-4)


def test_study_replicate_with_transformed_formula():
    """A simulation study's replicate fits a transformed formula like any other: terms
    named as lme4 names them, a true value only where the design has one."""
    from glmm_steps.batch import fit_replicate, parameters
    from glmm_steps.simulate import design_from_config

    design = design_from_config(
        {
            "levels": [{"name": "site", "n": 6}, {"name": "subject", "n": 5}],
            "repeated": {"name": "visit", "values": [0, 1, 2, 3]},
            "outcomes": {
                "y": {
                    "family": "gaussian",
                    "intercept": 10,
                    "coefficients": {"visit": 1.0},
                    "random_sd": {"site": 1.0},
                    "residual_sd": 1.0,
                }
            },
        }
    )
    spec = ModelSpec(
        name="m", dataset="d", formula="y ~ visit + I(visit^2) + (1 + scale(visit, scale = FALSE) || site)"
    )
    _, truth, result = fit_replicate(design, spec, 7)
    assert result.ok, result.error
    rows = {r["term"]: r for r in parameters(result, truth, design)}
    assert {"visit", "I(visit^2)", "sd__scale(visit, scale = FALSE)"} <= set(rows)
    assert rows["visit"]["true_value"] == 1.0 and np.isnan(rows["I(visit^2)"]["true_value"])
    assert result.transform_state["scale"]["scale(visit, scale = FALSE)"] == {"center": 1.5, "scale": 1.0}


def test_config_check_builds_simulated_right_hand_sides():
    """A transform the design's own values cannot take stops the run before any job."""
    import copy

    from glmm_steps.config import check_config
    from glmm_steps.errors import ConfigError

    base = {
        "datasets": {
            "s": {
                "seeds": [1],
                "simulate": {
                    "levels": [{"name": "site", "n": 3}, {"name": "subject", "n": 4}],
                    "repeated": {"name": "visit", "values": [0, 1, 2]},
                    "outcomes": {
                        "y": {
                            "family": "gaussian",
                            "intercept": 10,
                            "coefficients": {"visit": 1.0},
                            "random_sd": {"site": 1.0},
                            "residual_sd": 1.0,
                        }
                    },
                },
            }
        },
        "models": {"m": {"dataset": "s", "formula": ""}},
    }
    for text, needle in [
        ("y ~ log(visit) + (1 | site)", r"log\(visit\) is not a finite number"),
        ("y ~ poly(visit, 3) + (1 | site)", "less than the number of distinct values"),
    ]:
        config = copy.deepcopy(base)
        config["models"]["m"]["formula"] = text
        with pytest.raises(ConfigError, match=needle):
            check_config(config)
    config = copy.deepcopy(base)
    config["models"]["m"]["formula"] = "log(y) ~ poly(visit, 2) + (1 + scale(visit) || site)"
    assert check_config(config).fits


def test_power_terms_name_transformed_coefficients():
    """A study's power_terms may name a coefficient of a transform or a factor level, as
    lme4 names it; the config check knows them from the design's rows."""
    import copy

    from glmm_steps.config import check_config
    from glmm_steps.errors import ConfigError

    config = {
        "datasets": {
            "sim": {
                "replicates": 4,
                "base_seed": 7,
                "simulate": {
                    "levels": [{"name": "site", "n": 3}, {"name": "subject", "n": 4}],
                    "repeated": {"name": "visit", "values": [0, 1, 2]},
                    "outcomes": {
                        "y": {
                            "family": "gaussian",
                            "intercept": 10,
                            "coefficients": {"visit": 1.0},
                            "random_sd": {"site": 1.0},
                            "residual_sd": 1.0,
                        }
                    },
                },
            }
        },
        "models": {
            "m": {"dataset": "sim", "formula": "y ~ factor(visit) + (1 | site)", "power_terms": ["factor(visit)2"]}
        },
    }
    assert check_config(copy.deepcopy(config)).study_designs
    config["models"]["m"]["power_terms"] = ["factor(visit)3"]
    with pytest.raises(ConfigError, match=r"'factor\(visit\)3' is not a fixed effect .*factor\(visit\)2"):
        check_config(config)


def test_text_binomial_response_is_a_factor_as_in_r():
    """The issue's own model on mlmRev's Contraception with use as N/Y: R's glmer takes
    the first level as failure; the fixed effects equal the 0/1 coding's."""
    data = pd.read_csv(Path(__file__).parent / "reference" / "data" / "Contraception.csv")
    text = data.assign(use=np.where(data["use01"] == 1, "Y", "N")).drop(columns="use01")
    spec = ModelSpec(
        name="m",
        dataset="d",
        formula="use ~ age + I(age^2) + urban + factor(livch) + (1 | district)",
        family="binomial",
    )
    res = fit_model(text, spec)
    ref = fit_model(
        data, ModelSpec(name="m", dataset="d", family="binomial", formula=spec.formula.replace("use ~", "use01 ~"))
    )
    assert res.ok and "binomial response 'use' is text: 'N' (its first level) is 0, 'Y' 1, as in R" in res.notes
    np.testing.assert_allclose(res.fixef["estimate"], ref.fixef["estimate"], rtol=1e-10)
    assert res.fixef["term"].tolist() == [
        "(Intercept)",
        "age",
        "I(age^2)",
        "urbanY",
        "factor(livch)1",
        "factor(livch)2",
        "factor(livch)3+",
    ]


def test_fixed_variables_numbered_without_random_terms():
    """lme4 fits the fixed part as its own formula: a random term written first does not
    change the order of variables in a fixed interaction's name."""
    assert parse("y ~ (1 + x | g) + z + z:x").fixed_term_labels == ("z", "z:x")
    assert parse("y ~ z + z:x + (1 + x | g)").fixed_term_labels == ("z", "z:x")


def test_as_numeric_converts_text_numbers():
    data = FRAME.assign(t=FRAME["x"].map(lambda v: f"{v:.3f}"))
    res = fit_model(data, ModelSpec(name="m", dataset="d", formula="y ~ as.numeric(t) + (1 | g)"))
    ref = fit_model(data.assign(t=data["t"].astype(float)), ModelSpec(name="m", dataset="d", formula="y ~ t + (1 | g)"))
    assert res.ok and res.fixef["term"].tolist() == ["(Intercept)", "as.numeric(t)"]
    np.testing.assert_allclose(res.fixef["estimate"], ref.fixef["estimate"], rtol=1e-10)


def test_one_level_factor_refused_as_r_does():
    with pytest.raises(DataError, match="f has only one level \\(a\\)"):
        build(parse("y ~ f + (1 | g)"), FRAME.assign(f="a"))
