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
    assert [t.group_name for t in parse("y ~ 1 + (1 | a/b/c) + (1 | d:e)").random] == [
        "a", "b:a", "c:(b:a)", "d:e"]
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


@pytest.mark.parametrize("text, needle", [
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
])
def test_malformed(text, needle):
    with pytest.raises(GlmmError) as info:
        parse(text)
    assert str(info.value).startswith(f"formula {text!r}: ") and needle in str(info.value)


def test_missing_column_named():
    with pytest.raises(GlmmError, match="names column 'age'"):
        check_columns(parse("y ~ age + (1 | g)"), ["y", "g"], "dataset 'd'")
    with pytest.raises(GlmmError, match="lacks \\(did you mean 'patient_id'\\?\\)"):
        check_columns(parse("y ~ 1 + (1 | patient)"), ["y", "patient_id"], "dataset 'd'")
