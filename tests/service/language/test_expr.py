"""The expression parser accepts the language and refuses everything else, without evaluating."""

from __future__ import annotations

import pytest

from service.exceptions import SpecError
from service.language import expr
from service.language.expr import BinOp, Call, Index, Name, Neg, Num, Slice


def test_parses_arithmetic_calls_and_indexing() -> None:
    node = expr.parse("exp(a[county] + b * -x[0:3]) @ beta", "define.m")
    assert isinstance(node, BinOp) and node.op == "@"
    assert isinstance(node.left, Call) and node.left.func == "exp"
    inner = node.left.args[0]
    assert isinstance(inner, BinOp) and inner.op == "+"
    assert inner.left == Index(Name("a"), (Name("county"),))
    assert inner.right == BinOp("*", Name("b"), Neg(Index(Name("x"), (Slice(0, 3, None),))))
    assert expr.names(node) == {"a", "county", "b", "x", "beta"}


def test_negative_literals_fold() -> None:
    assert expr.parse("-2.5", "p") == Num(-2.5)
    assert expr.parse(3, "p") == Num(3)


def test_round_trip_text() -> None:
    text = "1 - tau / (tau + 10)"
    assert expr.parse(expr.to_text(expr.parse(text, "d")), "d") == expr.parse(text, "d")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("__import__('os').system('true')", "only named functions"),
        ("__import__('os')", "not allowed"),
        ("x.__class__", "attribute access"),
        ("(lambda: 1)()", "only named functions"),
        ("lambda: 1", "lambda"),
        ("[1, 2]", "List"),
        ("'abc'", "only numbers"),
        ("a if b else c", "IfExp"),
        ("a < b < c", "single comparisons"),
        ("f(*x)", "starred"),
        ("f(**x)", "** arguments"),
        ("x ** 1e6", "exponent"),
        ("x ** -100", "exponent"),
        ("1e400", "finite"),
        ("9" * 30, "too large"),
        ("(" * 5000 + "1" + ")" * 5000, "longer than"),
        ("exp(" * 600 + "1" + ")" * 600, "too many nested"),
        ("exp(" * 60 + "1" + ")" * 60, "nested deeper"),
        ("+".join(["x"] * 1000), "nested deeper"),
        ("a[b:c]", "slice bounds"),
        ("", "empty"),
        ("a +", "cannot parse"),
        ("x" * 5000, "longer than"),
        ("True", "only numbers"),
        ("_secret", "not allowed"),
    ],
)
def test_refuses_outside_the_language(text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        expr.parse(text, "define.x")
    [problem] = info.value.problems
    assert problem.path == "define.x"
    assert fragment in problem.message


def test_refuses_non_strings() -> None:
    with pytest.raises(SpecError, match="expected an expression"):
        expr.parse({"a": 1}, "p")
    with pytest.raises(SpecError, match="boolean"):
        expr.parse(True, "p")
