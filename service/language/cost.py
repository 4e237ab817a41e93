"""What a validated model costs before it runs: bytes per log-density evaluation, and bytes of results.

Everything is counted from the static shapes, at 8 bytes an element (float64 and int64: workers run JAX with
x64; a boolean, 1 byte in JAX, is counted as 8, so the figures are upper bounds). One log-density evaluation
computes these *values*:

- each param: its unconstrained position, its constrained value and its log-density terms, 3 arrays of its
  shape (4 with `reparam: noncentered`, whose decentered site is another);
- every sub-expression of every define, distribution argument and observe argument, the define itself
  included: broadcasting results, `@` products, gathers by index (`alpha[county]` has the index's shape),
  function results, comparisons. Names and literals are no new value: data are counted once, params and defines
  where they are made. A sub-expression written twice is counted twice (no common-subexpression elimination
  assumed);
- each observed site's log-density terms (the data's shape), and for a MultivariateNormal site the Cholesky
  factor of its matrix (batch x k x k).

No single value may exceed `Limits.value_bytes`. The evaluation as a whole needs the data plus GRADIENT_FACTOR
times the sum of the values (`Limits.evaluation_bytes`). XLA fuses elementwise chains (a reduction of `a * b`
need not materialise `a * b`), so the real peak is usually lower: this is what a jitted evaluation could hold if
nothing fused, which is what must not take a worker down.

Results (`result`): each chain stores ceil(draws / thin) kept draws of the kept variables (sampler `keep`) and
7 sample stats, 8 bytes each: chain bytes = kept draws x (kept elements + 7) x 8; job bytes = chains x that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.defaults import MAX_CHAIN_RESULT_BYTES, MAX_EVALUATION_BYTES, MAX_RESULT_BYTES, MAX_VALUE_BYTES
from service.exceptions import Problem
from service.language.catalog import DISTRIBUTIONS, Event
from service.language.expr import Name, Node, Num, to_text
from service.language.ir import DistCall, Model, Param, Shape
from service.language.names import SAMPLE_STATS
from service.language.shapes import ShapeChecker, Symbol

ITEM_BYTES = 8
"""Bytes of one element of any value (float64, int64; booleans counted as 8)."""
GRADIENT_FACTOR = 3
"""Memory of an evaluation with its gradient, in multiples of the values the evaluation computes.

Reverse-mode differentiation (what NUTS needs at every leapfrog step) keeps the forward values it needs
(residuals, about 1x), builds a cotangent of the same shape for each (about 1x more, freed as it goes) and the
forward pass's own buffers live until the backward pass frees them: about 2x, up to 3x at the peak. 3 is the
conservative end."""
STATS_PER_DRAW = len(SAMPLE_STATS)
"""Sample stats stored per kept draw (7: diverging, n_steps, tree_depth, step_size, energy, lp, acceptance_rate)."""
PARAM_ARRAYS = 3
"""Arrays of a param's shape per evaluation: unconstrained position, constrained value, log-density terms."""
LARGEST_NAMED = 3
"""Fields named in the message about the total per evaluation."""


@dataclass(frozen=True)
class Limits:
    """Refusal thresholds in bytes; the defaults are service.defaults', a server's come from
    Settings.cost_limits()."""

    value_bytes: int = MAX_VALUE_BYTES
    """Largest single value of one evaluation."""
    evaluation_bytes: int = MAX_EVALUATION_BYTES
    """One evaluation in all: data + GRADIENT_FACTOR x values."""
    result_bytes: int = MAX_RESULT_BYTES
    """Draws and sample stats of a job."""
    chain_result_bytes: int = MAX_CHAIN_RESULT_BYTES
    """Draws and sample stats of one chain."""


@dataclass(frozen=True)
class Value:
    """One array an evaluation computes (or `copies` arrays of one shape)."""

    path: str
    """The field it comes from: `params.theta`, `define.c`, `observe.y`."""
    what: str
    """The sub-expression as text, or what the array is (`log density of y`)."""
    shape: Shape
    copies: int = 1

    @property
    def bytes(self) -> int:
        """Bytes of one array."""
        return math.prod(self.shape) * ITEM_BYTES

    @property
    def total_bytes(self) -> int:
        return self.copies * self.bytes


