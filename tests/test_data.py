"""Data checks: every problem a real file can have gives one line naming the file,
column and line; what is done to the data instead is returned as notes."""

import numpy as np
import pandas as pd
import pytest

from glmm_steps.data import model_frame, read_data, read_header
from glmm_steps.errors import ConfigError, DataError
from glmm_steps.formula import parse

LMM = parse("y ~ x + (1 | g)")


@pytest.fixture()
def frame():
    g = np.repeat([1, 2, 3, 4], 3)
    return pd.DataFrame({"g": g, "x": np.tile([0.0, 1.0, 2.0], 4), "y": g + np.arange(12) * 0.1})


def _message(frame, formula=LMM, **kw) -> str:
    with pytest.raises(DataError) as info:
        model_frame(frame, formula, "d.csv", **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_missing_values_refused_unless_allowed(frame):
    frame.loc[4, "y"] = np.nan
    frame.loc[7, "x"] = np.nan
    assert _message(frame) == (
        "d.csv: 2 rows have missing values (x: 1, y: 1; first on line 6, column 'y'); "
        "fill them in, or set drop_missing: true on the dataset to drop those rows"
    )
    out, notes = model_frame(frame, LMM, "d.csv", drop_missing=True)
    assert len(out) == 10 and out.index.tolist() == list(range(10))
    assert "dropped 2 of 12 rows with missing values (x: 1, y: 1)" in notes


def test_line_numbers_survive_dropped_rows(frame):
    frame["y"] = np.arange(12)
    frame.loc[1, "x"] = np.nan
    frame.loc[9, "y"] = -1  # line 11 of the file, whatever was dropped before it
    assert "found -1 on line 11" in _message(frame, family="poisson", drop_missing=True)


def test_numeric_grouping_note_unless_declared(frame):
    _, notes = model_frame(frame, LMM, "d.csv")
    assert notes == ["numeric grouping column g treated as a factor (one level per value)"]
    _, notes = model_frame(frame, LMM, "d.csv", factors=["g"])
    assert notes == []
    _, notes = model_frame(frame.assign(g="h" + frame["g"].astype(str)), LMM, "d.csv")
    assert notes == []


def test_covariate_with_stray_text(frame):
    frame["x"] = frame["x"].astype(object)
    frame.loc[5, "x"] = "1,5"
    assert _message(frame) == (
        "d.csv: column 'x' looks numeric but holds text '1,5' on line 7; if 'x' is "
        "categorical write factor(x) in the formula or list it under the dataset's "
        "factors:, else fix the value or leave the cell empty to mark it missing"
    )
    # a genuinely categorical text covariate is fine (treatment contrasts)
    out, _ = model_frame(frame.assign(x=np.tile(["a", "b", "c"], 4)), LMM, "d.csv")
    assert out["x"].tolist()[:3] == ["a", "b", "c"]
    assert "numbers stored as text" in _message(frame.assign(x=frame["x"].astype(str).str.replace(",", ".")))


def test_response_checks_per_family(frame):
    assert "column 'y' must be numeric, found text 'high' on line 3" in _message(
        frame.assign(y=frame["y"].astype(object).where(frame.index != 1, "high"))
    )
    assert "has the same value (5) on every row" in _message(frame.assign(y=5))
    assert "binomial response 'y' must be 0 or 1, found 2 on line 2" in _message(
        frame.assign(y=[2] + [0, 1] * 5 + [1]), family="binomial"
    )
    assert "Poisson response 'y' must be a count (0, 1, 2, ...), found 1.5 on line 2" in _message(
        frame.assign(y=[1.5] + [0, 1] * 5 + [1]), family="poisson"
    )
    assert "column 'y' holds an infinite value on line 4" in _message(
        frame.assign(y=frame["y"].where(frame.index != 2, np.inf))
    )
    bools = frame.assign(y=np.tile([True, False], 6))
    assert model_frame(bools, LMM, "d.csv", family="binomial")[0]["y"].sum() == 6


def test_cbind_counts(frame):
    f = parse("cbind(s, f) ~ x + (1 | g)")
    counts = frame.assign(s=np.tile([1, 2, 0], 4), f=np.tile([2, 1, 3], 4))
    out, _ = model_frame(counts, f, "d.csv", family="binomial")
    np.testing.assert_allclose(out[f.response], counts["s"] / 3)
    assert (
        "column 'f' (failures in cbind) is negative (-1 on line 2): trials (successes + failures) are fewer"
        in _message(counts.assign(f=[-1] + [1] * 11), f, family="binomial")
    )
    assert "cbind(s, f) has no trials (both 0) on line 2" in _message(
        counts.assign(s=[0] + [1] * 11, f=[0] + [1] * 11), f, family="binomial"
    )


def test_grouping_levels(frame):
    assert _message(frame.assign(g=7)) == (
        "d.csv: grouping factor 'g' has only 1 level (7); a random effect needs at least 2"
    )
    assert "as many levels (12) as rows" in _message(frame.assign(g=range(12)), family="gaussian")
    # a GLMM may have one level per row (an observation-level random effect)
    model_frame(frame.assign(g=range(12), y=[0, 1] * 6), LMM, "d.csv", family="binomial")


def test_log_offset_positive(frame):
    f = parse("y ~ x + offset(log(e)) + (1 | g)")
    assert "offset column 'e' must be positive for log(), found 0 on line 2" in _message(
        frame.assign(e=[0] + [1] * 11, y=np.arange(12)), f, family="poisson"
    )


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "d.csv: empty file"),
        (b"g,x,y\n", "d.csv: no data rows below the header"),
        (b"PK\x03\x04\x14\x00rest", "d.csv: not a CSV file, it is a zip archive (an Excel .xlsx file?)"),
        (b"\x89PNG\r\n\x1a\n", "d.csv: not a CSV file, it is a PNG image"),
        (b"g,x,y\n1,\x00,2\n", "d.csv: not a CSV file (binary content)"),
        (
            b"g,x,y\n1,\xff\xfe,2\n2,3,4\n",
            "d.csv: not UTF-8 text (byte 0xff at offset 8); save it as CSV with UTF-8 encoding",
        ),
        (b"g;x;y\n1;2;3\n", "d.csv: not comma-separated: its first line has ';' and no ','"),
        # not a table: reported without quoting the file (it might be /etc/passwd)
        (b"root:x:0:0:root:/root:/bin/bash\n", "d.csv: not a table: its first line has no ',' between column names"),
        (b"secret, key\nhunter2\n", "d.csv: line 2 has 1 fields, the header has 2"),
        (b"g,x,x\n1,2,3\n", "d.csv: column 'x' appears twice in the header"),
        (b"g,x,y\n1,2,3\n1,2,3,4\n", "d.csv: line 3 has 4 fields, the header has 3"),
    ],
)
def test_unreadable_files(tmp_path, monkeypatch, content, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.csv").write_bytes(content)
    with pytest.raises(DataError) as info:
        read_data("d.csv")
    assert str(info.value).startswith(message)


def test_read_only_needed_columns_and_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("\ufeffg,x,y,notes\n1,2,3,a\n")
    assert read_header(path) == ["g", "x", "y", "notes"]
    assert list(read_data(path, columns=("y", "g", "absent")).columns) == ["g", "y"]
    with pytest.raises(ConfigError, match="datasets.d.path: no such file"):
        read_header(tmp_path / "nope.csv", "datasets.d.path")
