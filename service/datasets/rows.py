"""An append's body -> typed columns, every value checked (service.datasets.content makes their bytes).

Three forms of the same rows: JSON `{"columns": {col: [values]}}`, JSON `{"rows": [{col: value}]}`, or CSV text
with a header line. Each becomes one list per column of the schema; then every value is converted in row order
(`rows[i]` counts data rows from 0 in every form), so the same values give the same typed columns, the same
canonical bytes and the same hash whichever form carried them.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping
from typing import Any

from service.datasets.schema import MAX_STRING_CHARS, Problems
from service.exceptions import Problem, SpecError
from service.language.data import MAX_INT
from service.language.text import label_problem, shown

SHAPE = ('the body is JSON {"columns": {column: [values]}} or {"rows": [{column: value}]}, or CSV '
         "(Content-Type: text/csv) whose first line names the columns")
Columns = dict[str, list[Any]]
Converted = tuple[Any, str | None]
ABSENT = object()
"""The cell of a row that is missing the column, or of a CSV line with the wrong number of fields: that problem is
reported, the row's other values are still checked."""


def parse(schema: Mapping[str, str], body: Any, *, csv_text: str | None, max_rows: int) -> Columns:
    """The typed columns of one append (floats, ints, strs; schema order); SpecError with every problem."""
    problems = Problems()
    text = csv_text is not None
    if text and body is not None:
        raise SpecError([Problem("", "send the rows as JSON or as CSV, not both")])
    if csv_text is not None:
        raw = _from_csv(schema, csv_text, problems, max_rows)
    elif isinstance(body, Mapping) and list(body) == ["columns"]:
        raw = _from_columns(schema, body["columns"], problems)
    elif isinstance(body, Mapping) and list(body) == ["rows"]:
        raw = _from_records(schema, body["rows"], problems, max_rows)
    else:
        raise SpecError([Problem("", SHAPE)])
    if raw is None:  # the values of a table whose shape is wrong are not checked
        problems.raise_any()
        raise SpecError([Problem("", SHAPE)])
    count = len(next(iter(raw.values())))
    if count == 0:
        raise SpecError([Problem("rows", "no rows to append")])
    if count > max_rows:
        raise SpecError([Problem("rows", _too_many(count, max_rows))])
    out: Columns = {col: [] for col in schema}
    steps = [(col, CONVERT[kind], raw[col], out[col]) for col, kind in schema.items()]
    for i in range(count):
        for col, convert, values, typed in steps:
            if values[i] is ABSENT:
                continue
            value, problem = convert(values[i], text)
            if problem is None:
                typed.append(value)
            else:
                problems.add(f"rows[{i}].{col}", problem)
    problems.raise_any()
    return out


def _too_many(count: int | str, limit: int) -> str:
    return f"{count} rows in one append; this server takes at most {limit} (max_append_rows): split it"


def _from_columns(schema: Mapping[str, str], raw: Any, problems: Problems) -> Columns | None:
    if not isinstance(raw, Mapping):
        problems.add("columns", "must map each column to its list of values")
        return None
    _names_match(schema, list(raw), problems)
    lengths: dict[str, int] = {}
    for col in schema:
        if col in raw and not isinstance(raw[col], list):
            problems.add(f"columns.{col}", "must be a list of values")
        elif col in raw:
            lengths[col] = len(raw[col])
    if len(set(lengths.values())) > 1:
        first = next(iter(lengths))
        for col, n in lengths.items():
            if n != lengths[first]:
                problems.add(f"columns.{col}", f"has {n} values; columns.{first} has {lengths[first]}")
    return None if problems else {col: raw[col] for col in schema}


