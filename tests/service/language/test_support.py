"""Constraints and supports on their own: literal and data arguments, observed data against each support."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.exceptions import Problem
from service.language import expr, support
from service.language.sections import DistDraft, dist

DATA = {"s": np.asarray([1.0, 0.0]), "p": np.asarray([0.2, 0.9]), "n": np.asarray([3, 5]),
        "probs": np.asarray([0.2, 0.3, 0.5]), "empty": np.zeros(0)}


def bound(text: str) -> DistDraft:
    problems: list[Problem] = []
    out = dist(text, "observe.y", problems)
    assert out is not None and problems == []
    return out


@pytest.mark.parametrize(("text", "constraint", "ok"), [
    ("2", "positive", True),
    ("0", "positive", False),
    ("-1.5", "positive", False),
    ("s", "positive", False),  # data with a zero
    ("p", "unit", True),
    ("1.5", "unit", False),
    ("0", "unit", True),  # closed: probabilities may be 0 or 1 (unlike observed Beta data)
    ("1", "unit", True),
    ("-0.1", "unit", False),
    ("n", "nonnegative_int", True),
    ("2.5", "nonnegative_int", False),
    ("-1", "nonnegative_int", False),
    ("empty", "positive", True),
    ("tau", "positive", True),  # a param: left to the sampler
    ("s - 2", "positive", True),  # an expression: left to the sampler
])
def test_satisfies_checks_literals_and_data_only(text: str, constraint: str, ok: bool) -> None:
    assert support.satisfies(expr.parse(text, ""), constraint, DATA) is ok


def test_check_argument_reports_at_the_distribution() -> None:
    problems: list[Problem] = []
    normal = bound("Normal(0, s)")
    for name, node in normal.args.items():
        support.check_argument(normal, name, node, DATA, problems)
    assert [(p.path, p.message) for p in problems] == [("observe.y", "Normal: scale must be positive, got s")]


def observed(text: str, values: Any) -> list[tuple[str, str]]:
    problems: list[Problem] = []
    support.check_observed(bound(text), np.asarray(values), DATA, "data.y", problems)
    return [(p.path, p.message) for p in problems]


@pytest.mark.parametrize(("text", "good", "bad", "message"), [
    ("Normal(0, 1)", [-1e9, 0.0, 3.5], None, ""),
    ("Gamma(1, 1)", [0.5, 2.0], [0.5, 0.0], "must be positive"),
    ("HalfNormal(1)", [0.0, 2.0], [-0.1], "must be non-negative"),
    ("Beta(1, 1)", [0.1, 0.9], [0.5, 1.0], "must lie strictly between 0 and 1"),
    ("Bernoulli(probs=0.5)", [0, 1, 1], [0, 2], "must be 0 or 1"),
    ("Poisson(3)", [0, 4, 10], [1.5], "must be non-negative integers"),
    ("Poisson(3)", [0], [-1], "must be non-negative integers"),
    ("Binomial(n, 0.5)", [3, 5], [4, 5], "must not exceed total_count"),
    ("Binomial(4, 0.5)", [0, 4], [5], "must not exceed total_count"),
    ("Binomial(probs=0.5)", [0, 1], [2], "must not exceed total_count"),  # total_count defaults to 1
    ("Categorical(probs=probs)", [0, 2], [3], "must be category indices in [0, 3)"),
])
def test_observed_values_against_the_support(text: str, good: list[float], bad: list[float] | None,
                                             message: str) -> None:
    assert observed(text, good) == []
    if bad is not None:
        name = text.split("(")[0]
        assert observed(text, bad) == [("data.y", f"{message} for {name} (observed in observe.y)")]


def test_bounds_computed_from_params_are_left_to_the_sampler() -> None:
    assert observed("Binomial(m, 0.5)", [100]) == []
    assert observed("Categorical(logits=v)", [7]) == []
    assert observed("Poisson(3)", np.zeros(0)) == []


def test_known_values() -> None:
    assert support.known_values(expr.parse("2.5", ""), DATA) == 2.5
    assert support.known_values(expr.parse("n", ""), DATA) is DATA["n"]
    assert support.known_values(expr.parse("m", ""), DATA) is None
    assert support.known_values(expr.parse("n + 1", ""), DATA) is None
