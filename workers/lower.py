"""Validated Model -> numpyro model function. The last stage of the model compiler.

Expression trees become nested closures over jax.numpy; no text is evaluated.
The model takes the data as its only argument, so data enter jitted functions as
arguments and new values of the same shapes reuse the compiled code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import expit, gammaln, logit, logsumexp
from jax.scipy.stats import norm
from numpyro import handlers
from numpyro.infer.reparam import LocScaleReparam

from service.language.expr import BinOp, Call, Compare, Index, Name, Neg, Node, Num, Slice
from service.language.ir import DistCall, Model, Param

Env = dict[str, Any]
Compiled = Callable[[Env], Any]

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "exp": jnp.exp,
    "log": jnp.log,
    "log1p": jnp.log1p,
    "expm1": jnp.expm1,
    "sqrt": jnp.sqrt,
    "abs": jnp.abs,
    "square": jnp.square,
    "logit": logit,
    "inv_logit": expit,
    "sigmoid": expit,
    "softplus": jax.nn.softplus,
    "log_sigmoid": jax.nn.log_sigmoid,
    "tanh": jnp.tanh,
    "sin": jnp.sin,
    "cos": jnp.cos,
    "Phi": norm.cdf,
    "lgamma": gammaln,
    "floor": jnp.floor,
    "minimum": jnp.minimum,
    "maximum": jnp.maximum,
    "pow": jnp.power,
    "where": jnp.where,
    "sum": jnp.sum,
    "mean": jnp.mean,
    "logsumexp": logsumexp,
    "dot": jnp.matmul,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "log_softmax": lambda x: jax.nn.log_softmax(x, axis=-1),
    "cumsum": lambda x: jnp.cumsum(x, axis=-1),
    "transpose": jnp.transpose,
}

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": jnp.add,
    "-": jnp.subtract,
    "*": jnp.multiply,
    "/": jnp.divide,
    "**": jnp.power,
    "@": jnp.matmul,
    "<": jnp.less,
    "<=": jnp.less_equal,
    ">": jnp.greater,
    ">=": jnp.greater_equal,
    "==": jnp.equal,
    "!=": jnp.not_equal,
}


def compile_expr(node: Node) -> Compiled:
    """Turn an expression tree into a function of the environment (names -> arrays)."""
    match node:
        case Num(value=v):
            value = float(v) if isinstance(v, float) else v
            return lambda env: value
        case Name(id=name):
            return lambda env: env[name]
        case Neg(operand=o):
            inner = compile_expr(o)
            return lambda env: jnp.negative(inner(env))
        case BinOp(op=op, left=a, right=b) | Compare(op=op, left=a, right=b):
            fn, left, right = _BINARY[op], compile_expr(a), compile_expr(b)
            return lambda env: fn(left(env), right(env))
        case Call(func=func, args=args):
            fn, compiled = FUNCTIONS[func], [compile_expr(a) for a in args]
            return lambda env: fn(*(c(env) for c in compiled))
        case Index(value=value, items=items):
            base = compile_expr(value)
            parts = [item if isinstance(item, Slice) else compile_expr(item) for item in items]

            def index(env: Env) -> Any:
                key = tuple(
                    slice(p.start, p.stop, p.step) if isinstance(p, Slice) else p(env) for p in parts
                )
                return jnp.asarray(base(env))[key]

            return index
    raise TypeError(f"cannot lower {node!r}")


def compile_dist(call: DistCall) -> Callable[[Env], dist.Distribution]:
    cls = getattr(dist, call.name)
    args = [(k, compile_expr(v)) for k, v in call.args]
    static = dict(call.static)
    return lambda env: cls(**static, **{k: f(env) for k, f in args})


def lower(model: Model) -> Callable[[dict[str, Any]], None]:
    """The numpyro model `fn(data)` for a validated Model."""
    steps: list[Callable[[Env], None]] = []
    for node in model.nodes:
        if isinstance(node, Param):
            steps.append(_sample_step(node.name, compile_dist(node.dist), node.batch_shape, observed=False))
        else:
            steps.append(_define_step(node.name, compile_expr(node.expr)))
    for obs in model.observes:
        steps.append(_sample_step(obs.name, compile_dist(obs.dist), obs.batch_shape, observed=True))

    def numpyro_model(data: dict[str, Any]) -> None:
        env: Env = dict(data)
        for step in steps:
            step(env)

    noncentered = {p.name: LocScaleReparam(centered=0) for p in model.params if p.noncentered}
    if noncentered:
        return handlers.reparam(numpyro_model, config=noncentered)  # type: ignore[return-value]
    return numpyro_model


def _sample_step(name: str, make: Callable[[Env], dist.Distribution], batch: tuple[int, ...], *,
                 observed: bool) -> Callable[[Env], None]:
    def step(env: Env) -> None:
        d = make(env)
        if d.batch_shape != batch:
            d = d.expand(batch)
        if observed:
            numpyro.sample(name, d, obs=env[name])
        else:
            env[name] = numpyro.sample(name, d)

    return step


def _define_step(name: str, fn: Compiled) -> Callable[[Env], None]:
    def step(env: Env) -> None:
        env[name] = numpyro.deterministic(name, jnp.asarray(fn(env), dtype=jnp.result_type(float)))

    return step