@dataclass(frozen=True)
class EvaluationCost:
    """The values of one log-density evaluation, in model order, and the data it reads."""

    values: tuple[Value, ...]
    data_bytes: int

    @property
    def value_bytes(self) -> int:
        """Sum of every value (all copies)."""
        return sum(v.total_bytes for v in self.values)

    @property
    def total_bytes(self) -> int:
        """What one evaluation with its gradient may hold: data + GRADIENT_FACTOR x values."""
        return self.data_bytes + GRADIENT_FACTOR * self.value_bytes

    def by_field(self) -> dict[str, int]:
        """Bytes of the values of each field (all copies)."""
        out: dict[str, int] = {}
        for v in self.values:
            out[v.path] = out.get(v.path, 0) + v.total_bytes
        return out


@dataclass(frozen=True)
class ResultCost:
    """The size of a job's stored draws and sample stats."""

    chains: int
    kept_draws: int
    """ceil(draws / thin) per chain."""
    kept_elements: int
    """Elements of the stored variables, per draw."""

    @property
    def chain_bytes(self) -> int:
        return self.kept_draws * (self.kept_elements + STATS_PER_DRAW) * ITEM_BYTES

    @property
    def total_bytes(self) -> int:
        return self.chains * self.chain_bytes


def evaluation(model: Model) -> EvaluationCost:
    """Every value one log-density evaluation of `model` computes (see the module's docstring)."""
    symbols = {name: Symbol("data", value.shape, value) for name, value in model.data.items()}
    symbols.update({n.name: Symbol("param" if isinstance(n, Param) else "define", n.shape) for n in model.nodes})
    values: list[Value] = []
    for node in model.nodes:
        if isinstance(node, Param):
            path = f"params.{node.name}"
            values += _dist_values(node.dist, node.batch_shape, path, symbols)
            values.append(Value(path, f"{node.name}: position, value and log density", node.shape,
                                PARAM_ARRAYS + node.noncentered))
        else:
            values += _expression_values(node.expr, f"define.{node.name}", symbols)
    for obs in model.observes:
        path = f"observe.{obs.name}"
        values += _dist_values(obs.dist, obs.batch_shape, path, symbols)
        values.append(Value(path, f"log density of {obs.name}", obs.shape))
    for factor in model.factors:
        values += _expression_values(factor.expr, f"factor.{factor.name}", symbols)
    return EvaluationCost(tuple(values), sum(v.nbytes for v in model.data.values()))


