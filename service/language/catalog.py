"""What the model language may call: distributions and functions.

Distribution names and parameter names are numpyro's (`numpyro.distributions`),
listed here as plain data so the API can validate specs without importing JAX.
The lowering stage (workers/lower.py) maps each name to the numpyro class of the
same name and each function to its JAX implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Event(Enum):
    """How a distribution's event shape follows from its arguments."""

    SCALAR = "scalar"  # event (), batch = broadcast of all arguments
    CATEGORICAL = "categorical"  # probs/logits (..., k): event (), batch (...)
    SIMPLEX = "simplex"  # concentration (..., k): event (k,)
    MVN = "mvn"  # loc (..., k), matrix (..., k, k): event (k,)
    LKJ = "lkj"  # dimension d (an integer): event (d, d)
    LOW_RANK_MVN = "low_rank_mvn"  # loc (..., k), cov_factor (..., k, r), cov_diag (..., k): event (k,)
    RANDOM_WALK = "random_walk"  # scale (...), num_steps n (an integer): event (n,)
    MIXTURE = "mixture"  # a Categorical over K and a component of batch (..., K), or K components: their event


@dataclass(frozen=True)
class DistInfo:
    """One distribution of the language, with numpyro's parameter names in numpyro's order."""

    params: tuple[str, ...]
    required: frozenset[str] = frozenset()
    one_of: tuple[str, ...] = ()
    """Exactly one of these must be given (probs or logits; a covariance form)."""
    constraints: dict[str, str] = field(default_factory=dict)
    """Checkable constraint per parameter: positive, unit, nonnegative_int, positive_int, dimension."""
    support: str = "real"
    """What observed values must be: real, positive, nonnegative, unit, binary, count, category, ..."""
    event: Event = Event.SCALAR
    loc_scale: bool = False
    """Has `loc` and `scale`, so `reparam: noncentered` applies."""
    discrete: bool = False
    nested: frozenset[str] = frozenset()
    """Parameters that are distributions themselves (a mixture's mixing and component distributions)."""
    variadic: str = ""
    """The last parameter, given as all further positional arguments (MixtureGeneral's components); bound as
    `<name>.0`, `<name>.1`, ..."""


def _d(params: str, *, required: str = "", one_of: str = "", **kw: object) -> DistInfo:
    return DistInfo(
        params=tuple(params.split()),
        required=frozenset(required.split()),
        one_of=tuple(one_of.split()),
        **kw,  # type: ignore[arg-type]
    )


