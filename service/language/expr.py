"""Expressions of the model language: parsed into a small whitelisted tree, never evaluated.

Python's own parser reads the text (it only builds a syntax tree; nothing runs),
then every node is translated into the node types below or refused. Anything not
listed here (attributes, lambdas, comprehensions, strings, keywords other than a
distribution's parameter names, ...) is an error, so no user text can reach
Python's evaluator. Later stages (shape checking, lowering to JAX) only ever see
these node types.
"""

from __future__ import annotations

import ast
import math
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from service.exceptions import Problem, SpecError
from service.language.text import encoding_problem

MAX_EXPR_CHARS = 4000
"""Longest expression accepted; a model term longer than this is a mistake or an attack."""

MAX_DEPTH = 48
"""Deepest nesting of an expression tree (Python's parser itself stops near 200 parentheses)."""

MAX_EXPONENT = 64.0
"""Largest constant exponent in `a ** k` or `pow(a, k)`; larger ones overflow float64 for any interesting base.

A constant exponent is folded first (`mu ** (64 ** 64)` is refused, `mu ** 2 ** -1` becomes `mu ** 0.5`), and
chained powers multiply (`(mu ** 10) ** 10` raises mu to 100: refused)."""

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Num:
    value: float | int


@dataclass(frozen=True)
class Name:
    id: str


@dataclass(frozen=True)
class Neg:
    operand: Node


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / ** @
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare:
    op: str  # one of < <= > >= == !=
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Node, ...]
    kwargs: tuple[tuple[str, Node], ...] = ()


@dataclass(frozen=True)
class Slice:
    start: int | None
    stop: int | None
    step: int | None


@dataclass(frozen=True)
class Index:
    value: Node
    items: tuple[Node | Slice, ...]


Node = Num | Name | Neg | BinOp | Compare | Call | Index

_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
    ast.MatMult: "@",
}
_CMPOPS: dict[type[ast.cmpop], str] = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
}


class _Refused(Exception):  # noqa: N818 - internal signal, always turned into a SpecError
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def parse(text: object, path: str) -> Node:
    """Parse one expression; raise SpecError naming `path` if it is not in the language."""
    if isinstance(text, bool):
        raise SpecError([Problem(path, "expected a number or an expression, got a boolean")])
    if isinstance(text, int | float):
        return _number(text, path)
    if not isinstance(text, str):
        raise SpecError([Problem(path, f"expected an expression string, got {type(text).__name__}")])
    if len(text) > MAX_EXPR_CHARS:
        raise SpecError([Problem(path, f"expression longer than {MAX_EXPR_CHARS} characters")])
    if not text.strip():
        raise SpecError([Problem(path, "empty expression")])
    unencodable = encoding_problem(text)
    if unencodable is not None:
        raise SpecError([Problem(path, f"the expression {unencodable}")])
    control = next((c for c in text if unicodedata.category(c) == "Cc" and c not in "\t\n\r"), None)
    if control is not None:
        raise SpecError([Problem(path, f"control character U+{ord(control):04X} in the expression")])
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        detail = exc.msg if exc.msg else "syntax error"
        raise SpecError([Problem(path, f"cannot parse {text.strip()[:80]!r}: {detail}")]) from None
    except (RecursionError, MemoryError, ValueError):
        raise SpecError([Problem(path, "expression nested too deeply")]) from None
    try:
        return _convert(tree.body, 0)
    except _Refused as exc:
        raise SpecError([Problem(path, exc.message)]) from None
    except RecursionError:
        raise SpecError([Problem(path, "expression nested too deeply")]) from None


def _number(value: float | int, path: str) -> Num:
    try:
        return _literal(value)
    except _Refused as exc:
        raise SpecError([Problem(path, exc.message)]) from None


