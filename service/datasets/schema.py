"""A dataset's name and columns, checked; the canonical bytes its hashes cover; the capped problem list."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from service.exceptions import Problem, SpecError
from service.language import expr
from service.language.text import encoding_problem, shown

COLUMN_TYPES = {"float": "float", "int": "int", "string": "string", "category": "string"}
"""Declared type -> stored type: `category` is another word for `string` (factor levels)."""
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
"""Dataset names (no ':', so that service.keys can put the tenant last)."""
MAX_COLUMNS = 200
MAX_STRING_CHARS = 200
"""Longest value of a string column."""
MAX_DESCRIPTION_CHARS = 2000
MAX_PROBLEMS = 50
"""Problems reported for one request; the rest are counted in a last one."""


class Problems:
    """Every problem of one request, the first MAX_PROBLEMS kept (a bad file of a million rows is not a
    million-line answer) and the rest counted."""

    def __init__(self) -> None:
        self.kept: list[Problem] = []
        self.more = 0

    def add(self, path: str, message: str) -> None:
        if len(self.kept) < MAX_PROBLEMS:
            self.kept.append(Problem(path, message))
        else:
            self.more += 1

    def __bool__(self) -> bool:
        return bool(self.kept)

    def raise_any(self) -> None:
        """SpecError with every problem kept (and '… and N more'), if there is one."""
        if self.kept:
            more = [Problem("", f"… and {self.more} more")] if self.more else []
            raise SpecError(self.kept + more)


def description_problem(description: str | None) -> Problem | None:
    if description is None:
        return None
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        return Problem("description", f"a text of at most {MAX_DESCRIPTION_CHARS} characters")
    problem = encoding_problem(description)
    return Problem("description", problem) if problem is not None else None


def name_problem(name: str) -> Problem | None:
    if isinstance(name, str) and NAME_RE.match(name):
        return None
    return Problem("name", "dataset names start with a letter and use letters, digits, '_', '.' and '-' (at most 64)")


def parse_columns(raw: Any, name: str | None = None) -> dict[str, str]:
    """The schema, in the declared order with stored types; SpecError naming each bad column (and the dataset's
    name, if one is given and bad)."""
    problems = Problems()
    if name is not None and (bad := name_problem(name)) is not None:
        problems.add(bad.path, bad.message)
    if not isinstance(raw, Mapping) or not raw:
        problems.add("columns", "must map column names to types (float, int, string or category)")
        problems.raise_any()
    if len(raw) > MAX_COLUMNS:
        problems.add("columns", f"{len(raw)} columns; at most {MAX_COLUMNS}")
    columns: dict[str, str] = {}
    for column, kind in raw.items():
        path = f"columns.{shown(str(column))[:64]}"
        if not isinstance(column, str) or not expr.NAME_RE.match(column):
            problems.add(path, "column names use letters, digits and underscores and start with a letter "
                               "(at most 64)")
        elif not isinstance(kind, str) or kind not in COLUMN_TYPES:
            problems.add(path, f"unknown type {shown(str(kind))[:40]!r}; one of float, int, string (or category)")
        else:
            columns[column] = COLUMN_TYPES[kind]
    problems.raise_any()
    return columns


def same_columns(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """The same columns with the same types in the same order."""
    return list(a.items()) == list(b.items())


def schema_hash(columns: Mapping[str, str]) -> str:
    """Version 0's hash: sha256 of the canonical schema JSON (columns in order, stored types)."""
    canonical = json.dumps({"columns": [[c, t] for c, t in columns.items()]}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def chain_hash(previous: str, canonical: bytes) -> str:
    """Version N's hash: sha256 of version N-1's hash (hex) followed by the appended rows' canonical bytes."""
    digest = hashlib.sha256(previous.encode())
    digest.update(canonical)
    return digest.hexdigest()