_POS = "positive"
DISTRIBUTIONS: dict[str, DistInfo] = {
    "Normal": _d("loc scale", constraints={"scale": _POS}, loc_scale=True),
    "HalfNormal": _d("scale", constraints={"scale": _POS}, support="nonnegative"),
    "StudentT": _d("df loc scale", required="df", constraints={"df": _POS, "scale": _POS}, loc_scale=True),
    "Cauchy": _d("loc scale", constraints={"scale": _POS}, loc_scale=True),
    "HalfCauchy": _d("scale", constraints={"scale": _POS}, support="nonnegative"),
    "Laplace": _d("loc scale", constraints={"scale": _POS}, loc_scale=True),
    "Logistic": _d("loc scale", constraints={"scale": _POS}),
    "Exponential": _d("rate", constraints={"rate": _POS}, support="nonnegative"),
    "Gamma": _d("concentration rate", required="concentration", constraints={"concentration": _POS, "rate": _POS},
                support="positive"),
    "InverseGamma": _d("concentration rate", required="concentration",
                       constraints={"concentration": _POS, "rate": _POS}, support="positive"),
    "LogNormal": _d("loc scale", constraints={"scale": _POS}, support="positive"),
    "Weibull": _d("scale concentration", required="scale concentration",
                  constraints={"scale": _POS, "concentration": _POS}, support="positive"),
    "Beta": _d("concentration1 concentration0", required="concentration1 concentration0",
               constraints={"concentration1": _POS, "concentration0": _POS}, support="unit"),
    "Uniform": _d("low high", required="low high", support="interval"),
    "Bernoulli": _d("probs logits", one_of="probs logits", constraints={"probs": "unit"}, support="binary",
                    discrete=True),
    "BernoulliLogits": _d("logits", required="logits", support="binary", discrete=True),
    "BernoulliProbs": _d("probs", required="probs", constraints={"probs": "unit"}, support="binary", discrete=True),
    "Binomial": _d("total_count probs logits", one_of="probs logits",
                   constraints={"total_count": "nonnegative_int", "probs": "unit"}, support="bounded_count",
                   discrete=True),
    "BinomialLogits": _d("logits total_count", required="logits", constraints={"total_count": "nonnegative_int"},
                         support="bounded_count", discrete=True),
    "BinomialProbs": _d("probs total_count", required="probs",
                        constraints={"total_count": "nonnegative_int", "probs": "unit"}, support="bounded_count",
                        discrete=True),
    "Poisson": _d("rate", required="rate", constraints={"rate": _POS}, support="count", discrete=True),
    "ZeroInflatedPoisson": _d("gate rate", required="gate", constraints={"gate": "unit", "rate": _POS},
                              support="count", discrete=True),
    "NegativeBinomial2": _d("mean concentration", required="mean concentration",
                            constraints={"mean": _POS, "concentration": _POS}, support="count", discrete=True),
    "BetaBinomial": _d("concentration1 concentration0 total_count", required="concentration1 concentration0",
                       constraints={"concentration1": _POS, "concentration0": _POS,
                                    "total_count": "nonnegative_int"},
                       support="bounded_count", discrete=True),
    "Categorical": _d("probs logits", one_of="probs logits", constraints={"probs": "unit"}, support="category",
                      event=Event.CATEGORICAL, discrete=True),
    "CategoricalLogits": _d("logits", required="logits", support="category", event=Event.CATEGORICAL,
                            discrete=True),
    "CategoricalProbs": _d("probs", required="probs", constraints={"probs": "unit"}, support="category",
                           event=Event.CATEGORICAL, discrete=True),
    "Dirichlet": _d("concentration", required="concentration", constraints={"concentration": _POS},
                    support="simplex", event=Event.SIMPLEX),
    "MultivariateNormal": _d("loc covariance_matrix precision_matrix scale_tril",
                             one_of="covariance_matrix precision_matrix scale_tril", event=Event.MVN),
    "LowRankMultivariateNormal": _d("loc cov_factor cov_diag", required="loc cov_factor cov_diag",
                                    constraints={"cov_diag": _POS}, event=Event.LOW_RANK_MVN),
    "GaussianRandomWalk": _d("scale num_steps", required="num_steps",
                             constraints={"scale": _POS, "num_steps": "dimension"}, event=Event.RANDOM_WALK),
    "MixtureSameFamily": _d("mixing_distribution component_distribution",
                            required="mixing_distribution component_distribution",
                            nested=frozenset({"mixing_distribution", "component_distribution"}), support="component",
                            event=Event.MIXTURE),
    "MixtureGeneral": _d("mixing_distribution component_distributions", required="mixing_distribution",
                         nested=frozenset({"mixing_distribution"}), variadic="component_distributions",
                         support="components", event=Event.MIXTURE),
    "LKJCholesky": _d("dimension concentration", required="dimension",
                      constraints={"dimension": "dimension", "concentration": _POS}, support="corr_cholesky",
                      event=Event.LKJ),
    "LKJ": _d("dimension concentration", required="dimension",
              constraints={"dimension": "dimension", "concentration": _POS}, support="corr_matrix", event=Event.LKJ),
}


class Fn(Enum):
    """Shape rule of a function of the expression language."""

    ELEMENTWISE = "elementwise"  # n arguments, numpy broadcasting
    REDUCE = "reduce"  # one array -> scalar, or without `axis` (an integer literal) with axis=
    MATMUL = "matmul"  # like @
    LAST_AXIS = "last_axis"  # same shape (softmax over the last axis, cumsum of a vector)
    TRANSPOSE = "transpose"
    SQUARE = "square"  # (..., n, n) -> (..., n, n): cholesky, add_diag
    SOLVE = "solve"  # (n, n), (n,) or (n, k) -> the right-hand side's shape
    DIAG = "diag"  # (n,) -> (n, n); (n, m) -> (min(n, m),), as numpy
    EYE = "eye"  # an integer literal n -> (n, n)
    OUTER = "outer"  # (n,), (m,) -> (n, m)
    KERNEL = "kernel"  # points (n,) or (n, d), then scalars -> (n, n)
    DETERMINANT = "determinant"  # (..., n, n) -> (...)
    CONCATENATE = "concatenate"  # arrays joined along an existing axis (axis=, default 0)
    STACK = "stack"  # equal shapes stacked along a new axis (axis=, default 0)
    RECURRENCE = "recurrence"  # (init, step, length): (length, *init's shape), a scan over t = 1 .. length - 1
    ODE = "ode"  # (rhs, y0, times): (len(times), *y0's shape), the solution at the output times


@dataclass(frozen=True)
class FnInfo:
    rule: Fn
    arity: int
    """Arguments it takes; VARIADIC: one or more."""
    keywords: frozenset[str] = frozenset()
    """Keyword arguments it accepts (each an integer literal)."""


