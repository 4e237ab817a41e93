"""The `fitted_priors` section: a valid one resolves and round-trips; each problem kind is named by its path."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

from service.exceptions import SpecError
from service.language import fitted
from service.language.describe import describe, graph_spec
from service.language.ir import FittedMember
from service.language.validate import validate


def base() -> dict[str, Any]:
    return {
        "spec": 1,
        "coords": {"k": ["a", "b", "c"]},
        "data": {"y": [0.1, 0.4, -0.2], "hi": 10.0},
        "params": {"mu": "Normal(0, 10)", "tau": "HalfNormal(5)", "beta": {"dist": "Normal(mu, tau)", "dims": ["k"],
                                                                           "reparam": "noncentered"},
                   "p": "Beta(2, 2)", "u": "Uniform(-1, hi)", "w": "Uniform(0, 1)", "s": "Exponential(1)",
                   "simplex": "Dirichlet(conc)"},
        "define": {"m": "mu + 1"},
        "observe": {"y": "Normal(beta, 1)"},
        "fitted_priors": [
            {"source": "hospitals@3", "method": "mvn",
             "members": [{"param": "mu", "shape": [], "support": "real"},
                         {"param": "tau", "shape": [], "support": "positive"},
                         {"param": "beta", "shape": [3], "support": "real"}],
             "components": [{"weight": 0.8, "loc": [0.5, -1.0, 0.1, 0.2, 0.3],
                             "scale_tril": np.diag([1.0, 0.5, 1.0, 1.0, 1.0]).tolist()},
                            {"weight": 0.2, "loc": [0.5, -1.0, 0.1, 0.2, 0.3],
                             "scale_tril": np.diag([10.0, 5.0, 10.0, 10.0, 10.0]).tolist()}]},
            {"source": "elicited@1", "method": "marginal",
             "members": [{"param": "p", "shape": [], "support": "unit"},
                         {"param": "s", "shape": [], "support": "positive"}],
             "marginals": [[{"weight": 1.0, "dist": "Beta", "args": {"concentration1": 13.9, "concentration0": 6.1}}],
                           [{"weight": 0.9, "dist": "LogNormal", "args": {"loc": -1.0, "scale": 0.3}},
                            {"weight": 0.1, "dist": "LogNormal", "args": {"loc": -1.0, "scale": 3.0}}]]},
        ],
    }


def with_conc(doc: dict[str, Any]) -> dict[str, Any]:
    doc["data"]["conc"] = [1.0, 1.0, 1.0]
    return doc


def problems_of(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        validate(with_conc(doc))
    return [(p.path, p.message) for p in info.value.problems]


def test_a_valid_section_resolves_onto_the_model() -> None:
    model = validate(with_conc(base()))
    mvn, marginal = model.fitted
    assert (mvn.source, mvn.method) == ("hospitals@3", "mvn")
    assert mvn.members == (FittedMember("mu", (), "real"), FittedMember("tau", (), "positive"),
                           FittedMember("beta", (3,), "real"))
    assert [c.weight for c in mvn.components] == [0.8, 0.2] and len(mvn.components[0].scale_tril) == 5
    assert [[c.dist for c in mix] for mix in marginal.marginals] == [["Beta"], ["LogNormal", "LogNormal"]]
    assert set(model.fitted_by_param) == {"mu", "tau", "beta", "p", "s"}
    shown = {v["name"]: v for v in describe(model)["variables"]}
    assert shown["tau"]["prior"] == "hospitals@3 (mvn)" and shown["tau"]["dist"] == "HalfNormal(scale=5)"
    assert "reparam" not in shown["beta"]  # ignored under a fitted prior
    assert "prior" not in shown["u"]


def test_the_section_round_trips_through_graph_spec() -> None:
    model = validate(with_conc(base()))
    graph = graph_spec(model)
    rebuilt = validate({**json.loads(json.dumps(graph)), "data": with_conc(base())["data"]})
    assert rebuilt.fitted == model.fitted
    assert rebuilt.structure_key() == model.structure_key() and rebuilt.fingerprint() == model.fingerprint()
    assert graph_spec(rebuilt) == graph
    assert graph["fitted_priors"][0]["members"][1] == {"param": "tau", "shape": [], "support": "positive"}


def test_the_prior_is_part_of_the_structure() -> None:
    plain = base()
    del plain["fitted_priors"]
    changed = base()
    changed["fitted_priors"][0]["components"][0]["loc"][0] = 0.6
    keys = {validate(with_conc(d)).structure_key() for d in (base(), plain, changed)}
    assert len(keys) == 3


def test_interval_supports_are_spelled_canonically() -> None:
    doc = base()
    doc["fitted_priors"] = [{"source": "x", "method": "mvn",
                             "members": [{"param": "u", "shape": [], "support": "interval(-1, 1e1)"},
                                         {"param": "w", "shape": [], "support": "interval(0, 1)"}],
                             "components": [{"weight": 1, "loc": [0, 0], "scale_tril": [[1, 0], [0, 1]]}]}]
    model = validate(with_conc(doc))
    assert [m.support for m in model.fitted[0].members] == ["interval(-1.0, 10.0)", "unit"]
    assert fitted.interval_bounds("interval(-1.0, 10.0)") == (-1.0, 10.0)


def test_a_formula_spec_carries_fitted_priors_by_param_name_or_label() -> None:
    rng = np.random.default_rng(0)
    data = {"y": rng.normal(size=20).tolist(), "x": rng.normal(size=20).tolist()}
    doc: dict[str, Any] = {
        "spec": 1, "formula": "y ~ 1 + x", "data": data,
        "fitted_priors": [{"source": "trial@2", "method": "mvn",
                           "members": [{"param": "Intercept", "shape": [], "support": "real"},
                                       {"param": "sigma", "shape": [], "support": "positive"}],
                           "components": [{"weight": 1.0, "loc": [0.0, 0.0], "scale_tril": [[1, 0], [0.5, 1]]}]}]}
    model = validate(doc)
    names = [m.param for m in model.fitted[0].members]
    assert model.variables["Intercept"].name == names[0] and names[1] == "sigma"
    graph = graph_spec(model)
    assert graph["fitted_priors"][0]["members"][0]["param"] == names[0]  # the pin names the graph's params
    assert validate({**graph, "data": model.data}).structure_key() == model.structure_key()
    doc["fitted_priors"][0]["members"][1]["support"] = "real"
    with pytest.raises(SpecError) as info:
        validate(doc)
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("fitted_priors[0].members[1].support", "the prior has support real, params.sigma declares Exponential "
                                                "(positive)")]


def edit(path: str, value: Any) -> dict[str, Any]:
    """base() with the value at `path` (dots and [i]) replaced; value DELETE removes it."""
    doc = base()
    keys: list[Any] = []
    for part in path.replace("]", "").replace("[", ".").split("."):
        keys.append(int(part) if part.isdigit() else part)
    target: Any = doc
    for key in keys[:-1]:
        target = target[key]
    if value is DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return doc


DELETE = object()
F0, F1 = "fitted_priors[0]", "fitted_priors[1]"
CASES: list[tuple[str, Any, str, str]] = [
    # (where to edit, new value, path of the problem, words of its message)
    ("fitted_priors", {"a": 1}, "fitted_priors", "must be a list"),
    (F0, "mvn", F0, "must be a mapping"),
    (f"{F0}.extra", 1, f"{F0}.extra", "unknown field"),
    (f"{F0}.source", "", f"{F0}.source", "non-empty string"),
    (f"{F0}.source", "x" * 201, f"{F0}.source", "at most 200"),
    (f"{F0}.source", "a\x00b", f"{F0}.source", "control character"),
    (f"{F0}.method", "kde", f"{F0}.method", "mvn, marginal"),
    (f"{F0}.members", [], f"{F0}.members", "non-empty list"),
    (f"{F0}.members[0].param", 3, f"{F0}.members[0].param", "name of a param"),
    (f"{F0}.members[0].param", "nope", f"{F0}.members[0].param", "no param 'nope'"),
    (f"{F0}.members[0].param", "m", f"{F0}.members[0].param", "'m' is a define, not a param"),
    (f"{F0}.members[0].param", "y", f"{F0}.members[0].param", "'y' is data, not a param"),
    (f"{F0}.members[0].param", "p", f"{F1}.members[0].param", "already gets a fitted prior at "
                                                              f"{F0}.members[0]"),
    (f"{F0}.members[0].shape", [1], f"{F0}.members[0].shape", "the prior has shape [1], params.mu has shape []"),
    (f"{F0}.members[0].shape", "3", f"{F0}.members[0].shape", "list of at most"),
    (f"{F0}.members[0].shape", [0], f"{F0}.members[0].shape", "positive sizes"),
    (f"{F0}.members[1].support", "positive_real", f"{F0}.members[1].support", "must be one of real, positive"),
    (f"{F0}.members[1].support", "nonnegative", f"{F0}.members[1].support", "a non-negative param's support is "
                                                                            "positive"),
    (f"{F0}.members[1].support", "interval(2, 1)", f"{F0}.members[1].support", "a < b"),
    (f"{F0}.members[1].support", "unit", f"{F0}.members[1].support",
     "the prior has support unit, params.tau declares HalfNormal (positive)"),
    (f"{F0}.members[0].extra", 1, f"{F0}.members[0].extra", "unknown field"),
    (f"{F0}.marginals", [], f"{F0}.marginals", "takes components, not marginals"),
    (f"{F0}.components", DELETE, f"{F0}.components", "list of 1 to 8"),
    (f"{F0}.components", [{"weight": 0.1, "loc": [0] * 5, "scale_tril": np.eye(5).tolist()}] * 10,
     f"{F0}.components", "list of 1 to 8"),
    (f"{F0}.components[1].weight", 0.3, f"{F0}.components", "the weights sum to 1.1, not 1"),
    (f"{F0}.components[1].weight", -0.2, f"{F0}.components[1].weight", "positive number"),
    (f"{F0}.components[1].weight", True, f"{F0}.components[1].weight", "positive number"),
    (f"{F0}.components[0].loc", [0.0] * 4, f"{F0}.components[0].loc", "a list of 5 numbers, got shape [4]"),
    (f"{F0}.components[0].loc", ["a"] * 5, f"{F0}.components[0].loc", "numbers only"),
    (f"{F0}.components[0].loc[2]", float("nan"), f"{F0}.components[0].loc[2]", "finite"),
    (f"{F0}.components[0].scale_tril", [[1.0]], f"{F0}.components[0].scale_tril", "shape [5, 5]"),
    (f"{F0}.components[0].scale_tril[0]", [1.0, 0.5, 0, 0, 0], f"{F0}.components[0].scale_tril[0][1]",
     "lower triangular"),
    (f"{F0}.components[0].scale_tril[3]", [0.2, 0, 0, 0.0, 0], f"{F0}.components[0].scale_tril[3][3]",
     "diagonal must be positive"),
    (f"{F0}.components[0].scale_tril[4][4]", float("inf"), f"{F0}.components[0].scale_tril[4][4]", "finite"),
    (f"{F0}.components[0].colour", 1, f"{F0}.components[0].colour", "unknown field"),
    (f"{F1}.components", [], f"{F1}.components", "takes marginals, not components"),
    (f"{F1}.marginals", [[]], f"{F1}.marginals", "1 entries for 2 members"),
    (f"{F1}.marginals[0]", [], f"{F1}.marginals[0]", "list of 1 to 8"),
    (f"{F1}.marginals[0][0].dist", "Kumaraswamy", f"{F1}.marginals[0][0].dist", "must be one of Normal"),
    (f"{F1}.marginals[0][0].dist", "Normal", f"{F1}.marginals[0][0].dist",
     "Normal has support real, the member p has support unit"),
    (f"{F1}.marginals[0][0].args", {"concentration1": 1.0}, f"{F1}.marginals[0][0].args",
     "missing concentration0"),
    (f"{F1}.marginals[0][0].args.a", 1.0, f"{F1}.marginals[0][0].args", "unknown a"),
    (f"{F1}.marginals[0][0].args.concentration1", 0.0, f"{F1}.marginals[0][0].args.concentration1",
     "must be positive"),
    (f"{F1}.marginals[0][0].args.concentration1", [1.0, 2.0], f"{F1}.marginals[0][0].args.concentration1",
     "must be a number, got shape [2]"),
    (f"{F1}.marginals[1][0].weight", 0.95, f"{F1}.marginals[1]", "the weights sum to 1.05"),
    (f"{F1}.marginals[1][0].args.loc", "1", f"{F1}.marginals[1][0].args.loc", "must be a number"),
]


@pytest.mark.parametrize(("where", "value", "path", "words"), CASES, ids=[f"{c[0]}={c[1]!r:.20}" for c in CASES])
def test_each_problem_is_named_by_its_path(where: str, value: Any, path: str, words: str) -> None:
    found = problems_of(edit(where, value))
    assert any(p == path and words in m for p, m in found), found


@pytest.mark.parametrize(("param", "support", "words"), [
    ("simplex", "real", "params.simplex declares Dirichlet, whose support a fitted prior cannot replace"),
    ("u", "interval(-1.0, 11.0)", "the prior has support interval(-1.0, 11.0), params.u declares Uniform "
                                  "(interval(-1.0, 10.0))"),
    ("w", "interval(0.0, 2.0)", "params.w declares Uniform (unit)"),
])
def test_supports_must_match_the_declared_distribution(param: str, support: str, words: str) -> None:
    doc = base()
    shape = [3] if param == "simplex" else []
    size = 3 if param == "simplex" else 1
    doc["fitted_priors"] = [{"source": "x", "method": "mvn",
                             "members": [{"param": param, "shape": shape, "support": support}],
                             "components": [{"weight": 1, "loc": [0] * size, "scale_tril": np.eye(size).tolist()}]}]
    found = problems_of(doc)
    assert any(p == "fitted_priors[0].members[0].support" and words in m for p, m in found), found


def test_every_problem_is_collected_at_once() -> None:
    doc = base()
    doc["fitted_priors"][0]["members"][1]["support"] = "real"
    doc["fitted_priors"][0]["components"][0]["weight"] = 0.9
    doc["fitted_priors"][1]["marginals"][0][0]["dist"] = "Gamma"
    paths = {p for p, _ in problems_of(doc)}
    assert paths == {f"{F0}.members[1].support", f"{F0}.components", f"{F1}.marginals[0][0].dist"}


def test_sizes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = base()
    doc["fitted_priors"][0]["members"][2]["shape"] = [1999]
    assert (f"{F0}.components", "the members have 2001 elements in all; a fitted prior has at most 2000") in \
        problems_of(doc)
    monkeypatch.setattr(fitted, "MAX_FITTED_NUMBERS", 40)  # each component has 5 + 25 numbers
    found = problems_of(base())
    assert (f"{F0}.components[1]", "fitted_priors hold more than 40 numbers in all") in found
    many = base()
    many["fitted_priors"] = [copy.deepcopy(many["fitted_priors"][1])] * (fitted.MAX_FITTED_PRIORS + 1)
    assert ("fitted_priors", f"more than {fitted.MAX_FITTED_PRIORS} fitted priors") in problems_of(many)


def test_marginal_arguments_may_be_arrays_of_the_member_shape() -> None:
    doc = base()
    doc["fitted_priors"][1] = {
        "source": "x", "method": "marginal", "members": [{"param": "beta", "shape": [3], "support": "real"}],
        "marginals": [[{"weight": 1.0, "dist": "Normal", "args": {"loc": [0.1, 0.2, 0.3], "scale": 2}}]]}
    del doc["fitted_priors"][0]
    model = validate(with_conc(doc))
    assert model.fitted[0].marginals[0][0].args == (("loc", (0.1, 0.2, 0.3)), ("scale", 2.0))
    assert graph_spec(model)["fitted_priors"][0]["marginals"][0][0]["args"] == {"loc": [0.1, 0.2, 0.3],
                                                                                  "scale": 2.0}
    doc["fitted_priors"][0]["marginals"][0][0]["args"]["loc"] = [0.1, 0.2]
    assert ("fitted_priors[0].marginals[0][0].args.loc", "must be a list of 3 numbers, got shape [2]") in \
        problems_of(doc)
