"""Validation: good specs resolve to the right shapes; bad ones report every problem with its path."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest

from service.exceptions import SpecError
from service.language.describe import describe, graph_spec
from service.language.ir import Param
from service.language.loader import loads
from service.language.validate import validate
from service.sampler import parse_job


def problems_of(doc: Any) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        parse_job(doc)
    return [(p.path, p.message) for p in info.value.problems]


def test_eight_schools_resolves(eight_schools: dict[str, Any]) -> None:
    model = validate(eight_schools)
    theta = model.variables["theta"]
    assert isinstance(theta, Param)
    assert theta.shape == (8,) and theta.dims == ("school",) and theta.noncentered
    assert model.variables["shrinkage"].shape == ()
    assert [o.name for o in model.observes] == ["y"]
    assert model.data["y"].dtype.kind == "i" and model.data["sigma"].dtype.kind == "i"  # ints stay ints


def test_structure_key_ignores_data_values_but_not_shapes(eight_schools: dict[str, Any]) -> None:
    a = validate(eight_schools)
    changed = copy.deepcopy(eight_schools)
    changed["data"]["y"] = [v + 1 for v in changed["data"]["y"]]
    b = validate(changed)
    assert a.structure_key() == b.structure_key()
    assert a.fingerprint() != b.fingerprint()
    changed["data"]["y"] = [float(v) for v in changed["data"]["y"]]
    assert validate(changed).structure_key() != a.structure_key()  # int -> float data compile differently


def test_dependency_order_and_indexed_shapes() -> None:
    doc = {
        "spec": 1,
        "data": {"y": [1.0, 2.0, 3.0, 4.0], "g": [0, 1, 1, 2], "X": [[1, 0], [0, 1], [1, 1], [2, 1]], "J": 3},
        "params": {
            "alpha": {"dist": "Normal(mu, 1)", "shape": ["J"]},
            "mu": "Normal(0, 1)",
            "beta": {"dist": "Normal(0, 1)", "shape": [2]},
            "L": "LKJCholesky(2, 2.0)",
            "w": "Dirichlet(ones3)",
        },
        "define": {"eta": "alpha[g] + X @ beta", "first": "alpha[0]", "tail": "alpha[1:]"},
        "observe": {"y": "Normal(eta, 1)"},
    }
    doc["data"]["ones3"] = [1.0, 1.0, 1.0]
    model = validate(doc)
    names = [n.name for n in model.nodes]
    assert names.index("mu") < names.index("alpha")
    shapes = {n.name: n.shape for n in model.nodes}
    assert shapes == {"mu": (), "alpha": (3,), "beta": (2,), "L": (2, 2), "w": (3,), "eta": (4,), "first": (),
                      "tail": (2,)}


def test_describe_returns_runnable_graph_spec(eight_schools: dict[str, Any]) -> None:
    model = validate(eight_schools)
    info = describe(model)
    assert {v["name"]: v["shape"] for v in info["variables"]} == {"mu": [], "tau": [], "theta": [8], "shrinkage": []}
    again = {**graph_spec(model), "data": eight_schools["data"]}
    assert validate(again).structure_key() == model.structure_key()


BASE: dict[str, Any] = {
    "spec": 1,
    "data": {"y": [28, 8, -3, 7, -1, 1, 18, 12], "sigma": [15, 10, 16, 11, 9, 11, 10, 18],
             "idx": [0, 1, 2, 3, 4, 5, 6, 7], "k": [3, 5, 0, 2], "n": [10, 10, 10, 10]},
    "coords": {"school": ["A", "B", "C", "D", "E", "F", "G", "H"]},
    "params": {"mu": "Normal(0, 5)", "tau": "HalfCauchy(5)",
               "theta": {"dist": "Normal(mu, tau)", "dims": ["school"], "reparam": "noncentered"}},
    "define": {"shrinkage": "1 - tau / (tau + 10)"},
    "observe": {"y": "Normal(theta[idx], sigma)"},
}


def with_(**changes: Any) -> dict[str, Any]:
    """BASE with dotted-path changes; a value of None deletes the key."""
    doc = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return doc


def nested(depth: int) -> Any:
    value: Any = [1.0]
    for _ in range(depth):
        value = [value]
    return value


def test_base_is_valid() -> None:
    parse_job(BASE)


@pytest.mark.parametrize("sampler, adaptation", [
    ({}, "fisher"), ({"dense_mass": True}, "stan"), ({"adaptation": "stan"}, "stan"),
    ({"dense_mass": True, "adaptation": "stan"}, "stan"), ({"dense_mass": False}, "fisher"),
])
def test_the_adaptation_is_fisher_unless_a_dense_mass_matrix_is_asked_for(sampler: dict[str, Any],
                                                                          adaptation: str) -> None:
    _, settings = parse_job({"model": BASE, "sampler": sampler})
    assert settings.adaptation == adaptation


BAD_SPECS: dict[str, tuple[dict[str, Any], str, str]] = {
    # kind: (document, expected path, expected message fragment)
    "python injection": (with_(define__x="__import__('os').system('touch /tmp/chainyard-pwned')"), "define.x",
                         "only named functions"),
    "dunder call": (with_(define__x="__import__('os')"), "define.x", "not allowed"),
    "attribute access": (with_(define__x="theta.sum()"), "define.x", "only named functions"),
    "attribute read": (with_(define__x="mu.real"), "define.x", "attribute access"),
    "lambda": (with_(define__x="(lambda: 1)()"), "define.x", "only named functions"),
    "unknown distribution": (with_(params__mu="Normall(0, 5)"), "params.mu", "did you mean Normal"),
    "function as distribution": (with_(params__mu="exp(1)"), "params.mu", "a function, not a distribution"),
    "distribution in expression": (with_(define__x="Normal(0, 1)"), "define.x", "is a distribution"),
    "unknown name": (with_(observe__y="Normal(thetaa, sigma)"), "observe.y", "unknown name 'thetaa'"),
    "unknown function": (with_(define__x="erfinv(mu)"), "define.x", "unknown function"),
    "too many arguments": (with_(params__mu="Normal(0, 5, 1)"), "params.mu", "at most 2 positional"),
    "unknown keyword": (with_(params__mu="Normal(0, sd=5)"), "params.mu", "has no argument 'sd'"),
    "missing argument": (with_(params__mu="StudentT(loc=0, scale=1)"), "params.mu", "needs argument(s) df"),
    "function arity": (with_(define__x="exp(mu, tau)"), "define.x", "takes 1 argument"),
    "float index": (with_(data__idx=[0.0, 1.5, 2, 3, 4, 5, 6, 7]), "observe.y", "not integer data"),
    "index out of range": (with_(data__idx=[0, 1, 2, 3, 4, 5, 6, 8]), "observe.y", "out of range: max 8"),
    "negative index data": (with_(data__idx=[0, 1, 2, 3, 4, 5, 6, -1]), "observe.y", "out of range: min -1"),
    "literal index out of range": (with_(define__x="theta[8]"), "define.x", "out of range"),
    "index by a param": (with_(define__x="theta[mu]"), "define.x", "indices must be integer data"),
    "NaN in data": (with_(data__sigma=[15, 10, math.nan, 11, 9, 11, 10, 18]), "data.sigma[2]", "NaN"),
    "Inf in data": (with_(data__y=[28, 8, -3, 7, -1, 1, 18, math.inf]), "data.y[7]", "infinite"),
    "string data": (with_(data__y=["a", "b"]), "data.y", "must be numbers"),
    "ragged data": (with_(data__X=[[1, 2], [3]]), "data.X", "rectangular"),
    "shape mismatch in observe": (with_(coords__school=["A", "B", "C"], data__idx=[0, 1, 2, 0, 1, 2, 0, 1],
                                        observe__y="Normal(theta, sigma)"), "observe.y", "cannot broadcast"),
    "shape mismatch in define": (with_(define__x="theta + k"), "define.x", "cannot broadcast"),
    "matmul mismatch": (with_(define__x="theta @ k"), "define.x", "matrix product"),
    "negative literal scale": (with_(params__mu="Normal(0, -1)"), "params.mu", "scale must be positive"),
    "zero scale data": (with_(data__sigma=[15, 10, 0, 11, 9, 11, 10, 18]), "observe.y", "scale must be positive"),
    "probability above one": (with_(params__p="Beta(1, 1)", observe__k="Binomial(n, probs=1.5)"), "observe.k",
                              "between 0 and 1"),
    "cycle": (with_(params__a="Normal(b, 1)", params__b="Normal(a, 1)"), "params.a", "cycle: a -> b -> a"),
    "self reference": (with_(define__x="x + 1"), "define.x", "cycle: x -> x"),
    "observe unknown data": (with_(observe__z="Normal(0, 1)"), "observe.z", "not a data variable"),
    "observe a param": (with_(observe__mu="Normal(0, 1)"), "observe.mu", "not a data variable"),
    "absurd exponent": (with_(define__x="tau ** 100000"), "define.x", "exponent"),
    "deep nesting": (with_(define__x="(" * 5000 + "mu" + ")" * 5000), "define.x", "longer than"),
    "deep function nesting": (with_(define__x="exp(" * 300 + "mu" + ")" * 300), "define.x", "nested"),
    "deep data nesting": (with_(data__z=nested(5000)), "data.z", ""),
    "many data dimensions": (with_(data__z=nested(12)), "data.z", "at most 8"),
    "missing spec version": (with_(spec=None), "spec", "missing"),
    "unsupported spec version": (with_(spec=2), "spec", "unsupported version 2"),
    "unknown section": (with_(priors={"a": 1}), "priors", "unknown section"),
    "unknown param field": (with_(params__theta={"dist": "Normal(0, 1)", "dimz": ["school"]}), "params.theta.dimz",
                            "unknown field"),
    "unknown dims": (with_(params__theta={"dist": "Normal(mu, tau)", "dims": ["schol"]}), "params.theta.dims",
                     "unknown coordinate"),
    "dims and dist disagree": (with_(params__theta={"dist": "Normal(k, 1)", "dims": ["school"]}), "params.theta",
                               "shape mismatch"),
    "discrete param": (with_(params__z="Poisson(3)"), "params.z", "discrete"),
    "noncentered on Gamma": (with_(params__g={"dist": "Gamma(2, 1)", "reparam": "noncentered"}),
                             "params.g.reparam", "location-scale"),
    "duplicate name": (with_(params__y="Normal(0, 1)"), "params.y", "already used in data"),
    "reserved name": (with_(params__chain="Normal(0, 1)"), "params.chain", "reserved"),
    "bad name": (with_(define={"2x": "mu"}), "define.2x", "names use letters"),
    "poisson with negative data": (with_(params__lam="Exponential(1)", observe__y="Poisson(lam)"), "data.y",
                                   "non-negative integers"),
    "bernoulli outside 0/1": (with_(params__p="Beta(1, 1)", observe__k="Bernoulli(p)"), "data.k", "0 or 1"),
    "binomial above total_count": (with_(data__n=[10, 4, 10, 10], params__p="Beta(1, 1)",
                                         observe__k="Binomial(n, p)"), "data.k", "total_count"),
    "sampler out of range": ({"model": BASE, "sampler": {"chains": 0, "target_accept": 1.5}}, "sampler.chains",
                             "greater than or equal to 1"),
    "sampler unknown field": ({"model": BASE, "sampler": {"chainz": 2}}, "sampler.chainz", "Extra inputs"),
    "fisher adaptation with a dense mass matrix": ({"model": BASE, "sampler": {"dense_mass": True,
                                                                              "adaptation": "fisher"}},
                                                   "sampler.adaptation", "diagonal mass matrix only"),
    "unknown adaptation": ({"model": BASE, "sampler": {"adaptation": "nutpie"}}, "sampler.adaptation",
                           "'stan' or 'fisher'"),
    "keep unknown variable": ({"model": BASE, "sampler": {"keep": ["thetaa"]}}, "sampler.keep", "unknown variable"),
    "bad model inside a job": ({"model": with_(params__mu="Normal(0, -1)")}, "model.params.mu", "positive"),
    "not a mapping": ([1, 2, 3], "", "a model spec is a mapping"),
    "no params": (with_(params=None, observe=None, define=None), "params", "at least one param"),
    "reduction axis out of range": (with_(define__x="sum(theta, axis=1)"), "define.x", "axis 1 is out of range"),
    "axis not a literal": (with_(define__x="mean(theta, axis=mu)"), "define.x", "must be an integer literal"),
    "axis a float": (with_(define__x="mean(theta, axis=0.5)"), "define.x", "must be an integer literal"),
    "keyword a function lacks": (with_(define__x="sum(theta, keepdims=1)"), "define.x",
                                 "no keyword argument 'keepdims'; it takes axis="),
    "keyword on an elementwise function": (with_(define__x="exp(theta, axis=0)"), "define.x",
                                           "exp() takes no keyword argument 'axis'"),
    "cholesky of a vector": (with_(define__x="cholesky(theta)"), "define.x", "needs a square matrix"),
    "cholesky of a rectangle": (with_(define__x="cholesky(outer(theta, k))"), "define.x",
                                "needs a square matrix (..., n, n), got (8, 4)"),
    "solve with the wrong right-hand side": (with_(define__x="triangular_solve(outer(theta, theta), k)"),
                                             "define.x", "solves an (n, n) system"),
    "eye of data": (with_(define__x="eye(n)"), "define.x", "eye(n) must be an integer literal"),
    "eye of zero": (with_(define__x="eye(0)"), "define.x", "n >= 1"),
    "diag of a scalar": (with_(define__x="diag(mu)"), "define.x", "a vector or a matrix"),
    "outer of a matrix": (with_(define__x="outer(outer(k, k), k)"), "define.x", "two vectors"),
    "kernel with a vector scale": (with_(define__x="cov_exp_quad(k, theta, 1)"), "define.x", "scalars alpha, rho"),
    "concatenate nothing": (with_(define__x="concatenate()"), "define.x", "one or more arguments"),
    "concatenate scalars": (with_(define__x="concatenate(mu, tau)"), "define.x", "at least 1"),
    "concatenate mismatched": (with_(define__x="concatenate(outer(k, k), outer(k, theta))"), "define.x",
                               "differ off axis 0"),
    "stack mismatched": (with_(define__x="stack(theta, k)"), "define.x", "arrays of one shape"),
    "mixture mixed by a normal": (with_(params__m="MixtureSameFamily(Normal(0, 1), Normal(k, 1))"),
                                  "params.m.mixing_distribution", "mixed by one of Categorical"),
    "mixture of too few components": (with_(data__w=[0.5, 0.5], params__m="MixtureSameFamily(Categorical(w), "
                                                                           "Normal(k, 1))"),
                                      "params.m", "must end in the 2 components"),
    "mixture nested in a mixture": (with_(data__w=[0.5, 0.5], params__m="MixtureSameFamily(Categorical(w), "
                                          "MixtureSameFamily(Categorical(w), Normal(0, 1)))"),
                                    "params.m.component_distribution", "cannot be nested"),
    "mixture of discrete components as a param": (with_(data__w=[0.25] * 4, params__m="MixtureSameFamily("
                                                        "Categorical(w), Poisson(n))"), "params.m", "is discrete"),
    "bad argument inside a mixture": (with_(data__w=[0.25] * 4, params__m="MixtureSameFamily(Categorical(w), "
                                            "Normal(k, -1))"), "params.m.component_distribution", "positive"),
    "general mixture of one component": (with_(data__w=[1.0], params__m="MixtureGeneral(Categorical(w), "
                                               "Normal(0, 1))"), "params.m", "needs 2 to 32 component"),
    "general mixture of too many components": (with_(data__w=[0.5, 0.5], params__m="MixtureGeneral(Categorical(w), "
                                                     "Normal(0, 1), Normal(1, 1), Normal(2, 1))"),
                                               "params.m", "weighs 2 components, 3 are given"),
    "general mixture of two supports": (with_(data__w=[0.5, 0.5], params__m="MixtureGeneral(Categorical(w), "
                                              "Normal(0, 1), Gamma(2, 1))"), "params.m",
                                        "share one support"),
    "general mixture of uniforms": (with_(data__w=[0.5, 0.5], params__m="MixtureGeneral(Categorical(w), "
                                          "Uniform(0, 1), Uniform(0, 2))"), "params.m", "Uniform (interval)"),
    "general mixture with a list keyword": (with_(data__w=[0.5, 0.5], params__m="MixtureGeneral(Categorical(w), "
                                                  "component_distributions=Normal(0, 1))"), "params.m",
                                            "takes its components as further arguments"),
    "general mixture of event shapes": (with_(data__w=[0.5, 0.5], params__m="MixtureGeneral(Categorical(w), "
                                              "Normal(0, 1), MultivariateNormal(k, scale_tril=eye(4)))"),
                                        "params.m", "event shapes differ"),
    "general mixture mixed by a normal": (with_(params__m="MixtureGeneral(Normal(0, 1), Normal(0, 1), "
                                                "Normal(1, 1))"), "params.m.mixing_distribution",
                                          "mixed by one of Categorical"),
    "bad argument inside a general mixture": (with_(data__w=[0.5, 0.5], params__m="MixtureGeneral(Categorical(w), "
                                                    "Normal(0, 1), Normal(k, -1))"),
                                              "params.m.component_distributions.1", "positive"),
    "general mixture nested": (with_(data__w=[0.5, 0.5], params__m="MixtureGeneral(Categorical(w), Normal(0, 1), "
                                     "MixtureGeneral(Categorical(w), Normal(0, 1), Normal(1, 1)))"),
                               "params.m.component_distributions.1", "cannot be nested"),
    "recurrence reading past the end": (with_(define__x="recurrence(0.0, prev + y[t + 1], 8)"), "define.x",
                                        "out of range: max 8 >= size 8"),
    "recurrence of length zero": (with_(define__x="recurrence(0.0, prev, 0)"), "define.x", "between 1 and 100000"),
    "recurrence too long": (with_(define__x="recurrence(0.0, prev, 100001)"), "define.x", "between 1 and 100000"),
    "recurrence length from a param": (with_(define__x="recurrence(0.0, prev, mu)"), "define.x",
                                       "integer literal or integer scalar data"),
    "recurrence step of another shape": (with_(define__x="recurrence(0.0, prev + theta, 8)"), "define.x",
                                         "the step has shape (8,), the initial value ()"),
    "recurrence in a recurrence": (with_(define__x="recurrence(0.0, prev + sum(recurrence(0.0, prev, 2)), 4)"),
                                   "define.x", "cannot contain another recurrence"),
    "recurrence index by a param": (with_(define__x="recurrence(0.0, prev + y[t - mu], 8)"), "define.x",
                                    "must be integer data"),
    "factor as a distribution": (with_(factor={"extra": "Normal(mu, 1)"}), "factor.extra", "is a distribution"),
    "factor of an unknown name": (with_(factor={"extra": "log(muu)"}), "factor.extra", "unknown name 'muu'"),
    "factor named like a param": (with_(factor={"mu": "-square(mu)"}), "factor.mu", "already used in params"),
    "recurrence shadowing a variable": (with_(params__t="Normal(0, 1)", define__x="recurrence(0.0, prev + t, 3)"),
                                        "define.x", "rename the model's variable"),
    "ode times not data": (with_(define__x="ode(-state, 1.0, theta)"), "define.x", "must be a vector of data"),
    "ode times not increasing": (with_(data__ts=[1.0, 3.0, 2.0], define__x="ode(-state, 1.0, ts)"), "define.x",
                                 "must increase strictly and come after t0 = 0"),
    "ode times before t0": (with_(data__ts=[1.0, 2.0], define__x="ode(-state, 1.0, ts, t0=1)"), "define.x",
                            "come after t0 = 1"),
    "ode rhs of another shape": (with_(data__ts=[1.0, 2.0], define__x="ode(-state + theta, 1.0, ts)"), "define.x",
                                 "the right-hand side has shape (8,), the initial state ()"),
    "ode unknown option": (with_(data__ts=[1.0, 2.0], define__x="ode(-state, 1.0, ts, method=1)"), "define.x",
                           "no keyword argument 'method'"),
    "ode tolerance out of range": (with_(data__ts=[1.0, 2.0], define__x="ode(-state, 1.0, ts, rtol=2)"), "define.x",
                                   "rtol must be between 0 and 1"),
    "ode option not a literal": (with_(data__ts=[1.0, 2.0], define__x="ode(-state, 1.0, ts, atol=mu)"), "define.x",
                                 "must be a number literal"),
    "ode in an ode": (with_(data__ts=[1.0, 2.0], define__x="ode(-state + sum(ode(-state, 1.0, ts)), 1.0, ts)"),
                      "define.x", "cannot contain an ode or a recurrence"),
    "add_diag of the wrong length": (with_(define__x="add_diag(outer(k, k), theta)"), "define.x",
                                     "a scalar or of shape (4,)"),
}


@pytest.mark.parametrize("kind", list(BAD_SPECS))
def test_bad_spec_is_refused_with_its_path(kind: str) -> None:
    doc, path, fragment = BAD_SPECS[kind]
    found = problems_of(doc)
    assert any(p == path and fragment in m for p, m in found), found


def test_injection_never_runs() -> None:
    marker = Path("/tmp/chainyard-pwned")
    marker.unlink(missing_ok=True)
    for kind in ("python injection", "dunder call"):
        problems_of(BAD_SPECS[kind][0])
    assert not marker.exists()


def test_every_problem_is_reported_at_once() -> None:
    doc = with_(params__mu="Normal(0, -1)", define__x="theta[9]", observe__z="Normal(0, 1)",
                data__sigma=[1, 2, math.inf, 4, 5, 6, 7, 8])
    paths = {p for p, _ in problems_of(doc)}
    assert {"params.mu", "define.x", "observe.z", "data.sigma[2]"} <= paths


def test_deeply_nested_document_is_refused() -> None:
    with pytest.raises(SpecError, match="nested too deeply"):
        loads('{"spec": 1, "data": {"z": ' + "[" * 100_000 + "]" * 100_000 + "}}")


def test_yaml_aliases_are_refused() -> None:
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n"
    with pytest.raises(SpecError, match="aliases"):
        loads(bomb)


def test_oversized_document_is_refused() -> None:
    with pytest.raises(SpecError, match="limit is 1000"):
        loads("spec: 1\n" + "#" * 2000, max_bytes=1000)


def test_yaml_and_json_read_the_same(eight_schools: dict[str, Any]) -> None:
    import json

    assert loads(json.dumps(eight_schools)) == eight_schools
    with pytest.raises(SpecError, match="not valid YAML"):
        loads("spec: [1, 2")


def test_a_mixture_round_trips_through_the_graph_spec() -> None:
    doc = {"spec": 1, "data": {"y": [0.5, 1.2], "w": [0.3, 0.7], "m": [-1.0, 1.5]},
           "params": {"theta": "MixtureSameFamily(Categorical(w), Normal(m, 1))", "sigma": "HalfNormal(1)"},
           "observe": {"y": "MixtureSameFamily(CategoricalProbs(w), Normal(stack(theta, theta + 1), sigma))"}}
    model = validate(doc)
    assert model.variables["theta"].shape == ()
    again = validate({**graph_spec(model), "data": doc["data"]})
    assert again.structure_key() == model.structure_key()


def test_a_recurrence_length_from_data_keys_the_compiled_program() -> None:
    """Two models differing only in the integer data giving a recurrence's length compile apart (the length is a
    constant of the program); other integer scalars do not matter."""
    def doc(n: int, other: int) -> dict[str, Any]:
        return {"spec": 1, "data": {"n": n, "other": other, "y": [0.1, 0.2, 0.3, 0.4]},
                "params": {"mu": "Normal(0, 1)"},
                "define": {"s": "sum(recurrence(mu, 0.5 * prev + y[t], n))"}, "observe": {"y": "Normal(s, 1)"}}
    key = validate(doc(3, 1)).structure_key()
    assert validate(doc(3, 2)).structure_key() == key
    assert validate(doc(4, 1)).structure_key() != key
    assert validate(doc(4, 1)).static_data() == {"n": 4}


def test_a_factor_adds_to_the_log_density_and_round_trips() -> None:
    doc = with_(factor={"soft_sum_to_zero": "normal_lpdf(sum(theta), 0, 0.01)"})
    model = validate(doc)
    assert [(f.name, f.shape) for f in model.factors] == [("soft_sum_to_zero", ())]
    spec = graph_spec(model)
    assert spec["factor"] == {"soft_sum_to_zero": "normal_lpdf(sum(theta), 0, 0.01)"}
    assert validate({**spec, "data": doc["data"]}).structure_key() == model.structure_key()
    assert model.structure_key() != validate(BASE).structure_key()
