"""User data -> numpy arrays, checked once for every front end.

A graph spec's `data` holds numbers of any rank up to MAX_DATA_DIMS (`arrays`,
`array`); a formula spec's `data` holds flat columns of numbers or of strings
(`columns`, `column`). Either way numbers come out as int64 (bools as 0/1) or as
finite float64. Each problem is appended with its field path; a refused value
gives None and the caller goes on to the next, so every problem is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from service.exceptions import Problem
from service.language import expr
from service.language.text import MAX_LABEL_CHARS, label_problem

MAX_DATA_ELEMENTS = 20_000_000
"""Total numbers in a graph spec's `data`; about 160 MB as float64."""
MAX_DATA_DIMS = 8
MAX_ROWS = 1_000_000
"""Rows of a formula spec's data."""
MAX_INT = 2**62
"""Largest integer magnitude accepted; int64 arithmetic on data (sums, indices) stays clear of overflow."""

_RAGGED = "nested lists must be rectangular"
_NOT_FLAT = "must be a flat list (one value per row)"


def arrays(raw: Mapping[Any, Any], problems: list[Problem]) -> dict[str, np.ndarray]:
    """A graph spec's `data` section: the entries that are valid arrays, by name."""
    out: dict[str, np.ndarray] = {}
    total = 0
    for key, value in raw.items():
        path = f"data.{key}"
        values = array(value, path, problems)
        if values is None:
            continue
        total += values.size
        if total > MAX_DATA_ELEMENTS:
            problems.append(Problem(path, f"data hold more than {MAX_DATA_ELEMENTS} numbers in all"))
            break
        out[str(key)] = values
    return out


def array(value: Any, path: str, problems: list[Problem]) -> np.ndarray | None:
    """A number or a rectangular nested list of numbers, as an int64 or float64 array."""
    if isinstance(value, str) or value is None:
        problems.append(Problem(path, f"must be a number or a (nested) list of numbers, got {value!r:.40}"))
        return None
    values = _parse(value, path, problems, ragged=_RAGGED)
    if values is None:
        return None
    if values.ndim > MAX_DATA_DIMS:
        problems.append(Problem(path, f"has {values.ndim} dimensions; at most {MAX_DATA_DIMS} are allowed"))
        return None
    return _numbers(values, path, problems, nonfinite="NaN or infinite value; data must be finite numbers",
                    not_numbers="must be numbers (strings are only allowed in coords and, with a formula, as "
                                "factors)")


def columns(raw: Any, problems: list[Problem]) -> dict[str, np.ndarray] | None:
    """A formula spec's `data`: equal-length columns by name, or None after a problem with the whole table."""
    if not isinstance(raw, Mapping) or not raw:
        problems.append(Problem("data", "must be a mapping of column names to equal-length lists"))
        return None
    out: dict[str, np.ndarray] = {}
    lengths = set()
    for name, value in raw.items():
        path = f"data.{name}"
        if not isinstance(name, str) or not expr.NAME_RE.match(name):
            problems.append(Problem(path, "column names use letters, digits and underscores"))
            continue
        values = column(value, path, problems)
        if values is None:
            continue
        lengths.add(len(values))
        out[name] = values
    if len(lengths) > 1:
        problems.append(Problem("data", f"columns have different lengths: {sorted(lengths)}"))
        return None
    return out


def column(value: Any, path: str, problems: list[Problem]) -> np.ndarray | None:
    """One formula column: numbers (int64 or finite float64) or strings (factor levels, as a str array)."""
    if not isinstance(value, list | tuple | np.ndarray) or len(value) == 0:
        problems.append(Problem(path, "must be a non-empty list (a column)"))
        return None
    if len(value) > MAX_ROWS:
        problems.append(Problem(path, f"more than {MAX_ROWS} rows"))
        return None
    values = _parse(value, path, problems, ragged=_NOT_FLAT)
    if values is None:
        return None
    if values.ndim != 1:
        problems.append(Problem(path, _NOT_FLAT))
        return None
    if values.dtype.kind in "OU":
        missing = next((i for i, v in enumerate(value) if v is None), None)
        if missing is not None:
            problems.append(Problem(f"{path}[{missing}]", "missing value (null); drop the row or impute"))
            return None
        if not all(isinstance(v, str) for v in value):
            problems.append(Problem(path, "mixed numbers and strings; a column is all numbers or all strings"))
            return None
        first: dict[str, int] = {}
        for i, level in enumerate(value):
            first.setdefault(level, i)
        for level, i in first.items():  # factor levels become coordinate labels
            problem = label_problem(level, max_chars=MAX_LABEL_CHARS)
            if problem is not None:
                problems.append(Problem(f"{path}[{i}]", f"the factor level {problem}"))
                return None
        return values.astype(str)
    return _numbers(values, path, problems, nonfinite="NaN, infinite or missing value",
                    not_numbers="must hold numbers or strings")


def _parse(value: Any, path: str, problems: list[Problem], *, ragged: str) -> np.ndarray | None:
    try:
        return np.array(value)
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:
        problems.append(Problem(path, ragged if "inhomogeneous" in str(exc) else "not an array of numbers"))
        return None


def _numbers(values: np.ndarray, path: str, problems: list[Problem], *, nonfinite: str,
             not_numbers: str) -> np.ndarray | None:
    """Bools as int64 0/1, integers as int64 within MAX_INT, floats as finite float64; anything else refused.

    The messages differ by front end (`nonfinite`, `not_numbers`); the first non-finite value is named by its index.
    """
    if values.dtype.kind == "b":
        values = values.astype(np.int64)
    if values.dtype.kind in "iu":
        if values.size and (values.max() > MAX_INT or values.min() < -MAX_INT):
            problems.append(Problem(path, "integer too large"))
            return None
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            bad = np.argwhere(~np.isfinite(values))[0]
            where = f"[{', '.join(str(int(i)) for i in bad)}]" if values.ndim else ""
            problems.append(Problem(path + where, nonfinite))
            return None
        return values.astype(np.float64)
    problems.append(Problem(path, not_numbers))
    return None
