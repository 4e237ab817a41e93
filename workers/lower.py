"""Validated Model -> numpyro model function. The last stage of the model compiler.

Expression trees become nested closures over jax.numpy; no text is evaluated.
The model takes the data as its only argument, so data enter jitted functions as
arguments and new values of the same shapes reuse the compiled code.

A fitted prior (Model.fitted) replaces its members' declared distributions. `mvn`
samples one latent site `_prior_<i>`, the members' unconstrained vector, where the
first member comes in node order, and maps its pieces through numpyro's
`biject_to` of each member's support into deterministic sites named as the
params: the sampled site is the unconstrained vector itself, so no Jacobian term
is added, and the density implied on the params is the normal's times the inverse
transform's Jacobian. The latent site is no node, so it is never stored.
`marginal` samples each member at its own position from its family (or a
mixture of families, elementwise).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.linalg import cho_solve, solve_triangular
from jax.scipy.special import expit, gammaln, logit, logsumexp
from jax.scipy.stats import norm
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform, biject_to
from numpyro.infer.reparam import LocScaleReparam

from service.language.catalog import DISTRIBUTIONS
from service.language.expr import BinOp, Call, Compare, Index, Name, Neg, Node, Num, Slice, walk
from service.language.fitted import interval_bounds
from service.language.ir import DistCall, FittedMember, FittedPrior, MarginalComponent, Model, Param
from service.language.shapes import ode_options, static_int

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
    "normal_lpdf": norm.logpdf,
    "sum": jnp.sum,
    "mean": jnp.mean,
    "logsumexp": logsumexp,
    "max": jnp.max,
    "min": jnp.min,
    "prod": jnp.prod,
    "dot": jnp.matmul,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "log_softmax": lambda x: jax.nn.log_softmax(x, axis=-1),
    "cumsum": lambda x: jnp.cumsum(x, axis=-1),
    "transpose": jnp.transpose,
    "cholesky": jnp.linalg.cholesky,
    "add_diag": lambda k, d: k + jnp.asarray(d)[..., None] * jnp.eye(k.shape[-1], dtype=jnp.result_type(k, d)),
    "triangular_solve": lambda lower, b: solve_triangular(lower, b, lower=True),
    "cholesky_solve": lambda lower, b: cho_solve((lower, True), b),
    "diag": jnp.diag,
    "eye": lambda n: jnp.eye(n, dtype=jnp.result_type(float)),
    "outer": jnp.outer,
    "cov_exp_quad": lambda x, alpha, rho: _cov_exp_quad(x, alpha, rho),
    "log_determinant": lambda a: jnp.linalg.slogdet(a)[1],
    "concatenate": lambda *arrays, axis=0: jnp.concatenate(arrays, axis=axis),
    "stack": lambda *arrays, axis=0: jnp.stack(arrays, axis=axis),
}
"""What each function of service.language.catalog.FUNCTIONS computes; keyword arguments are static integers."""


def _cov_exp_quad(x: Any, alpha: Any, rho: Any) -> Any:
    points = x[:, None] if x.ndim == 1 else x
    squared = jnp.sum(jnp.square(points[:, None, :] - points[None, :, :]), axis=-1)
    return jnp.square(alpha) * jnp.exp(-0.5 * squared / jnp.square(rho))

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


BOUND = frozenset({"prev", "t", "state", "time"})
"""Names a recurrence's step or an ODE's right-hand side binds anew on every call."""


def shared_gathers(model: Model) -> dict[str, tuple[str, ...]]:
    """Integer data vectors that index two or more names, `a[g]`, `b[g]`, ... anywhere in the model: the names by
    index, in the order they first appear. Varying intercepts and slopes of one grouping are the common case."""
    found: dict[str, list[str]] = {}
    for expr in _expressions(model):
        for n in walk(expr):
            match n:
                case Index(value=Name(id=base), items=(Name(id=index),)) if base not in BOUND and _group_index(
                        model, index):
                    bases = found.setdefault(index, [])
                    if base not in bases:
                        bases.append(base)
    return {index: tuple(bases) for index, bases in found.items() if len(bases) > 1}


def _group_index(model: Model, name: str) -> bool:
    value = model.data.get(name)
    return value is not None and value.ndim == 1 and np.issubdtype(value.dtype, np.integer)


def _expressions(model: Model) -> Iterator[Node]:
    def of(call: DistCall) -> Iterator[Node]:
        yield from (v for _, v in call.args)
        for _, inner in call.nested:
            yield from of(inner)
        for inner in call.variadic:
            yield from of(inner)

    for node in model.nodes:
        if isinstance(node, Param):
            yield from of(node.dist)
        else:
            yield node.expr
    for obs in model.observes:
        yield from of(obs.dist)
    yield from (f.expr for f in model.factors)


def _shared_gather(base: str, index: str, group: tuple[str, ...]) -> Compiled:
    """`base[index]` gathered with the other names of `group` that are in the environment with its shape and
    dtype, as one gather of their stacked values: one scatter-add in the gradient instead of one per name, which on XLA
    CPU costs per index, not per column (the varying intercept and slope of the bench's regression: a 900-row
    likelihood gradient 12.5 -> 7.1-9.3 us). Gathering is exact, so the values are those of `base[index]`; the
    gradient's sums may round differently in the last bit. Each column is kept in the environment for the other
    names' gathers."""

    def key(name: str) -> str:
        return f"\0gather:{index}:{name}"  # NUL: no model name can be a key

    def gather(env: Env) -> Any:
        if key(base) not in env:
            value = jnp.asarray(env[base])
            members = [b for b in group if b in env and jnp.shape(env[b]) == value.shape
                       and jnp.result_type(env[b]) == value.dtype]  # integer data stays integer
            if value.ndim == 0 or len(members) < 2:
                return value[env[index]]
            rows = jnp.stack([jnp.asarray(env[b]) for b in members], axis=-1)[env[index]]
            for j, b in enumerate(members):
                env[key(b)] = rows[..., j]
        return env[key(base)]

    return gather