def _literal(value: object) -> Num:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(f"only numbers are allowed as literals, got {type(value).__name__} {value!r:.40}")
    if isinstance(value, int) and abs(value) > 2**53:
        raise _Refused("integer literal too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Refused("literal is not a finite number")
    if isinstance(value, float) and abs(value) > 1e300:
        raise _Refused("literal too large")
    return Num(value)


def _convert(node: ast.expr, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise _Refused(f"expression nested deeper than {MAX_DEPTH} levels")
    d = depth + 1
    match node:
        case ast.Constant(value=value):
            return _literal(value)
        case ast.Name(id=name):
            if not NAME_RE.match(name):
                raise _Refused(f"name {name!r} is not allowed (letters, digits, underscores; starts with a letter)")
            return Name(name)
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            inner = _convert(operand, d)
            if isinstance(inner, Num):
                return Num(-inner.value)
            return Neg(inner)
        case ast.UnaryOp(op=ast.UAdd(), operand=operand):
            return _convert(operand, d)
        case ast.BinOp(op=op, left=left, right=right) if type(op) in _BINOPS:
            symbol = _BINOPS[type(op)]
            if symbol == "**":
                return _power(_convert(left, d), _convert(right, d), lambda b, e: BinOp("**", b, e),
                              ast.unparse(right))
            return BinOp(symbol, _convert(left, d), _convert(right, d))
        case ast.Compare(left=left, ops=[op], comparators=[right]) if type(op) in _CMPOPS:
            return Compare(_CMPOPS[type(op)], _convert(left, d), _convert(right, d))
        case ast.Compare():
            raise _Refused("only single comparisons such as `a < b` are allowed")
        case ast.Call(func=ast.Name(id=func), args=args, keywords=keywords):
            if not NAME_RE.match(func):
                raise _Refused(f"function name {func!r} is not allowed")
            if any(isinstance(a, ast.Starred) for a in args):
                raise _Refused("starred arguments are not allowed")
            kwargs: list[tuple[str, Node]] = []
            for kw in keywords:
                if kw.arg is None:
                    raise _Refused("** arguments are not allowed")
                kwargs.append((kw.arg, _convert(kw.value, d)))
            converted = tuple(_convert(a, d) for a in args)
            if func == "pow" and len(converted) == 2 and not kwargs:
                return _power(converted[0], converted[1], lambda b, e: Call("pow", (b, e)), ast.unparse(args[1]))
            return Call(func, converted, tuple(kwargs))
        case ast.Call():
            raise _Refused("only named functions can be called (no attribute or computed calls)")
        case ast.Subscript(value=value, slice=index):
            items = index.elts if isinstance(index, ast.Tuple) else [index]
            return Index(_convert(value, d), tuple(_index_item(i, d) for i in items))
        case ast.Attribute(attr=attr):
            raise _Refused(f"attribute access (.{attr}) is not allowed")
        case ast.Lambda():
            raise _Refused("lambda is not allowed")
        case _:
            raise _Refused(f"{type(node).__name__} is not allowed in an expression")


def _power(base: Node, exponent: Node, make: Callable[[Node, Node], Node], written: str) -> Node:
    """`base ** exponent` (or pow) with a constant exponent folded and capped, chained powers included; a power of
    two constants is folded to its value (so `2 ** -1` is 0.5 as in Python, not an integer power JAX refuses).
    `written` is the exponent as the user wrote it, for the message."""
    value = _constant(exponent)
    if value is None:
        return make(base, exponent)
    if abs(value) > MAX_EXPONENT:
        shown = "" if _is_number(written) else f" = {_number_text(value)}"
        raise _Refused(f"exponent {written[:60]}{shown} is too large (at most {MAX_EXPONENT:g} in absolute value)")
    degree = abs(value) * _degree(base)
    if degree > MAX_EXPONENT:
        raise _Refused(f"chained powers raise to the power {degree:g} in all (({to_text(base)[:60]}) ** "
                       f"{written[:20]}); at most {MAX_EXPONENT:g}")
    folded = _constant(base)
    if folded is not None:
        return _literal(_evaluate("**", folded, value))
    return make(base, _literal(value))


def _constant(node: Node) -> float | int | None:
    """The value of an expression of literals only (numbers, unary minus, + - * / **), else None."""
    match node:
        case Num(value=v):
            return v
        case Neg(operand=o):
            inner = _constant(o)
            return None if inner is None else -inner
        case BinOp(op=op, left=a, right=b) if op in _FOLDED:
            left, right = _constant(a), _constant(b)
            if left is None or right is None:
                return None
            return _evaluate(op, left, right)
    return None


_FOLDED = frozenset({"+", "-", "*", "/", "**"})


def _evaluate(op: str, left: float | int, right: float | int) -> float | int:
    """One constant operation in Python's arithmetic; an integer beyond 2**53 becomes a float; refused if the
    result is not a finite real number."""
    try:
        if op == "**" and abs(right) > MAX_EXPONENT:  # never compute a huge power, even of an integer
            raise _Refused(f"exponent {_number_text(right)} is too large (at most {MAX_EXPONENT:g} in absolute value)")
        match op:
            case "+":
                value = left + right
            case "-":
                value = left - right
            case "*":
                value = left * right
            case "/":
                value = left / right
            case _:
                value = left**right
        if isinstance(value, int) and abs(value) > 2**53:
            value = float(value)
    except ZeroDivisionError:
        raise _Refused("division by zero in a constant") from None
    except OverflowError:
        raise _Refused("constant too large") from None
    if isinstance(value, complex):
        raise _Refused(f"{_number_text(left)} ** {_number_text(right)} is not a real number")
    if not math.isfinite(value) or abs(value) > 1e300:
        raise _Refused("constant too large")
    return value


def _degree(node: Node) -> float:
    """How many times a power multiplies its base: 10 for `mu ** 10`, 100 for `(mu ** 10) ** 10`, else 1."""
    match node:
        case BinOp(op="**", left=a, right=Num(value=k)) | Call(func="pow", args=(a, Num(value=k))):
            return abs(k) * _degree(a)
        case Call(func="square", args=(a,)):
            return 2 * _degree(a)
        case Neg(operand=o):
            return _degree(o)
    return 1.0


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number_text(value: float | int) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _index_item(node: ast.expr, depth: int) -> Node | Slice:
    if isinstance(node, ast.Slice):
        return Slice(*(_slice_bound(b) for b in (node.lower, node.upper, node.step)))
    return _convert(node, depth)


def _slice_bound(node: ast.expr | None) -> int | None:
    if node is None:
        return None
    value = _convert(node, 0)
    if not isinstance(value, Num) or not isinstance(value.value, int):
        raise _Refused("slice bounds must be integer literals")
    return value.value


def children(node: Node) -> list[Node]:
    """The direct sub-expressions of `node` (an index's slices hold integers, not expressions)."""
    match node:
        case Call(args=args, kwargs=kwargs):
            return [*args, *(v for _, v in kwargs)]
        case Neg(operand=o):
            return [o]
        case BinOp(left=a, right=b) | Compare(left=a, right=b):
            return [a, b]
        case Index(value=v, items=items):
            return [v, *(i for i in items if not isinstance(i, Slice))]
    return []


def walk(node: Node) -> Iterator[Node]:
    """`node` and every sub-expression in it, depth first."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack += children(n)


def recurrence_lengths(node: Node) -> set[str]:
    """Names given as a recurrence's length anywhere in `node`."""
    out: set[str] = set()
    for n in walk(node):
        match n:
            case Call(func="recurrence", args=(_, _, Name(id=length))):
                out.add(length)
    return out


def names(node: Node) -> set[str]:
    """Every name an expression refers to (functions excluded)."""
    out: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        match n:
            case Name(id=i):
                out.add(i)
            case Call(func="recurrence", args=(init, step, length)):  # its step binds prev and t
                stack += [init, length]
                out |= names(step) - {"prev", "t"}
            case Call(func="ode", args=(rhs, *rest), kwargs=kwargs):  # its right-hand side binds state and time
                stack += [*rest, *(v for _, v in kwargs)]
                out |= names(rhs) - {"state", "time"}
            case _:
                stack += children(n)
    return out


def to_text(node: Node | Slice) -> str:
    """Render a tree back to the language's text (for messages and the compiled graph spec)."""
    match node:
        case Num(value=v):
            return repr(v)
        case Name(id=i):
            return i
        case Neg(operand=o):
            return f"-{_paren(o)}"
        case BinOp(op=op, left=a, right=b):
            return f"{_paren(a)} {op} {_paren(b)}"
        case Compare(op=op, left=a, right=b):
            return f"{_paren(a)} {op} {_paren(b)}"
        case Call(func=f, args=args, kwargs=kwargs):
            parts = [to_text(a) for a in args] + [f"{k}={to_text(v)}" for k, v in kwargs]
            return f"{f}({', '.join(parts)})"
        case Index(value=v, items=items):
            return f"{_paren(v)}[{', '.join(to_text(i) for i in items)}]"
        case Slice(start=s, stop=e, step=st):
            text = f"{'' if s is None else s}:{'' if e is None else e}"
            return text if st is None else f"{text}:{st}"
    raise TypeError(node)


def _paren(node: Node) -> str:
    text = to_text(node)
    return f"({text})" if isinstance(node, BinOp | Compare) or (isinstance(node, Num) and node.value < 0) else text
