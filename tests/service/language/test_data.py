"""Data checks on their own: graph arrays and formula columns, converted or refused with their path."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from service.exceptions import Problem
from service.language import data


def array(value: Any) -> tuple[np.ndarray | None, list[tuple[str, str]]]:
    problems: list[Problem] = []
    out = data.array(value, "data.v", problems)
    return out, [(p.path, p.message) for p in problems]


def column(value: Any) -> tuple[np.ndarray | None, list[tuple[str, str]]]:
    problems: list[Problem] = []
    out = data.column(value, "data.c", problems)
    return out, [(p.path, p.message) for p in problems]


@pytest.mark.parametrize(("value", "dtype", "shape"), [
    (3, np.int64, ()),
    (2.5, np.float64, ()),
    ([1, 2, 3], np.int64, (3,)),
    ([True, False], np.int64, (2,)),
    ([[1.0, 2.0], [3.0, 4.0]], np.float64, (2, 2)),
    ([1, 2.5], np.float64, (2,)),
    ([2**62, -(2**62)], np.int64, (2,)),
    ([], np.float64, (0,)),
])
def test_numbers_become_int64_or_float64(value: Any, dtype: type, shape: tuple[int, ...]) -> None:
    out, problems = array(value)
    assert problems == []
    assert out is not None and out.dtype == dtype and out.shape == shape
    np.testing.assert_array_equal(out, np.asarray(value, dtype=dtype))


@pytest.mark.parametrize(("value", "path", "message"), [
    ("abc", "data.v", "must be a number or a (nested) list of numbers, got 'abc'"),
    (None, "data.v", "must be a number or a (nested) list of numbers, got None"),
    ([[1, 2], [3]], "data.v", "nested lists must be rectangular"),
    ([1, "a"], "data.v", "must be numbers (strings are only allowed in coords and, with a formula, as factors)"),
    ([2**62 + 1], "data.v", "integer too large"),
    ([-(2**62) - 1], "data.v", "integer too large"),
    ([2**63 + 5], "data.v", "integer too large"),  # numpy reads it as uint64: refused, not wrapped
    ([[1.0, 2.0], [3.0, math.inf]], "data.v[1, 1]", "NaN or infinite value; data must be finite numbers"),
    (math.nan, "data.v", "NaN or infinite value; data must be finite numbers"),
    ([[[[[[[[[1.0]]]]]]]]], "data.v", "has 9 dimensions; at most 8 are allowed"),
])
def test_bad_array_is_refused_with_its_path(value: Any, path: str, message: str) -> None:
    out, problems = array(value)
    assert out is None
    assert problems == [(path, message)]


def test_arrays_keep_the_good_entries_and_report_the_bad(monkeypatch: pytest.MonkeyPatch) -> None:
    problems: list[Problem] = []
    out = data.arrays({"a": [1, 2], "b": "x", "c": [0.5]}, problems)
    assert list(out) == ["a", "c"]
    assert [(p.path, p.message[:14]) for p in problems] == [("data.b", "must be a numb")]

    monkeypatch.setattr(data, "MAX_DATA_ELEMENTS", 4)
    problems = []
    out = data.arrays({"a": [1, 2], "b": [1, 2], "c": [1], "d": [1]}, problems)
    assert list(out) == ["a", "b"]  # stops at the entry that passes the total
    assert [(p.path, p.message) for p in problems] == [("data.c", "data hold more than 4 numbers in all")]


@pytest.mark.parametrize(("value", "dtype"), [
    ([1, 2, 3], np.int64),
    ((1.5, 2.5), np.float64),
    ([True, False, True], np.int64),
    (np.array([1.0, 2.0], dtype=np.float32), np.float64),
    (["a", "b", "a"], np.dtype("<U1")),
])
def test_columns_hold_numbers_or_strings(value: Any, dtype: Any) -> None:
    out, problems = column(value)
    assert problems == []
    assert out is not None and out.dtype == dtype and out.ndim == 1 and len(out) == len(value)


@pytest.mark.parametrize(("value", "path", "message"), [
    ([], "data.c", "must be a non-empty list (a column)"),
    (3, "data.c", "must be a non-empty list (a column)"),
    ("abc", "data.c", "must be a non-empty list (a column)"),
    ([[1], [2]], "data.c", "must be a flat list (one value per row)"),
    ([[1], [2, 3]], "data.c", "must be a flat list (one value per row)"),  # ragged: was an uncaught ValueError
    (["a", None, "b"], "data.c[1]", "missing value (null); drop the row or impute"),
    ([1, "a"], "data.c", "mixed numbers and strings; a column is all numbers or all strings"),
    ([1.0, math.nan], "data.c[1]", "NaN, infinite or missing value"),
    ([1, 2**62 + 1], "data.c", "integer too large"),
    ([1j, 2], "data.c", "must hold numbers or strings"),
])
def test_bad_column_is_refused_with_its_path(value: Any, path: str, message: str) -> None:
    out, problems = column(value)
    assert out is None
    assert problems == [(path, message)]


def test_column_row_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "MAX_ROWS", 3)
    assert column([1, 2, 3])[1] == []
    assert column([1, 2, 3, 4]) == (None, [("data.c", "more than 3 rows")])


def test_columns_check_names_and_lengths() -> None:
    problems: list[Problem] = []
    out = data.columns({"y": [1.0, 2.0], "x y": [1, 2], 3: [1, 2], "g": ["a", "b"]}, problems)
    assert out is not None and list(out) == ["y", "g"]
    assert [(p.path, p.message) for p in problems] == [
        ("data.x y", "column names use letters, digits and underscores"),
        ("data.3", "column names use letters, digits and underscores"),
    ]
    problems = []
    assert data.columns({"y": [1.0, 2.0], "x": [1.0]}, problems) is None
    assert [(p.path, p.message) for p in problems] == [("data", "columns have different lengths: [1, 2]")]
    empty: dict[str, Any] = {}
    for raw in (None, empty, [1, 2]):
        problems = []
        assert data.columns(raw, problems) is None
        assert [p.path for p in problems] == ["data"]