def kept_draws(draws: int, thin: int) -> int:
    """Kept draws among the first `draws` sampling iterations: every `thin`-th, the first included."""
    return -(-draws // thin)


def result(model: Model, *, chains: int, draws: int, thin: int, keep: list[str] | None) -> ResultCost:
    """The stored results of a job of `model` with these sampler settings."""
    elements = sum(math.prod(n.shape) for n in model.kept(keep))
    return ResultCost(chains=chains, kept_draws=kept_draws(draws, thin), kept_elements=elements)


STATE_VECTORS = 7
"""Vectors of the unconstrained dimension in a chain's sampler state with a diagonal mass matrix: position,
gradient, inverse mass matrix, its square root and inverse root, and the Welford window's mean and sums."""
DENSE_STATE = (3, 4)
"""With a dense mass matrix: 3 vectors (position, gradient, Welford mean) and 4 matrices (the inverse mass
matrix, its Cholesky factor and inverse, the Welford sums)."""


def state_bytes(model: Model, *, dense_mass: bool) -> int:
    """Bytes of one chain's sampler state (what checkpoints and the job's stored chain states hold), counting each
    param's elements as unconstrained dimensions (an upper bound: a simplex has one fewer per row)."""
    dim = sum(math.prod(p.shape) for p in model.params)
    if dense_mass:
        vectors, matrices = DENSE_STATE
        return ITEM_BYTES * (vectors * dim + matrices * dim * dim)
    return ITEM_BYTES * STATE_VECTORS * dim


def check(model: Model, *, chains: int, draws: int, thin: int, keep: list[str] | None,
          limits: Limits, dense_mass: bool = False) -> list[Problem]:
    """Problems for whatever is over `limits`: per field the largest value over the per-value limit, the total
    per evaluation (path ""), the results (`sampler.draws`) and a chain's sampler state (`sampler.dense_mass`,
    stored with the job after every round). Paths are the model's own (no `model.`)."""
    cost = evaluation(model)
    problems: list[Problem] = []
    largest: dict[str, Value] = {}
    for v in cost.values:
        if v.bytes > limits.value_bytes and (v.path not in largest or v.bytes > largest[v.path].bytes):
            largest[v.path] = v
    for path, v in largest.items():
        problems.append(Problem(path, f"{size_text(v.bytes)} per evaluation ({v.what}, shape {shape_text(v.shape)}),"
                                      f" limit {size_text(limits.value_bytes)}"))
    if cost.total_bytes > limits.evaluation_bytes:
        fields = sorted(cost.by_field().items(), key=lambda kv: -kv[1])[:LARGEST_NAMED]
        named = ", ".join(f"{path} {size_text(n)}" for path, n in fields)
        problems.append(Problem("", f"{size_text(cost.total_bytes)} per evaluation in all (data "
                                    f"{size_text(cost.data_bytes)} + {GRADIENT_FACTOR} x {size_text(cost.value_bytes)}"
                                    f" of values, for the gradient), limit {size_text(limits.evaluation_bytes)}; "
                                    f"largest: {named}"))
    res = result(model, chains=chains, draws=draws, thin=thin, keep=keep)
    how = (f"{res.kept_draws} kept draws x ({res.kept_elements} elements + {STATS_PER_DRAW} sample stats) x "
           f"{ITEM_BYTES} bytes")
    advice = "fewer draws, a larger thin, or fewer variables in keep"
    if res.chain_bytes > limits.chain_result_bytes:
        problems.append(Problem("sampler.draws", f"results of {size_text(res.chain_bytes)} per chain ({how}), limit "
                                                 f"{size_text(limits.chain_result_bytes)}; ask for {advice}"))
    if res.total_bytes > limits.result_bytes:
        problems.append(Problem("sampler.draws", f"results of {size_text(res.total_bytes)} per job ({res.chains} "
                                                 f"chains x {how}), limit {size_text(limits.result_bytes)}; ask for "
                                                 f"{advice}"))
    state = state_bytes(model, dense_mass=dense_mass)
    if state > limits.chain_result_bytes:
        dim = sum(math.prod(p.shape) for p in model.params)
        problems.append(Problem("sampler.dense_mass", f"a dense mass matrix over {dim} parameters makes each chain's "
                                                      f"sampler state {size_text(state)}, limit "
                                                      f"{size_text(limits.chain_result_bytes)}; use the diagonal one"))
    return problems


def size_text(n: int) -> str:
    """Bytes in decimal units, 3 significant digits: 800000000 -> `800 MB`, 2560000000 -> `2.56 GB`."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            text = f"{n / scale:.3g}"
            return f"{n / scale:.0f} {unit}" if "e" in text else f"{text} {unit}"
    return f"{n} bytes"


def shape_text(shape: Shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _dist_values(call: DistCall, batch: Shape, path: str, symbols: dict[str, Symbol]) -> list[Value]:
    values: list[Value] = []
    for _, node in call.args:
        values += _expression_values(node, path, symbols)
    for _, inner in call.nested:  # a mixture's components: their arguments, and each component's log-density
        values += _dist_values(inner, batch, path, symbols)
    if DISTRIBUTIONS[call.name].event is Event.MVN:
        k = call.event_shape[-1]
        values.append(Value(path, "Cholesky factor of the matrix", (*batch, k, k)))
    return values


def _expression_values(node: Node, path: str, symbols: dict[str, Symbol]) -> list[Value]:
    """Every sub-expression of `node` that computes a new array, innermost first."""
    found: list[tuple[Node, Shape]] = []
    ShapeChecker(symbols, on_shape=lambda n, s: found.append((n, s))).shape(node)
    return [Value(path, _text(n), s) for n, s in found if not isinstance(n, Name | Num)]


def _text(node: Node) -> str:
    text = to_text(node)
    return text if len(text) <= 60 else text[:57] + "..."