def _from_records(schema: Mapping[str, str], raw: Any, problems: Problems, max_rows: int) -> Columns | None:
    if not isinstance(raw, list):
        problems.add("rows", "must be a list of objects {column: value}")
        return None
    if len(raw) > max_rows:
        raise SpecError([Problem("rows", _too_many(len(raw), max_rows))])
    wanted = set(schema)
    for i, row in enumerate(raw):
        if not isinstance(row, Mapping):
            problems.add(f"rows[{i}]", "must be an object {column: value}")
        elif row.keys() != wanted:
            for col in schema:
                if col not in row:
                    problems.add(f"rows[{i}].{col}", "missing: every row has every column")
            for key in row:
                if key not in wanted:
                    problems.add(f"rows[{i}].{shown(str(key))[:64]}",
                                 f"not a column of the dataset ({_listed(schema)})")
    return {col: [row.get(col, ABSENT) if isinstance(row, Mapping) else ABSENT for row in raw] for col in schema}


def _from_csv(schema: Mapping[str, str], csv_text: str, problems: Problems, max_rows: int) -> Columns | None:
    reader = csv.reader(io.StringIO(csv_text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if not header:
            problems.add("header", "no header line: the first line names the columns")
            return None
        header = [h.strip() for h in header]
        header[0] = header[0].removeprefix("\ufeff")
        _names_match(schema, header, problems)
        if problems:
            return None
        lines: list[list[Any]] = []
        for line in reader:
            if not line:
                continue  # a blank line
            if len(lines) >= max_rows:
                raise SpecError([Problem("rows", _too_many(f"more than {max_rows}", max_rows))])
            if len(line) != len(header):
                problems.add(f"rows[{len(lines)}]", f"{len(line)} fields; the header has {len(header)} "
                                                    f"(line {reader.line_num})")
            lines.append(line if len(line) == len(header) else [ABSENT] * len(header))
    except csv.Error as exc:
        raise SpecError([Problem("body", f"not CSV: {exc} (line {reader.line_num})")]) from None
    return {col: [line[j] for line in lines] for j, col in enumerate(header)}


def _names_match(schema: Mapping[str, str], names: list[Any], problems: Problems) -> None:
    """Every column of the schema named once, and nothing else."""
    seen: set[Any] = set()
    for name in names:
        if name in seen:
            problems.add(f"columns.{shown(str(name))[:64]}", "given twice")
        elif name not in schema:
            problems.add(f"columns.{shown(str(name))[:64]}", f"not a column of the dataset ({_listed(schema)})")
        seen.add(name)
    for col in schema:
        if col not in seen:
            problems.add(f"columns.{col}", "missing: every column of the dataset must be given")


def _listed(schema: Mapping[str, str]) -> str:
    names = list(schema)
    return "its columns: " + ", ".join(names[:20]) + (", …" if len(names) > 20 else "")


# -- values: (typed value, None) or (None, why not); `text`: the value comes from CSV

def _number_text(value: str) -> str | None:
    value = value.strip()
    return value if value and "_" not in value else None


def _float(value: Any, text: bool) -> Converted:
    if value is None or (text and not value.strip()):
        return None, "missing value"
    if text:
        number = _number_text(value)
        try:
            x = float(number) if number is not None else None
        except ValueError:
            x = None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            x = float(value)
        except OverflowError:
            return None, "number too large"
    else:
        x = None
    if x is None:
        return None, "not a number"
    if not math.isfinite(x):
        return None, "not a finite number (NaN and infinities are refused)"
    return x, None


def _int(value: Any, text: bool) -> Converted:
    if value is None or (text and not value.strip()):
        return None, "missing value"
    if isinstance(value, bool):
        return None, "not an integer (a boolean)"
    n: int | None = None
    if text:
        number = _number_text(value)
        if number is not None:
            try:
                n = int(number)
            except ValueError:
                value = _float(number, True)[0]  # '3.0' and '1e3' are integers too
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        n = int(value)
    if n is None:
        return None, "not an integer"
    if abs(n) > MAX_INT:
        return None, "integer out of range (at most 2^62 in magnitude)"
    return n, None


def _string(value: Any, text: bool) -> Converted:
    if value is None:
        return None, "missing value"
    if not isinstance(value, str):
        return None, "not a string (quote it)"
    problem = label_problem(value, max_chars=MAX_STRING_CHARS)
    return (None, problem) if problem is not None else (value, None)


CONVERT: dict[str, Callable[[Any, bool], Converted]] = {"float": _float, "int": _int, "string": _string}