def compile_expr(node: Node, constants: dict[str, int] | None = None,
                 gathers: dict[str, tuple[str, ...]] | None = None) -> Compiled:
    """Turn an expression tree into a function of the environment (names -> arrays). `constants`: the integer
    scalar data by name, for what must be static (a recurrence's length). `gathers`: `shared_gathers`."""
    constants = constants or {}
    gathers = gathers or {}

    def sub(n: Node) -> Compiled:
        return compile_expr(n, constants, gathers)

    match node:
        case Num(value=v):
            value = float(v) if isinstance(v, float) else v
            return lambda env: value
        case Name(id=name):
            return lambda env: env[name]
        case Neg(operand=o):
            inner = sub(o)
            return lambda env: jnp.negative(inner(env))
        case BinOp(op=op, left=a, right=b) | Compare(op=op, left=a, right=b):
            fn, left, right = _BINARY[op], sub(a), sub(b)
            return lambda env: fn(left(env), right(env))
        case Call(func="ode", args=(rhs, y0, times), kwargs=kwargs):
            return _ode(sub(rhs), sub(y0), sub(times), ode_options(kwargs))
        case Call(func="recurrence", args=(init, step, length)):
            n = length.value if isinstance(length, Num) else constants[length.id]  # type: ignore[union-attr]
            return _recurrence(sub(init), sub(step), int(n))
        case Call(func=func, args=args, kwargs=kwargs):
            fn, compiled = FUNCTIONS[func], [sub(a) for a in args]
            options = {key: static_int(value, key) for key, value in kwargs}
            if func == "eye":  # its size fixes a shape: the literal itself, not a traced value
                size = static_int(args[0], "eye(n)")
                return lambda env: fn(size)
            return lambda env: fn(*(c(env) for c in compiled), **options)
        case Index(value=Name(id=gathered), items=(Name(id=by),)) if by in gathers and gathered in gathers[by]:
            return _shared_gather(gathered, by, gathers[by])
        case Index(value=value, items=items):
            base = sub(value)
            parts = [item if isinstance(item, Slice) else sub(item) for item in items]

            def index(env: Env) -> Any:
                key = tuple(
                    slice(p.start, p.stop, p.step) if isinstance(p, Slice) else p(env) for p in parts
                )
                return jnp.asarray(base(env))[key]

            return index
    raise TypeError(f"cannot lower {node!r}")


