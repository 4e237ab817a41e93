"""Lowering: the catalog's argument order is numpyro's, and expressions compute what numpy computes."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
import scipy.linalg as sl
import scipy.special as sp
import scipy.stats as st

from service.language import expr
from service.language.catalog import DISTRIBUTIONS, FUNCTIONS

pytestmark = pytest.mark.usefixtures("jax_ready")


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_catalog_parameters_are_numpyros_in_numpyros_order(name: str) -> None:
    import numpyro.distributions as dist

    signature = inspect.signature(getattr(dist, name))
    positional = [p.name for p in signature.parameters.values()
                  if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
    assert list(DISTRIBUTIONS[name].params) == positional[: len(DISTRIBUTIONS[name].params)]


_R = np.array([[1.0, 0.3, -0.2], [0.3, 2.0, 0.4], [-0.2, 0.4, 1.5]])
VALUES: dict[str, Any] = {
    "a": np.array([0.3, -1.2, 2.5]),
    "b": np.array([1.5, 0.2, 0.7]),
    "M": np.array([[1.0, 2.0, 0.5], [0.1, -0.3, 0.2]]),
    "i": np.array([2, 0, 1, 1]),
    "S": _R,  # symmetric positive definite
    "L": np.linalg.cholesky(_R),
    "X": np.array([[0.0, 1.0], [0.5, -0.2], [2.0, 0.3], [1.1, 1.1]]),
    "T": np.arange(24.0).reshape(2, 3, 4) / 7,
    "ts": np.array([0.5, 1.0, 2.5]),
}


def _exp_quad(x: np.ndarray, alpha: float, rho: float) -> np.ndarray:
    from scipy.spatial.distance import cdist

    points = x[:, None] if x.ndim == 1 else x
    return alpha**2 * np.exp(-cdist(points, points, "sqeuclidean") / (2 * rho**2))

CASES: list[tuple[str, Any]] = [
    ("a + b * 2 - a / b", lambda v: v["a"] + v["b"] * 2 - v["a"] / v["b"]),
    ("-a ** 2", lambda v: -(v["a"] ** 2)),
    ("M @ b", lambda v: v["M"] @ v["b"]),
    ("a[i]", lambda v: v["a"][v["i"]]),
    ("M[1, i]", lambda v: v["M"][1, v["i"]]),
    ("M[:, 0:2]", lambda v: v["M"][:, 0:2]),
    ("M[-1]", lambda v: v["M"][-1]),
    ("where(a > 0, a, 0)", lambda v: np.where(v["a"] > 0, v["a"], 0)),
    ("exp(a)", lambda v: np.exp(v["a"])),
    ("log(b)", lambda v: np.log(v["b"])),
    ("log1p(b)", lambda v: np.log1p(v["b"])),
    ("expm1(a)", lambda v: np.expm1(v["a"])),
    ("sqrt(b)", lambda v: np.sqrt(v["b"])),
    ("abs(a)", lambda v: np.abs(v["a"])),
    ("square(a)", lambda v: v["a"] ** 2),
    ("logit(b / 2)", lambda v: sp.logit(v["b"] / 2)),
    ("inv_logit(a)", lambda v: sp.expit(v["a"])),
    ("sigmoid(a)", lambda v: sp.expit(v["a"])),
    ("softplus(a)", lambda v: np.log1p(np.exp(v["a"]))),
    ("log_sigmoid(a)", lambda v: np.log(sp.expit(v["a"]))),
    ("tanh(a)", lambda v: np.tanh(v["a"])),
    ("sin(a)", lambda v: np.sin(v["a"])),
    ("cos(a)", lambda v: np.cos(v["a"])),
    ("Phi(a)", lambda v: st.norm.cdf(v["a"])),
    ("lgamma(b)", lambda v: sp.gammaln(v["b"])),
    ("floor(a)", lambda v: np.floor(v["a"])),
    ("minimum(a, b)", lambda v: np.minimum(v["a"], v["b"])),
    ("maximum(a, b)", lambda v: np.maximum(v["a"], v["b"])),
    ("pow(b, 3)", lambda v: v["b"] ** 3),
    ("normal_lpdf(M, a, b)", lambda v: st.norm.logpdf(v["M"], v["a"], v["b"])),
    ("sum(M)", lambda v: v["M"].sum()),
    ("mean(a)", lambda v: v["a"].mean()),
    ("logsumexp(a)", lambda v: sp.logsumexp(v["a"])),
    ("dot(a, b)", lambda v: v["a"] @ v["b"]),
    ("softmax(M)", lambda v: sp.softmax(v["M"], axis=-1)),
    ("log_softmax(M)", lambda v: sp.log_softmax(v["M"], axis=-1)),
    ("cumsum(M)", lambda v: np.cumsum(v["M"], axis=-1)),
    ("transpose(M)", lambda v: v["M"].T),
    ("a <= b", lambda v: v["a"] <= v["b"]),
    ("sum(M, axis=0)", lambda v: v["M"].sum(axis=0)),
    ("sum(T, axis=-2)", lambda v: v["T"].sum(axis=-2)),
    ("mean(M, axis=1)", lambda v: v["M"].mean(axis=1)),
    ("logsumexp(T, axis=0)", lambda v: sp.logsumexp(v["T"], axis=0)),
    ("max(a)", lambda v: v["a"].max()),
    ("max(M, axis=0)", lambda v: v["M"].max(axis=0)),
    ("min(T, axis=2)", lambda v: v["T"].min(axis=2)),
    ("prod(b)", lambda v: v["b"].prod()),
    ("prod(M, axis=-1)", lambda v: v["M"].prod(axis=-1)),
    ("cholesky(S)", lambda v: np.linalg.cholesky(v["S"])),
    ("add_diag(S, 0.5)", lambda v: v["S"] + 0.5 * np.eye(3)),
    ("add_diag(S, b)", lambda v: v["S"] + np.diag(v["b"])),
    ("triangular_solve(L, a)", lambda v: sl.solve_triangular(v["L"], v["a"], lower=True)),
    ("triangular_solve(L, transpose(M))", lambda v: sl.solve_triangular(v["L"], v["M"].T, lower=True)),
    ("cholesky_solve(L, a)", lambda v: np.linalg.solve(v["S"], v["a"])),
    ("diag(a)", lambda v: np.diag(v["a"])),
    ("diag(M)", lambda v: np.diag(v["M"])),
    ("eye(3)", lambda v: np.eye(3)),
    ("outer(a, b)", lambda v: np.outer(v["a"], v["b"])),
    ("cov_exp_quad(X, 1.5, 0.7)", lambda v: _exp_quad(v["X"], 1.5, 0.7)),
    ("cov_exp_quad(a, 2, 0.3)", lambda v: _exp_quad(v["a"], 2, 0.3)),
    ("log_determinant(S)", lambda v: np.linalg.slogdet(v["S"])[1]),
    ("log_determinant(cholesky(S))", lambda v: np.log(np.prod(np.diag(np.linalg.cholesky(v["S"]))))),
    ("concatenate(a, b, a)", lambda v: np.concatenate([v["a"], v["b"], v["a"]])),
    ("concatenate(M, M, axis=1)", lambda v: np.concatenate([v["M"], v["M"]], axis=1)),
    ("stack(a, b)", lambda v: np.stack([v["a"], v["b"]])),
    ("stack(a, b, axis=-1)", lambda v: np.stack([v["a"], v["b"]], axis=-1)),
    ("ode(-0.7 * state, b, ts, rtol=1e-10, atol=1e-12)", lambda v: v["b"] * np.exp(-0.7 * v["ts"])[:, None]),
    ("ode(stack(-1.2 * state[0], 1.2 * state[0] - 0.3 * state[1]), stack(100, 0), ts, rtol=1e-10, atol=1e-10)",
     lambda v: np.stack([100 * np.exp(-1.2 * v["ts"]),
                         100 * 1.2 / 0.9 * (np.exp(-0.3 * v["ts"]) - np.exp(-1.2 * v["ts"]))], axis=-1)),
    ("ode(-state * time, b, ts, t0=0.25, stiff=1, rtol=1e-10, atol=1e-12)",
     lambda v: v["b"] * np.exp(-(v["ts"] ** 2 - 0.25**2) / 2)[:, None]),
    ("recurrence(0.5, 0.9 * prev + a[t], 3)", lambda v: _loop(0.5, lambda h, t: 0.9 * h + v["a"][t], 3)),
    ("recurrence(b, 0.5 * prev + M[1, t - 1], 3)", lambda v: _loop(v["b"], lambda h, t: 0.5 * h + v["M"][1, t - 1], 3)),
    ("recurrence(a, logsumexp(transpose(S) + prev, axis=-1) + M[0, t], 2)",
     lambda v: _loop(v["a"], lambda h, t: sp.logsumexp(v["S"].T + h, axis=-1) + v["M"][0, t], 2)),
]


def _loop(init: Any, step: Any, n: int) -> np.ndarray:
    """A recurrence the plain way: h[0] = init, h[t] = step(h[t - 1], t)."""
    out = [np.asarray(init, dtype=float)]
    for t in range(1, n):
        out.append(np.asarray(step(out[-1], t), dtype=float))
    return np.stack(out)


def test_every_function_has_a_case() -> None:
    covered = {n.func for text, _ in CASES for n in expr.walk(expr.parse(text, "x")) if isinstance(n, expr.Call)}
    assert covered == set(FUNCTIONS)


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_expression_matches_numpy(text: str, expected: Any) -> None:
    import jax.numpy as jnp

    from service.language.shapes import ShapeChecker, Symbol
    from workers.lower import compile_expr

    node = expr.parse(text, "x")
    got = np.asarray(compile_expr(node)({k: jnp.asarray(v) for k, v in VALUES.items()}))
    want = np.asarray(expected(VALUES))
    # an ODE solve is exact to its tolerances (asked for 1e-10 here), not to the last bits
    np.testing.assert_allclose(got, want, rtol=1e-7 if "ode(" in text else 1e-12, atol=1e-14)
    # the validator's static shape is the shape JAX produces
    shape = ShapeChecker({k: Symbol("data", v.shape, v) for k, v in VALUES.items()}).shape(node)
    assert shape == got.shape


PARAM_USES = {
    "Normal": "Normal(0, 1)", "HalfNormal": "HalfNormal(1)", "StudentT": "StudentT(3, 0, 1)",
    "Cauchy": "Cauchy(0, 1)", "HalfCauchy": "HalfCauchy(1)", "Laplace": "Laplace(0, 1)",
    "Logistic": "Logistic(0, 1)", "Exponential": "Exponential(1)", "Gamma": "Gamma(2, 1)",
    "InverseGamma": "InverseGamma(2, 1)", "LogNormal": "LogNormal(0, 1)", "Weibull": "Weibull(1, 2)",
    "Beta": "Beta(2, 2)", "Uniform": "Uniform(0, 1)", "Dirichlet": "Dirichlet(conc)",
    "MultivariateNormal": "MultivariateNormal(loc, scale_tril=L)", "LKJCholesky": "LKJCholesky(3, 2)",
    "LowRankMultivariateNormal": "LowRankMultivariateNormal(loc, L, exp(loc))",
    "GaussianRandomWalk": "GaussianRandomWalk(0.5, num_steps=6)",
    "MixtureSameFamily": "MixtureSameFamily(Categorical(probs), Normal(conc, 1))",
    "MixtureGeneral": "MixtureGeneral(Categorical(probs), Normal(0, 1), StudentT(3, 1, 2), Laplace(conc, 1))",
    "LKJ": "LKJ(3, 2)",
}
OBSERVE_USES = {
    "Bernoulli": ("k01", "Bernoulli(p)"), "BernoulliLogits": ("k01", "BernoulliLogits(z)"),
    "BernoulliProbs": ("k01", "BernoulliProbs(p)"), "Binomial": ("k", "Binomial(n, p)"),
    "BinomialLogits": ("k", "BinomialLogits(z, n)"), "BinomialProbs": ("k", "BinomialProbs(p, n)"),
    "Poisson": ("k", "Poisson(lam)"), "ZeroInflatedPoisson": ("k", "ZeroInflatedPoisson(0.3, lam)"),
    "NegativeBinomial2": ("k", "NegativeBinomial2(lam, 2)"), "BetaBinomial": ("k", "BetaBinomial(2, 2, n)"),
    "Categorical": ("c", "Categorical(probs)"), "CategoricalLogits": ("c", "CategoricalLogits(logits3)"),
    "CategoricalProbs": ("c", "CategoricalProbs(probs)"),
}


def test_every_distribution_has_a_use() -> None:
    assert set(PARAM_USES) | set(OBSERVE_USES) == set(DISTRIBUTIONS)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_every_distribution_lowers_to_a_finite_log_density(name: str) -> None:
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    from service.language.validate import validate
    from workers.lower import lower

    data = {"conc": [1.0, 2.0, 3.0], "loc": [0.0, 1.0], "L": [[1.0, 0.0], [0.5, 1.0]], "k01": [0, 1, 1],
            "k": [0, 3, 5], "n": [5, 5, 5], "c": [0, 2, 1], "probs": [0.2, 0.3, 0.5], "logits3": [0.0, 1.0, -1.0]}
    params: dict[str, str] = {"p": "Beta(2, 2)", "z": "Normal(0, 1)", "lam": "Gamma(2, 1)"}
    observe = {}
    if name in PARAM_USES:
        params["x"] = PARAM_USES[name]
    else:
        target, use = OBSERVE_USES[name]
        observe[target] = use
    model = validate({"spec": 1, "data": data, "params": params, "observe": observe})
    fn = lower(model)
    arrays = {k: jnp.asarray(v) for k, v in model.data.items()}
    trace = handlers.trace(handlers.seed(fn, jax.random.PRNGKey(0))).get_trace(arrays)
    total = sum(float(jnp.sum(site["fn"].log_prob(site["value"]))) for site in trace.values()
                if site["type"] == "sample")
    assert np.isfinite(total)
    if name in PARAM_USES:
        assert tuple(trace["x"]["value"].shape) == model.variables["x"].shape


GROUPED = {
    "spec": 1,
    "data": {"y": [0.5, 1.2, -0.3, 2.2, 0.9, 1.1], "x": [0.1, -1.0, 0.4, 2.0, 0.3, -0.2],
             "g": [0, 2, 1, 1, 0, 2], "h": [1, 0, 1, 0, 1, 1], "Z": [[1.0, 0.5]] * 6},
    "coords": {"grp": ["a", "b", "c"], "k": ["u", "v"], "two": ["p", "q"]},
    "params": {"a": {"dist": "Normal(0, 1)", "dims": ["grp"]}, "b": {"dist": "Normal(0, 1)", "dims": ["grp"]},
               "c": {"dist": "Normal(0, 1)", "dims": ["two"]},
               "W": {"dist": "Normal(0, 1)", "dims": ["grp", "k"]}, "V": {"dist": "Normal(0, 1)", "dims": ["grp", "k"]},
               "sigma": "HalfNormal(1)"},
    "define": {"m": "a[g] + b[g] * x + c[h] + sum((W[g] + V[g]) * Z, axis=1)"},
    "observe": {"y": "Normal(m, sigma)"},
}
"""a and b share index g (stacked), W and V too (2-D rows, stacked apart from a and b: another shape); c is
gathered by h alone."""


def test_shared_gathers_are_found_by_index() -> None:
    from service.language.loader import load_file
    from service.language.validate import validate
    from tests.conftest import EXAMPLES
    from workers.lower import shared_gathers

    assert {k: set(v) for k, v in shared_gathers(validate(GROUPED)).items()} == {"g": {"a", "b", "W", "V"}}
    regression = validate(load_file(EXAMPLES / "hierarchical_regression.yaml"))
    assert {k: set(v) for k, v in shared_gathers(regression).items()} == {"county": {"a", "b"}}
    assert shared_gathers(validate(load_file(EXAMPLES / "hierarchical_logistic.yaml"))) == {}  # alpha[g] alone


def test_a_shared_gather_gives_the_same_density_and_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gathered values are exact; the gradient's one scatter-add may round its sums differently from one per
    name (here the last bit of one element), so draws are a function of this lowering too, as of XLA's options."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import initialize_model

    import workers.lower as lowering
    from service.language.validate import validate

    model = validate(GROUPED)
    data = {k: jnp.asarray(v) for k, v in model.data.items()}

    def potential_and_gradient() -> tuple[np.ndarray, np.ndarray]:
        info = initialize_model(jax.random.PRNGKey(3), lowering.lower(model), model_args=(data,))
        z = jax.tree.map(lambda v: v + 0.37, info.param_info.z)
        value, grad = jax.jit(jax.value_and_grad(info.potential_fn))(z)
        return np.asarray(value), np.concatenate([np.ravel(g) for g in jax.tree.leaves(grad)])

    shared = potential_and_gradient()
    monkeypatch.setattr(lowering, "shared_gathers", lambda model: {})
    plain = potential_and_gradient()
    assert np.isfinite(shared[0]) and np.any(shared[1] != 0)
    np.testing.assert_allclose(shared[0], plain[0], rtol=1e-14)
    np.testing.assert_allclose(shared[1], plain[1], rtol=1e-13, atol=1e-14)


def test_a_shared_gather_stacks_only_names_of_one_dtype() -> None:
    """Integer data gathered by the same index as float params is gathered on its own: it stays integer."""
    import jax.numpy as jnp

    from workers.lower import compile_expr

    env = {"a": jnp.asarray([0.5, 1.5, 2.5]), "b": jnp.asarray([1.0, 2.0, 3.0]), "n": jnp.asarray([3, 40, 500]),
           "g": jnp.asarray([2, 0, 1, 2])}
    gathers = {"g": ("a", "b", "n")}
    total = compile_expr(expr.parse("a[g] + b[g] * n[g]", "x"), gathers=gathers)(dict(env))
    np.testing.assert_array_equal(np.asarray(total), [2.5 + 3 * 500, 0.5 + 3, 1.5 + 2 * 40, 2.5 + 3 * 500])
    counts = compile_expr(expr.parse("n[g]", "x"), gathers=gathers)(dict(env))
    assert counts.dtype == env["n"].dtype and np.array_equal(np.asarray(counts), [500, 3, 40, 500])
