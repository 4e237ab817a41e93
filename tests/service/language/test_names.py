"""Names and order on their own: name checks over read sections, dependency order and cycles over drafts."""

from __future__ import annotations

from typing import Any

import pytest

from service.exceptions import Problem
from service.language import expr, names
from service.language.sections import DefineDraft, Draft, read


def name_problems(**sections: Any) -> list[tuple[str, str]]:
    problems: list[Problem] = []
    read_ = read({"spec": 1, **sections}, problems)
    assert problems == []  # only the names stage speaks below
    names.check(read_, problems)
    return [(p.path, p.message) for p in problems]


def define(name: str, text: str) -> DefineDraft:
    return DefineDraft(name, expr.parse(text, ""), None, f"define.{name}")


def test_valid_names_pass() -> None:
    assert name_problems(data={"y": [1.0]}, coords={"school": ["a"], "region:school": ["a:a"]},
                         params={"mu": "Normal(0, 1)", "b": {"dist": "Normal(0, 1)", "label": "1|school"}},
                         define={"d": "mu"}) == []


def test_data_may_share_a_coordinate_name_but_params_and_defines_may_not() -> None:
    assert name_problems(data={"school": [0, 1]}, coords={"school": ["a", "b"]}, params={"mu": "Normal(0, 1)"}) == []
    assert name_problems(coords={"school": ["a"]}, params={"school": "Normal(0, 1)"}, define={"chain": "1"}) == [
        ("params.school", "name 'school' is reserved for a dimension"),
        ("define.chain", "name 'chain' is reserved for a dimension"),
    ]


def test_bad_and_duplicate_names() -> None:
    assert name_problems(data={"y": [1.0], "2y": [1.0]}, params={"y": "Normal(0, 1)"}, define={"y": "1"}) == [
        ("data.2y", "names use letters, digits and underscores and start with a letter (at most 64)"),
        ("params.y", "name 'y' is already used in data"),
        ("define.y", "name 'y' is already used in data"),
        ("define.y", "'y' already names params.y in the draws"),
    ]


def test_labels_are_unique_names_in_the_draws() -> None:
    assert name_problems(coords={"g": ["a"]},
                         params={"a": "Normal(0, 1)", "b": {"dist": "Normal(0, 1)", "label": "a"},
                                 "c": {"dist": "Normal(0, 1)", "label": "g"},
                                 "x": {"dist": "Normal(0, 1)", "label": "draw"},
                                 "y": {"dist": "Normal(0, 1)", "label": "th"}},
                         define={"th": "1"}) == [
        ("params.b.label", "'a' already names params.a in the draws"),
        ("params.c.label", "label 'g' is reserved for a dimension"),
        ("params.x.label", "label 'draw' is reserved for a dimension"),
        ("define.th", "'th' already names params.y in the draws"),  # no label: the problem is the name
    ]


def test_coordinate_names() -> None:
    assert name_problems(coords={"ok_1": ["a"], "1x": ["a"], "draw": ["a"], "a b": ["a"]},
                         params={"mu": "Normal(0, 1)"}) == [
        (f"coords.{n}", "not a valid dimension name (chain and draw are ArviZ's own)") for n in ("1x", "draw", "a b")
    ]


def test_order_puts_dependencies_first_and_keeps_declaration_order_otherwise() -> None:
    drafts: list[Draft] = [define("c", "b + a"), define("a", "1"), define("b", "a * x"), define("d", "2")]
    problems: list[Problem] = []
    ordered = names.order(drafts, problems)
    assert problems == []
    assert [d.name for d in ordered] == ["a", "b", "c", "d"]  # x is not a node (data): no dependency


def test_param_dependencies_come_from_distribution_arguments() -> None:
    problems: list[Problem] = []
    sections = read({"spec": 1, "params": {"theta": "Normal(mu, tau)", "tau": "HalfNormal(s)", "mu": "Normal(0, 1)"},
                     "define": {"s": "2"}}, problems)
    assert names.dependencies(sections.params[0]) == {"mu", "tau"}
    assert [d.name for d in names.order(sections.drafts, problems)] == ["mu", "s", "tau", "theta"]
    assert problems == []


def test_cycles_are_reported_once_each_and_their_dependents_left_out() -> None:
    drafts: list[Draft] = [define("a", "b"), define("b", "a"), define("c", "a + 1"), define("d", "d"),
                           define("e", "1")]
    problems: list[Problem] = []
    ordered = names.order(drafts, problems)
    assert [d.name for d in ordered] == ["e"]
    assert [(p.path, p.message) for p in problems] == [("define.a", "cycle: a -> b -> a"),
                                                       ("define.d", "cycle: d -> d")]


@pytest.mark.parametrize(("params", "path", "name"), [
    ({"lp": "Normal(0, 1)"}, "params.lp", "lp"),
    ({"a": {"dist": "Normal(0, 1)", "label": "diverging"}}, "params.a.label", "diverging"),
])
def test_sample_stat_names_are_refused(params: dict[str, Any], path: str, name: str) -> None:
    """ArviZ gives a variable and a sample stat of one name the same dims: a variable `lp` crashed assembly."""
    assert name_problems(params=params) == [(path, f"{name!r} names a sample stat in the results; choose another "
                                                   "name")]


def test_sample_stats_are_the_workers() -> None:
    from workers.program import STAT_NAMES

    assert names.SAMPLE_STATS == STAT_NAMES
