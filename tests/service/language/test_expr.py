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


@pytest.mark.parametrize(("text", "folded"), [
    ("mu ** 2 ** 3", BinOp("**", Name("mu"), Num(8))),  # right-associative: mu ** (2 ** 3)
    ("mu ** 2 ** -1", BinOp("**", Name("mu"), Num(0.5))),  # 2 ** -1 reached JAX as an integer power and crashed
    ("mu ** (1 / 2)", BinOp("**", Name("mu"), Num(0.5))),
    ("mu ** -(3 - 1)", BinOp("**", Name("mu"), Num(-2))),
    ("pow(mu, 4 * 4)", Call("pow", (Name("mu"), Num(16)))),
    ("2 ** -1", Num(0.5)),  # as in Python
    ("-2 ** 2", Num(-4)),
    ("2 ** 60", Num(2.0**60)),  # beyond 2**53 an integer constant is a float (JAX's int64 would overflow at 2**63)
    ("(mu ** 8) ** 8", BinOp("**", BinOp("**", Name("mu"), Num(8)), Num(8))),  # 64 in all: the cap itself
])
def test_constant_exponents_fold(text: str, folded: object) -> None:
    assert expr.parse(text, "define.x") == folded


@pytest.mark.parametrize(("text", "message"), [
    ("mu ** (64 ** 64)", "exponent 64 ** 64 = 3.94e+115 is too large (at most 64 in absolute value)"),
    ("mu ** (8 * 9)", "exponent 8 * 9 = 72 is too large (at most 64 in absolute value)"),
    ("mu ** 9 ** 9 ** 9", "exponent 9 ** 9 = 387420489 is too large"),  # 9 ** 387420489 is never computed
    ("pow(mu, 65)", "exponent 65 is too large (at most 64 in absolute value)"),
    ("(mu ** 10) ** 10", "chained powers raise to the power 100 in all ((mu ** 10) ** 10); at most 64"),
    ("pow(-mu ** 9, 8)", "chained powers raise to the power 72 in all ((-(mu ** 9)) ** 8); at most 64"),
    ("square(mu ** 40) ** 2", "chained powers raise to the power 160 in all"),
    ("mu ** (1 / 0)", "division by zero in a constant"),
    ("mu ** (0 ** -1)", "division by zero in a constant"),
    ("(-8) ** (1 / 3)", "-8 ** 0.3333 is not a real number"),
    ("1e300 ** 2", "constant too large"),
    ("10 ** 400", "exponent 400 is too large"),
    ("mu\x00", "control character U+0000"),
    ("mu + \ud800", "the expression is not valid Unicode text: lone surrogate U+D800 at position 5"),
])
def test_exponent_cap_covers_folded_and_chained_powers(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        expr.parse(text, "define.x")
    [problem] = info.value.problems
    assert problem.path == "define.x" and message in problem.message, problem.message