def _ode(rhs: Compiled, y0: Compiled, times: Compiled, options: dict[str, float]) -> Compiled:
    """y at `times` for dy/dt = rhs(state=y, time=t), y(t0) = y0, by diffrax; NaN where the solve fails."""
    import diffrax  # equinox and friends load only for models that solve ODEs

    solver = diffrax.Kvaerno5() if options["stiff"] else diffrax.Tsit5()
    controller = diffrax.PIDController(rtol=options["rtol"], atol=options["atol"])
    t0, max_steps = float(options["t0"]), int(options["max_steps"])

    def run(env: Env) -> Any:
        start = jnp.asarray(y0(env), dtype=jnp.result_type(float))
        ts = jnp.asarray(times(env), dtype=start.dtype)

        def field(t: Any, y: Any, args: Any) -> Any:
            return jnp.asarray(rhs({**env, "state": y, "time": t}), dtype=start.dtype)

        solution = diffrax.diffeqsolve(diffrax.ODETerm(field), solver, t0=t0, t1=ts[-1], dt0=None, y0=start,
                                       saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller,
                                       max_steps=max_steps, throw=False)
        return jnp.where(solution.result == diffrax.RESULTS.successful, solution.ys, jnp.nan)

    return run


def _recurrence(init: Compiled, step: Compiled, n: int) -> Compiled:
    """h[0] = init, h[t] = step(prev=h[t - 1], t) for t = 1 .. n - 1, as one lax.scan."""

    def run(env: Env) -> Any:
        start = jnp.asarray(init(env), dtype=jnp.result_type(float))

        def body(prev: Any, t: Any) -> tuple[Any, Any]:
            new = jnp.asarray(step({**env, "prev": prev, "t": t}), dtype=start.dtype)
            return new, new

        _, rest = jax.lax.scan(body, start, jnp.arange(1, n))
        return jnp.concatenate([start[None], rest])

    return run


def _factor_step(name: str, fn: Compiled) -> Callable[[Env], None]:
    def step(env: Env) -> None:
        numpyro.factor(name, jnp.sum(fn(env)))

    return step


def compile_dist(call: DistCall, constants: dict[str, int] | None = None,
                 gathers: dict[str, tuple[str, ...]] | None = None) -> Callable[[Env], dist.Distribution]:
    cls = getattr(dist, call.name)
    args = [(k, compile_expr(v, constants, gathers)) for k, v in call.args]
    args += [(k, compile_dist(inner, constants, gathers)) for k, inner in call.nested if "." not in k]
    static = dict(call.static)
    variadic = [compile_dist(inner, constants, gathers) for inner in call.variadic]
    if variadic:
        name = DISTRIBUTIONS[call.name].variadic
        return lambda env: cls(**static, **{k: f(env) for k, f in args}, **{name: [f(env) for f in variadic]})
    return lambda env: cls(**static, **{k: f(env) for k, f in args})