VARIADIC = -1


def _f(rule: Fn, arity: int = 1, keywords: str = "") -> FnInfo:
    return FnInfo(rule, arity, frozenset(keywords.split()))


FUNCTIONS: dict[str, FnInfo] = {
    **{
        name: _f(Fn.ELEMENTWISE)
        for name in (
            "exp log log1p expm1 sqrt abs square logit inv_logit sigmoid softplus log_sigmoid tanh sin cos "
            "Phi lgamma floor"
        ).split()
    },
    "minimum": _f(Fn.ELEMENTWISE, 2),
    "maximum": _f(Fn.ELEMENTWISE, 2),
    "pow": _f(Fn.ELEMENTWISE, 2),
    "where": _f(Fn.ELEMENTWISE, 3),
    "normal_lpdf": _f(Fn.ELEMENTWISE, 3),
    **{name: _f(Fn.REDUCE, keywords="axis") for name in ("sum", "mean", "logsumexp", "max", "min", "prod")},
    "dot": _f(Fn.MATMUL, 2),
    "softmax": _f(Fn.LAST_AXIS),
    "log_softmax": _f(Fn.LAST_AXIS),
    "cumsum": _f(Fn.LAST_AXIS),
    "transpose": _f(Fn.TRANSPOSE),
    "cholesky": _f(Fn.SQUARE),
    "add_diag": _f(Fn.SQUARE, 2),
    "triangular_solve": _f(Fn.SOLVE, 2),
    "cholesky_solve": _f(Fn.SOLVE, 2),
    "diag": _f(Fn.DIAG),
    "eye": _f(Fn.EYE),
    "outer": _f(Fn.OUTER, 2),
    "cov_exp_quad": _f(Fn.KERNEL, 3),
    "log_determinant": _f(Fn.DETERMINANT),
    "concatenate": _f(Fn.CONCATENATE, VARIADIC, "axis"),
    "stack": _f(Fn.STACK, VARIADIC, "axis"),
    "recurrence": _f(Fn.RECURRENCE, 3),
    "ode": _f(Fn.ODE, 3, "t0 rtol atol max_steps stiff"),
}
"""Function name -> shape rule, arguments, keywords. Semantics (workers/lower.py): numpy's for the reductions,
diag, eye, outer, concatenate and stack; cholesky is the lower factor; add_diag(K, d) is K + d on the diagonal
(Stan's add_diag; d a scalar or (n,)); triangular_solve(L, b) solves L x = b for lower-triangular L;
cholesky_solve(L, b) solves (L L^T) x = b given the Cholesky factor L; cov_exp_quad(x, alpha, rho) is the
squared-exponential kernel alpha^2 exp(-|x_i - x_j|^2 / (2 rho^2)) (Stan's gp_exp_quad_cov); log_determinant
is log |det A|; normal_lpdf(x, loc, scale) is the normal log density, elementwise (for a `factor`, as
in an HMM's forward algorithm). recurrence(init, step, length) is the sequence h with h[0] = init and h[t] = step for
t = 1 .. length - 1, where `step` is an expression of `prev` (h[t - 1]) and `t` (the step index) and any
other name: lowered to one jax.lax.scan; length is an integer literal or integer scalar data.
ode(rhs, y0, times) solves dy/dt = rhs from y(t0) = y0 (t0=0 unless given) and gives y at `times` (increasing
data after t0); rhs is an expression of `state` (y) and `time` (t) and any other name. Solved by diffrax
(Tsit5, or Kvaerno5 with stiff=1) with an adaptive step (rtol=, atol=) of at most max_steps= steps; a solve
that fails (steps exhausted, step size underflow) gives NaN, so the point is rejected like a divergence."""

ODE_NAMES = ("state", "time")
"""The names an ODE's right-hand side binds: the state y(t) and the time t."""
ODE_OPTIONS = {"t0": 0.0, "rtol": 1e-6, "atol": 1e-6, "max_steps": 10_000, "stiff": 0}
"""ode()'s keyword arguments (number literals) and their defaults."""
MAX_ODE_STEPS = 1_000_000
RECURRENCE_NAMES = ("prev", "t")
"""The names a recurrence's step binds: the previous value and the step index."""
MAX_RECURRENCE_STEPS = 100_000
"""Longest recurrence: a scan's steps run one after another, and its gradient keeps every step's values."""

MIXING = ("Categorical", "CategoricalProbs", "CategoricalLogits")
"""What may mix a mixture's components."""
MAX_COMPONENTS = 32
"""Most components of a MixtureGeneral (each is its own term of the log density)."""

LOC_SCALE = sorted(name for name, info in DISTRIBUTIONS.items() if info.loc_scale)
