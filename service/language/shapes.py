"""Static shape checking of expressions, with index range checks against the data.

JAX clamps out-of-range gather indices silently, so every index into a variable
is checked here, against the actual integer data, before anything is queued.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.exceptions import Problem
from service.language.catalog import (
    DISTRIBUTIONS,
    FUNCTIONS,
    MAX_ODE_STEPS,
    MAX_RECURRENCE_STEPS,
    ODE_NAMES,
    ODE_OPTIONS,
    RECURRENCE_NAMES,
    VARIADIC,
    Fn,
)
from service.language.data import MAX_DATA_DIMS
from service.language.expr import BinOp, Call, Compare, Index, Name, Neg, Node, Num, Slice, names, to_text, walk
from service.language.ir import Shape

MAX_DIMS = MAX_DATA_DIMS
"""Most dimensions of any value (declared shapes and every expression's result), as for data: numpy and JAX stop
at 32, and indexing adds dimensions, so without a bound `x[i][j][k]...` would reach that limit as a crash."""


@dataclass(frozen=True)
class Symbol:
    """What the checker knows about a name: its shape and, for data, its values."""

    kind: str  # data | param | define
    shape: Shape | None
    """None for a node whose own problem was already reported: its dependents stay quiet."""
    values: np.ndarray | None = None


_INTEGRAL_FUNCTIONS = frozenset({"abs", "square", "minimum", "maximum", "sum", "cumsum", "transpose", "dot", "max",
                                 "min", "prod", "diag", "outer", "concatenate", "stack"})
"""Functions whose result keeps an integer argument's dtype."""


class ShapeError(Exception):
    """Raised inside the checker; turned into one Problem at the expression's path."""


class _Reported(Exception):  # noqa: N818 - control flow, not an error
    """The expression uses a name whose own problem was reported already."""


def broadcast(*shapes: Shape) -> Shape:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError("shape mismatch: cannot broadcast " + " with ".join(_fmt(s) for s in shapes)) from None


def matmul(a: Shape, b: Shape) -> Shape:
    if not a or not b:
        raise ShapeError("@ and dot need arrays, not scalars")
    if len(a) > 2 or len(b) > 2:
        raise ShapeError("@ and dot take vectors and matrices only")
    inner_a = a[-1]
    inner_b = b[0] if len(b) == 1 else b[-2]
    if inner_a != inner_b:
        raise ShapeError(f"shape mismatch in matrix product: {_fmt(a)} @ {_fmt(b)}")
    return a[:-1] + b[1:] if len(b) == 2 else a[:-1]


def _fmt(shape: Shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


class ShapeChecker:
    """Infers the shape of expressions over a table of known symbols."""

    def __init__(self, symbols: dict[str, Symbol], *, on_shape: Callable[[Node, Shape], None] | None = None) -> None:
        self.symbols = symbols
        self.on_shape = on_shape
        """Called with every sub-expression and its shape, innermost first (the cost model counts them)."""

    def check(self, node: Node, path: str, problems: list[Problem]) -> Shape | None:
        """Shape of `node`, or None after recording the problem at `path`."""
        try:
            return self.shape(node)
        except ShapeError as exc:
            problems.append(Problem(path, str(exc)))
            return None
        except _Reported:
            return None

    def shape(self, node: Node) -> Shape:
        result = self._shape(node)
        if len(result) > MAX_DIMS:
            raise ShapeError(f"{_text(node)} would have {len(result)} dimensions; at most {MAX_DIMS} are allowed")
        if self.on_shape is not None:
            self.on_shape(node, result)
        return result

    def _shape(self, node: Node) -> Shape:
        match node:
            case Num():
                return ()
            case Name(id=name):
                if name not in self.symbols:
                    raise ShapeError(f"unknown name {name!r}")
                shape = self.symbols[name].shape
                if shape is None:
                    raise _Reported(name)
                return shape
            case Neg(operand=o):
                return self.shape(o)
            case BinOp(op="@", left=a, right=b):
                return matmul(self.shape(a), self.shape(b))
            case BinOp(op="**", left=a, right=b):
                shape = broadcast(self.shape(a), self.shape(b))
                self._check_power(a, b)
                return shape
            case BinOp(left=a, right=b) | Compare(left=a, right=b):
                return broadcast(self.shape(a), self.shape(b))
            case Call(func=func, args=args, kwargs=kwargs):
                return self._call(func, args, kwargs)
            case Index(value=value, items=items):
                return self._index(value, items)
        raise ShapeError(f"unsupported expression {node!r}")

    def _call(self, func: str, args: tuple[Node, ...], kwargs: tuple[tuple[str, Node], ...]) -> Shape:
        if func in DISTRIBUTIONS:
            raise ShapeError(f"distribution {func} used inside an expression")
        info = FUNCTIONS.get(func)
        if info is None:
            raise ShapeError(f"unknown function {func!r}; known: {', '.join(sorted(FUNCTIONS))}")
        for key, _ in kwargs:
            if key not in info.keywords:
                accepted = f"; it takes {', '.join(sorted(info.keywords))}=" if info.keywords else ""
                raise ShapeError(f"{func}() takes no keyword argument {key!r}{accepted}")
        if info.rule is Fn.ODE:
            return self._ode(args, kwargs)
        options = {key: static_int(value, f"{func}({key}=...)") for key, value in kwargs}
        if info.arity == VARIADIC:
            if not args:
                raise ShapeError(f"{func}() takes one or more arguments")
        elif len(args) != info.arity:
            raise ShapeError(f"{func}() takes {info.arity} argument(s), got {len(args)}")
        if info.rule is Fn.EYE:
            return self._eye(args[0])
        if info.rule is Fn.RECURRENCE:
            return self._recurrence(*args)
        shapes = [self.shape(a) for a in args]
        if func == "pow":
            self._check_power(*args)
        axis = options.get("axis")
        match info.rule:
            case Fn.ELEMENTWISE:
                return broadcast(*shapes)
            case Fn.REDUCE:
                if axis is None:
                    return ()
                a = _axis(func, axis, len(shapes[0]))
                return shapes[0][:a] + shapes[0][a + 1:]
            case Fn.MATMUL:
                return matmul(*shapes)
            case Fn.LAST_AXIS:
                if not shapes[0]:
                    raise ShapeError(f"{func}() needs an array, got a scalar")
                return shapes[0]
            case Fn.TRANSPOSE:
                return shapes[0][::-1]
            case Fn.SQUARE:
                matrix = _square(func, shapes[0])
                if len(shapes) == 2 and shapes[1] not in ((), matrix[-1:]):
                    raise ShapeError(f"{func}(): the diagonal must be a scalar or of shape ({matrix[-1]},), got "
                                     f"{_fmt(shapes[1])}")
                return matrix
            case Fn.SOLVE:
                matrix = _square(func, shapes[0])
                rhs = shapes[1]
                if len(matrix) != 2 or len(rhs) not in (1, 2) or rhs[0] != matrix[0]:
                    raise ShapeError(f"{func}() solves an (n, n) system for a right-hand side (n,) or (n, k); got "
                                     f"{_fmt(matrix)} and {_fmt(rhs)}")
                return rhs
            case Fn.DIAG:
                if len(shapes[0]) == 1:
                    return shapes[0] * 2
                if len(shapes[0]) == 2:
                    return (min(shapes[0]),)
                raise ShapeError(f"diag() takes a vector or a matrix, got {_fmt(shapes[0])}")
            case Fn.OUTER:
                if any(len(s) != 1 for s in shapes):
                    raise ShapeError(f"outer() takes two vectors, got {_fmt(shapes[0])} and {_fmt(shapes[1])}")
                return (shapes[0][0], shapes[1][0])
            case Fn.KERNEL:
                if len(shapes[0]) not in (1, 2) or shapes[1] != () or shapes[2] != ():
                    raise ShapeError(f"{func}(x, alpha, rho) takes points x (n,) or (n, d) and scalars alpha, rho; "
                                     f"got {', '.join(_fmt(s) for s in shapes)}")
                return (shapes[0][0], shapes[0][0])
            case Fn.DETERMINANT:
                return _square(func, shapes[0])[:-2]
            case Fn.CONCATENATE:
                return _concatenate(shapes, axis or 0)
            case Fn.STACK:
                if any(s != shapes[0] for s in shapes):
                    raise ShapeError(f"stack() takes arrays of one shape, got {', '.join(_fmt(s) for s in shapes)}")
                a = _axis(func, axis or 0, len(shapes[0]) + 1)
                return (*shapes[0][:a], len(shapes), *shapes[0][a:])
        raise ShapeError(f"unknown function {func!r}")

    def _recurrence(self, init: Node, step: Node, length: Node) -> Shape:
        n = self.static_length(length)
        carry = self.shape(init)
        shadowed = [name for name in RECURRENCE_NAMES if self.symbols.get(name, Symbol("", ())).kind
                    in ("data", "param", "define")]
        if shadowed:
            raise ShapeError(f"recurrence(): inside its step {' and '.join(shadowed)} name the previous value and "
                             "the step index; rename the model's variable(s) of that name")
        if "recurrence" in {c.func for c in _calls(step)}:
            raise ShapeError("recurrence(): a step cannot contain another recurrence")
        steps = np.arange(1, max(n, 1))
        outer = self.on_shape
        # the scan computes (and its gradient keeps) every value of the step once per step
        inner = ShapeChecker({**self.symbols, "prev": Symbol("previous value", carry),
                              "t": Symbol("step index", (), steps)},
                             on_shape=None if outer is None else lambda node, shape: outer(node, (n - 1, *shape)))
        got = inner.shape(step)
        if got != carry:
            raise ShapeError(f"recurrence(): the step has shape {_fmt(got)}, the initial value {_fmt(carry)}; they "
                             "must be equal")
        return (n, *carry)

    def _ode(self, args: tuple[Node, ...], kwargs: tuple[tuple[str, Node], ...]) -> Shape:
        if len(args) != 3:
            raise ShapeError(f"ode(rhs, y0, times) takes 3 arguments, got {len(args)}")
        rhs, y0, times = args
        options = ode_options(kwargs)
        carry = self.shape(y0)
        times_shape = self.shape(times)
        values = self._known(times)
        if values is None or len(times_shape) != 1 or not times_shape[0]:
            raise ShapeError(f"ode(): the output times must be a vector of data, got {_text(times)}")
        if np.any(np.diff(values) <= 0) or values[0] <= options["t0"]:
            raise ShapeError(f"ode(): the output times must increase strictly and come after t0 = {options['t0']:g}")
        shadowed = [name for name in ODE_NAMES if self.symbols.get(name, Symbol("", ())).kind
                    in ("data", "param", "define")]
        if shadowed:
            raise ShapeError(f"ode(): inside its right-hand side {' and '.join(shadowed)} name the state and the "
                             "time; rename the model's variable(s) of that name")
        if {"ode", "recurrence"} & {c.func for c in _calls(rhs)}:
            raise ShapeError("ode(): the right-hand side cannot contain an ode or a recurrence")
        n = times_shape[0]
        outer = self.on_shape
        # the solver evaluates the right-hand side several times per step; counted once per output time
        inner = ShapeChecker({**self.symbols, "state": Symbol("ODE state", carry), "time": Symbol("ODE time", ())},
                             on_shape=None if outer is None else lambda node, shape: outer(node, (n, *shape)))
        got = inner.shape(rhs)
        if got != carry:
            raise ShapeError(f"ode(): the right-hand side has shape {_fmt(got)}, the initial state {_fmt(carry)}; "
                             "they must be equal")
        return (n, *carry)

    def static_length(self, node: Node) -> int:
        """A recurrence's length: an integer literal or integer scalar data, 1 .. MAX_RECURRENCE_STEPS."""
        value = self._known(node)
        if value is None or value.ndim != 0 or not np.issubdtype(value.dtype, np.integer):
            raise ShapeError(f"recurrence(): the length must be an integer literal or integer scalar data, got "
                             f"{_text(node)}")
        n = int(value)
        if not 1 <= n <= MAX_RECURRENCE_STEPS:
            raise ShapeError(f"recurrence(): the length must be between 1 and {MAX_RECURRENCE_STEPS}, got {n}")
        return n

    def _eye(self, size: Node) -> Shape:
        n = static_int(size, "eye(n)")
        if n < 1:
            raise ShapeError(f"eye(n) needs n >= 1, got {n}")
        return (n, n)

    def _check_power(self, base: Node, exponent: Node) -> None:
        """JAX raises (a traceback in the worker) for an integer to a negative integer power, and wraps negative
        data exponents to nonsense; so an integer base needs an exponent known to be non-negative."""
        if not (self._integral(base) and self._integral(exponent)):
            return
        known = self._known(exponent)
        if known is not None and (known.size == 0 or known.min() >= 0):
            return
        why = "is negative" if known is not None else "may be negative"
        raise ShapeError(f"{_text(base)} is an integer and the exponent {_text(exponent)} {why}: JAX refuses integers "
                         f"to negative powers; make the base a float, e.g. (1.0 * {_text(base)}) ** ...")

    def _integral(self, node: Node) -> bool:
        """Whether the value of `node` has an integer (or boolean) dtype: integer literals and data, and what
        arithmetic, indexing and the dtype-preserving functions make of them."""
        match node:
            case Num(value=v):
                return isinstance(v, int)
            case Name(id=name):
                sym = self.symbols.get(name)
                return sym is not None and sym.values is not None and np.issubdtype(sym.values.dtype, np.integer)
            case Neg(operand=o) | Index(value=o):
                return self._integral(o)
            case BinOp(op=op, left=a, right=b) if op != "/":
                return self._integral(a) and self._integral(b)
            case Compare():
                return True
            case Call(func="where", args=args) if len(args) == 3:
                return self._integral(args[1]) and self._integral(args[2])
            case Call(func=func, args=args) if func in _INTEGRAL_FUNCTIONS:
                return all(self._integral(a) for a in args)
        return False

    def _known(self, node: Node) -> np.ndarray | None:
        if isinstance(node, Num):
            return np.asarray(node.value)
        if isinstance(node, Name):
            sym = self.symbols.get(node.id)
            if sym is not None and sym.kind == "data":
                return sym.values
        return None

    def _index(self, value: Node, items: tuple[Node | Slice, ...]) -> Shape:
        base = self.shape(value)
        if len(items) > len(base):
            raise ShapeError(f"too many indices ({len(items)}) for an array of shape {_fmt(base)}")
        point: dict[int, Shape] = {}  # axis -> shape of the integer index on it
        for axis, item in enumerate(items):
            if isinstance(item, Slice):
                if item.step == 0:
                    raise ShapeError("slice step cannot be zero")
                continue
            size = base[axis]
            values = self._index_values(item)
            shape = self.shape(item) if not isinstance(item, Num) else ()
            low = -size if isinstance(item, Num) else 0  # a literal may count from the end, data may not
            if values.size and values.min() < low:
                raise ShapeError(f"index {_describe(item)} out of range: min {int(values.min())} on axis {axis}"
                                 f" of size {size} (indices are 0-based)")
            if values.size and values.max() >= size:
                raise ShapeError(
                    f"index {_describe(item)} out of range: max {int(values.max())} >= size {size} of axis {axis}"
                )
            point[axis] = shape
        arrays = any(point.values())
        axes = sorted(point)
        if arrays and axes != list(range(axes[0], axes[0] + len(axes))):
            raise ShapeError("integer and array indices must be on adjacent axes")
        # numpy's rule: with an array index, all integer indices broadcast together in place of their axes;
        # without one, an integer index just removes its axis
        result: list[int] = []
        for axis, item in enumerate(items):
            if isinstance(item, Slice):
                result.append(len(range(*slice(item.start, item.stop, item.step).indices(base[axis]))))
            elif arrays and axis == axes[0]:
                result.extend(broadcast(*point.values()))
        return tuple(result) + base[len(items):]

    def _index_values(self, item: Node) -> np.ndarray:
        if isinstance(item, Num):
            if not isinstance(item.value, int):
                raise ShapeError(f"index {item.value!r} is not an integer")
            return np.asarray(item.value)
        if isinstance(item, BinOp) and item.op in ("+", "-") and _mentions_step(item):
            # t - 1, t + k: every value the step index takes, shifted (for the bounds check)
            left, right = self._index_values(item.left), self._index_values(item.right)
            return np.asarray(left + right if item.op == "+" else left - right)
        if isinstance(item, Name):
            sym = self.symbols.get(item.id)
            if sym is None:
                raise ShapeError(f"unknown name {item.id!r}")
            if sym.kind == "step index" and sym.values is not None:
                return sym.values
            if sym.kind != "data" or sym.values is None:
                raise ShapeError(f"index {item.id!r} is a {sym.kind}; indices must be integer data")
            if not np.issubdtype(sym.values.dtype, np.integer):
                raise ShapeError(f"index {item.id!r} is not integer data (dtype {sym.values.dtype})")
            return sym.values
        raise ShapeError("an index must be integer data, an integer literal, a slice, or in a recurrence's step "
                         "t plus or minus an integer literal")


def _mentions_step(node: Node) -> bool:
    return "t" in names(node)


def _calls(node: Node) -> list[Call]:
    return [n for n in walk(node) if isinstance(n, Call)]


def ode_options(kwargs: tuple[tuple[str, Node], ...]) -> dict[str, float]:
    """ode()'s keyword arguments over their defaults, each a number literal in range; ShapeError otherwise."""
    options: dict[str, float] = dict(ODE_OPTIONS)
    for key, node in kwargs:
        if key not in ODE_OPTIONS:
            raise ShapeError(f"ode() takes no keyword argument {key!r}; it takes {', '.join(ODE_OPTIONS)}")
        match node:
            case Num(value=v) if not isinstance(v, bool):
                value: float = v
            case Neg(operand=Num(value=v)) if not isinstance(v, bool):
                value = -v
            case _:
                raise ShapeError(f"ode({key}=...) must be a number literal, got {_text(node)}")
        if key in ("rtol", "atol") and not 0 < value < 1:
            raise ShapeError(f"ode(): {key} must be between 0 and 1, got {value:g}")
        if key == "max_steps" and not (float(value).is_integer() and 1 <= value <= MAX_ODE_STEPS):
            raise ShapeError(f"ode(): max_steps must be an integer between 1 and {MAX_ODE_STEPS}, got {value:g}")
        if key == "stiff" and value not in (0, 1):
            raise ShapeError(f"ode(): stiff is 0 or 1, got {value:g}")
        options[key] = value
    return options


def static_int(node: Node, what: str) -> int:
    """An integer literal (`0`, `-1`), the only value an axis or a size may have: it fixes shapes before any
    data or param exists."""
    match node:
        case Num(value=int() as v) if not isinstance(v, bool):
            return v
        case Neg(operand=Num(value=int() as v)) if not isinstance(v, bool):
            return -v
    raise ShapeError(f"{what} must be an integer literal, got {_text(node)}")


def _axis(func: str, axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{func}(): axis {axis} is out of range for {ndim} dimension(s)")
    return axis % ndim


def _square(func: str, shape: Shape) -> Shape:
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ShapeError(f"{func}() needs a square matrix (..., n, n), got {_fmt(shape)}")
    return shape


def _concatenate(shapes: list[Shape], axis: int) -> Shape:
    ndim = len(shapes[0])
    if ndim == 0 or any(len(s) != ndim for s in shapes):
        raise ShapeError(f"concatenate() takes arrays with the same number of dimensions (at least 1), got "
                         f"{', '.join(_fmt(s) for s in shapes)}")
    a = _axis("concatenate", axis, ndim)
    if any(s[:a] + s[a + 1:] != shapes[0][:a] + shapes[0][a + 1:] for s in shapes):
        raise ShapeError(f"concatenate(): shapes {', '.join(_fmt(s) for s in shapes)} differ off axis {axis}")
    return (*shapes[0][:a], sum(s[a] for s in shapes), *shapes[0][a + 1:])


def _text(node: Node) -> str:
    text = to_text(node)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(item: Node) -> str:
    if isinstance(item, Name):
        return repr(item.id)
    return repr(item.value) if isinstance(item, Num) else _text(item)
