"""The text a spec carries: every string encodable as UTF-8; names and labels free of control characters.

JSON can carry a lone surrogate (`"\\ud800"`) that Python keeps in a str but no UTF-8 encoder accepts: not Redis',
not Prometheus' label writer, not HDF5's (netCDF), not the JSON response's. Such a model name or coordinate label
used to pass validation and crash the worker assembling the job's results. `unencodable` walks a whole document,
keys included, before any other stage reads it, so later problems can quote users' strings safely; `shown`
renders a string for a problem's path without the offending character.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any

from service.exceptions import Problem

MAX_LABEL_CHARS = 1024
"""Longest coordinate label, and so longest factor level of a formula spec's string column."""
MAX_REPORTED = 20
"""Problems reported by one walk; a document full of bad strings does not make a huge answer."""

_SCALARS = frozenset({int, float, bool, type(None)})


def unencodable(doc: Any, path: str = "") -> list[Problem]:
    """A problem for each key or string under `doc` that UTF-8 cannot encode, in document order, at most
    MAX_REPORTED.

    Lists of numbers (data) are skipped in one pass over their element types, so a document of 20 M numbers
    costs a fraction of a second.
    """
    found: list[Problem] = []
    stack: list[tuple[Any, str]] = [(doc, path)]
    while stack and len(found) < MAX_REPORTED:
        value, where = stack.pop()
        children: list[tuple[Any, str]] = []
        if isinstance(value, str):
            problem = encoding_problem(value)
            if problem is not None:
                found.append(Problem(where, problem))
        elif isinstance(value, Mapping):
            for key, item in value.items():
                child = _join(where, shown(key) if isinstance(key, str) else str(key))
                if isinstance(key, str) and (problem := encoding_problem(key)) is not None:
                    found.append(Problem(child, f"the name {problem}"))
                children.append((item, child))
        elif isinstance(value, list | tuple) and not set(map(type, value)) <= _SCALARS:
            children = [(item, f"{where}[{i}]") for i, item in enumerate(value) if type(item) not in _SCALARS]
        stack.extend(reversed(children))
    return found[:MAX_REPORTED]


def encoding_problem(text: str) -> str | None:
    """Why `text` cannot be encoded as UTF-8 (a lone surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode text: lone surrogate U+{ord(text[exc.start]):04X} at position {exc.start}"
    return None


def label_problem(text: str, *, max_chars: int) -> str | None:
    """What is wrong with a name or label that ends up in results, metrics or logs, or None: it must be valid
    UTF-8, at most `max_chars` characters, without control characters (netCDF truncates at U+0000, so `a\\x00`
    and `a` would become one label)."""
    problem = encoding_problem(text)
    if problem is not None:
        return problem
    if len(text) > max_chars:
        return f"is {len(text)} characters long; at most {max_chars}"
    control = next((c for c in text if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        return f"contains the control character U+{ord(control):04X}"
    return None


def shown(text: str) -> str:
    """`text` with what UTF-8 cannot encode written as a backslash escape (`a\\ud800`), for paths and messages."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