def lower(model: Model) -> Callable[[dict[str, Any]], None]:
    """The numpyro model `fn(data)` for a validated Model."""
    fitted = model.fitted_by_param
    constants = {k: int(v) for k, v in model.data.items() if v.ndim == 0 and np.issubdtype(v.dtype, np.integer)}
    gathers = shared_gathers(model)
    placed: set[int] = set()
    steps: list[Callable[[Env], None]] = []
    for node in model.nodes:
        if isinstance(node, Param) and node.name in fitted:
            index, prior = fitted[node.name]
            if prior.method == "marginal":
                k = next(k for k, m in enumerate(prior.members) if m.param == node.name)
                steps.append(_sample_step(node.name, _marginal_dist(prior.members[k], prior.marginals[k]),
                                          node.shape, observed=False))
            elif index not in placed:  # every member at once, where the first comes
                placed.add(index)
                steps.append(_mvn_step(f"_prior_{index}", prior))
        elif isinstance(node, Param):
            steps.append(_sample_step(node.name, compile_dist(node.dist, constants, gathers), node.batch_shape,
                                      observed=False))
        else:
            steps.append(_define_step(node.name, compile_expr(node.expr, constants, gathers)))
    for obs in model.observes:
        steps.append(_sample_step(obs.name, compile_dist(obs.dist, constants, gathers), obs.batch_shape,
                                  observed=True))
    for factor in model.factors:
        steps.append(_factor_step(factor.name, compile_expr(factor.expr, constants, gathers)))

    def numpyro_model(data: dict[str, Any]) -> None:
        env: Env = dict(data)
        for step in steps:
            step(env)

    # a fitted prior replaces the declared distribution, and with it the reparameterization
    noncentered = {p.name: LocScaleReparam(centered=0) for p in model.params if p.noncentered and p.name not in fitted}
    if noncentered:
        return handlers.reparam(numpyro_model, config=noncentered)  # type: ignore[return-value]
    return numpyro_model


def support_constraint(support: str) -> constraints.Constraint:
    """numpyro's constraint for a fitted member's support (real, positive, unit, interval(a, b))."""
    match support:
        case "real":
            return constraints.real
        case "positive":
            return constraints.positive
        case "unit":
            return constraints.unit_interval
    bounds = interval_bounds(support)
    if bounds is None:
        raise ValueError(f"unknown support {support!r}")
    return constraints.interval(*bounds)


def _mvn_step(site: str, prior: FittedPrior) -> Callable[[Env], None]:
    weights = np.array([c.weight for c in prior.components])
    locs = np.array([c.loc for c in prior.components])
    trils = np.array([c.scale_tril for c in prior.components])
    pieces: list[tuple[FittedMember, int, int, Transform]] = []
    offset = 0
    for member in prior.members:
        size = int(np.prod(member.shape))
        pieces.append((member, offset, offset + size, biject_to(support_constraint(member.support))))
        offset += size

    def step(env: Env) -> None:
        if len(weights) == 1:
            d: dist.Distribution = dist.MultivariateNormal(locs[0], scale_tril=trils[0])
        else:
            d = dist.MixtureSameFamily(dist.Categorical(probs=weights / weights.sum()),
                                       dist.MultivariateNormal(locs, scale_tril=trils))
        z = numpyro.sample(site, d)
        for member, start, stop, transform in pieces:
            value = transform(jnp.reshape(z[start:stop], member.shape))
            env[member.param] = numpyro.deterministic(member.param, value)

    return step


def _marginal_dist(member: FittedMember, mixture: tuple[MarginalComponent, ...]) -> Callable[[Env], dist.Distribution]:
    """A member's marginal prior: its family expanded to its shape, or an elementwise mixture of families."""
    shape = member.shape

    def family(c: MarginalComponent) -> dist.Distribution:
        args = {k: v if isinstance(v, float) else np.reshape(np.asarray(v), shape) for k, v in c.args}
        d: dist.Distribution = getattr(dist, c.dist)(**args)
        return d if d.batch_shape == shape else d.expand(shape)

    weights = np.array([c.weight for c in mixture])
    support = support_constraint(member.support)

    def make(env: Env) -> dist.Distribution:
        if len(mixture) == 1:
            return family(mixture[0])
        mixing = dist.Categorical(probs=np.broadcast_to(weights / weights.sum(), (*shape, len(weights))))
        return dist.MixtureGeneral(mixing, [family(c) for c in mixture], support=support)

    return make


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
