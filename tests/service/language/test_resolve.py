"""Shapes on their own: ordered drafts resolved to a Model, shape problems at their paths, event-shape rules."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.exceptions import Problem
from service.language import expr, names, resolve
from service.language.catalog import Event
from service.language.ir import Define, Model, Param
from service.language.sections import read
from service.language.shapes import ShapeChecker, ShapeError, Symbol


def resolved(**sections: Any) -> tuple[Model | None, list[tuple[str, str]]]:
    problems: list[Problem] = []
    read_ = read({"spec": 1, **sections}, problems)
    ordered = names.order(read_.drafts, problems)
    assert problems == []  # only the shapes stage speaks below
    model = resolve.resolve(read_, ordered, problems)
    return model, [(p.path, p.message) for p in problems]


def test_shapes_from_distributions_dims_shape_and_expressions() -> None:
    model, problems = resolved(
        data={"y": [1.0, 2.0, 3.0], "J": 3, "X": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "I": [[1.0, 0.0], [0.0, 1.0]]},
        coords={"g": ["a", "b", "c"]},
        params={"a": {"dist": "Normal(0, 1)", "dims": ["g"], "label": "alpha"}, "b": {"dist": "Normal(0, 1)",
                                                                                      "shape": ["J", 2]},
                "m": "MultivariateNormal(loc=a[0:2], covariance_matrix=I)", "L": "LKJCholesky(J, 1.0)",
                "s": "HalfNormal(1)"},
        define={"eta": "X @ m + a", "rows": {"expr": "b[:, 0]", "dims": ["g"], "keep": False}},
        observe={"y": "Normal(eta, s)"},
    )
    assert problems == [] and model is not None
    shapes = {n.name: (type(n).__name__, n.shape, n.dims) for n in model.nodes}
    assert shapes == {"a": ("Param", (3,), ("g",)), "b": ("Param", (3, 2), ("b_dim_0", "b_dim_1")),
                      "m": ("Param", (2,), ("m_dim_0",)), "L": ("Param", (3, 3), ("L_dim_0", "L_dim_1")),
                      "s": ("Param", (), ()), "eta": ("Define", (3,), ("eta_dim_0",)),
                      "rows": ("Define", (3,), ("g",))}
    a, m, lkj = (model.variables[k] for k in ("alpha", "m", "L"))
    assert isinstance(m, Param) and m.batch_shape == () and m.dist.event_shape == (2,)
    assert isinstance(lkj, Param) and lkj.dist.static == (("dimension", 3),) and lkj.dist.args == (
        ("concentration", expr.parse("1.0", "")),)
    assert isinstance(a, Param) and a.output == "alpha"
    rows = model.variables["rows"]
    assert isinstance(rows, Define) and not rows.keep
    (obs,) = model.observes
    assert (obs.name, obs.shape, obs.batch_shape) == ("y", (3,), (3,))


@pytest.mark.parametrize(("params", "define", "path", "message"), [
    ({"a": {"dist": "Normal(z, 1)", "dims": ["g"]}}, {}, "params.a",
     "shape mismatch: distribution arguments have shape (2,), declared shape is (3,)"),
    ({"a": {"dist": "Normal(0, 1)", "dims": ["h"]}}, {}, "params.a.dims",
     "unknown coordinate(s) h; define them under coords"),
    ({"a": {"dist": "Normal(0, 1)", "shape": ["y"]}}, {}, "params.a.shape[0]",
     "must be a positive integer or the name of positive integer scalar data"),
    ({"a": {"dist": "Normal(0, 1)", "shape": [0]}}, {}, "params.a.shape[0]",
     "must be a positive integer or the name of positive integer scalar data"),
    ({"a": {"dist": "Dirichlet(z)", "shape": [3, 3]}}, {}, "params.a",
     "shape mismatch: Dirichlet draws have event shape (2,), declared shape is (3, 3)"),
    ({"a": "LKJCholesky(1, 1.0)"}, {}, "params.a",
     "LKJCholesky: dimension must be an integer >= 2 (literal or integer scalar data)"),
    ({"a": "Poisson(3)"}, {}, "params.a",
     "Poisson is discrete; NUTS samples continuous params only (observe discrete data, or marginalise discrete "
     "unknowns)"),
    ({"a": "Normal(0, 1)"}, {"d": {"expr": "z", "dims": ["g"]}}, "define.d",
     "shape mismatch: expression has shape (2,), dims give (3,)"),
    ({"a": "Normal(0, 1)"}, {"d": {"expr": "y + z"}}, "define.d.expr",
     "shape mismatch: cannot broadcast (3,) with (2,)"),
    ({"a": "Normal(0, 1)"}, {"d": {"expr": "y", "dims": ["h"]}}, "define.d.dims",
     "unknown coordinate(s) h; define them under coords"),
    ({"a": "Normal(0, 1)"}, {"d": "y + z"}, "define.d", "shape mismatch: cannot broadcast (3,) with (2,)"),
])
def test_shape_problems(params: dict[str, Any], define: dict[str, Any], path: str, message: str) -> None:
    model, problems = resolved(data={"y": [1.0, 2.0, 3.0], "z": [1.0, 2.0]}, coords={"g": ["a", "b", "c"]},
                               params=params, define=define)
    assert model is None
    assert problems == [(path, message)]


def test_a_node_with_a_problem_keeps_its_dependents_quiet() -> None:
    model, problems = resolved(data={"z": [1.0, 2.0]}, params={"a": "Normal(z, 1)", "b": "Normal(e, 1)"},
                               define={"d": "unknown_name", "e": "d[3] + a"})
    assert model is None and problems == [("define.d", "unknown name 'unknown_name'")]
    _, problems = resolved(params={"a": {"dist": "Normal(0, 1)", "dims": ["h"]}, "b": "Normal(a, 1)"},
                               define={"c": "a[5]"})
    assert problems == [("params.a.dims", "unknown coordinate(s) h; define them under coords")]


def test_a_value_problem_does_not_stop_shape_checks() -> None:
    model, problems = resolved(params={"a": "Normal(0, -1)"}, define={"d": "a[0]"})
    assert model is None
    assert problems == [("params.a", "Normal: scale must be positive, got -1"),
                        ("define.d", "too many indices (1) for an array of shape ()")]


def test_observations_must_name_data_of_the_distributions_shape() -> None:
    model, problems = resolved(data={"y": [1.0, 2.0, 3.0], "k": [0, 3]}, params={"a": "Normal(0, 1)"},
                               define={"d": "a"},
                               observe={"y": "Normal(a, 1)", "a": "Normal(0, 1)", "d": "Normal(0, 1)",
                                        "nope": "Normal(0, 1)", "k": "Normal(y, 1)"})
    assert model is None
    assert problems == [
        ("observe.a", "'a' is not a data variable (param); observe names data to model"),
        ("observe.d", "'d' is not a data variable (define); observe names data to model"),
        ("observe.nope", "'nope' is not a data variable (unknown name); observe names data to model"),
        ("observe.k", "shape mismatch: distribution has shape (3,), data 'k' have shape (2,)"),
    ]


def test_observed_support_is_checked_once_the_shape_fits() -> None:
    _, problems = resolved(data={"k": [0, 3, -1]}, params={"r": "Exponential(1)"}, observe={"k": "Poisson(r)"})
    assert problems == [("data.k", "must be non-negative integers for Poisson (observed in observe.k)")]


def test_param_elements_are_limited_in_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolve, "MAX_PARAM_ELEMENTS", 10)
    model, problems = resolved(params={"a": {"dist": "Normal(0, 1)", "shape": [6]},
                                       "b": {"dist": "Normal(0, 1)", "shape": [5]}, "c": "Normal(0, -1)"})
    assert model is None
    assert problems == [("params.b", "params have more than 10 elements in all")]  # and nothing after it


@pytest.mark.parametrize(("event", "shapes", "static", "expected"), [
    (Event.SCALAR, {"loc": (3,), "scale": (2, 1)}, {}, ((2, 3), ())),
    (Event.SCALAR, {}, {}, ((), ())),
    (Event.CATEGORICAL, {"probs": (4, 3)}, {}, ((4,), ())),
    (Event.CATEGORICAL, {"logits": (3,)}, {}, ((), ())),
    (Event.SIMPLEX, {"concentration": (2, 5)}, {}, ((2,), (5,))),
    (Event.MVN, {"loc": (4, 3), "scale_tril": (3, 3)}, {}, ((4,), (3,))),
    (Event.MVN, {"precision_matrix": (2, 2)}, {}, ((), (2,))),
    (Event.LKJ, {"concentration": ()}, {"dimension": 4}, ((), (4, 4))),
])
def test_event_shapes(event: Event, shapes: dict[str, tuple[int, ...]], static: dict[str, int],
                      expected: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    assert resolve.event_shapes(event, shapes, static) == expected


@pytest.mark.parametrize(("event", "shapes", "message"), [
    (Event.SCALAR, {"loc": (3,), "scale": (2,)}, "cannot broadcast"),
    (Event.CATEGORICAL, {"probs": ()}, "probs/logits must be a vector"),
    (Event.SIMPLEX, {"concentration": (1,)}, "length >= 2"),
    (Event.MVN, {"covariance_matrix": (2, 3)}, "must be square, got shape (2, 3)"),
    (Event.MVN, {"loc": (3,), "covariance_matrix": (2, 2)}, "loc has length 3, the matrix is 2x2"),
])
def test_event_shapes_refuse_disagreeing_arguments(event: Event, shapes: dict[str, tuple[int, ...]],
                                                   message: str) -> None:
    with pytest.raises(ShapeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve.event_shapes(event, shapes, {})


def test_static_int() -> None:
    checker = ShapeChecker({"J": Symbol("data", (), np.asarray(3)), "F": Symbol("data", (), np.asarray(3.0)),
                            "V": Symbol("data", (2,), np.asarray([1, 2])), "p": Symbol("param", ())})
    known = {k: resolve.static_int(v, checker) for k, v in
             {"int": 4, "text": "5", "literal": expr.parse("6", ""), "data": "J", "bool": True, "float data": "F",
              "vector data": "V", "param": "p", "float": "2.5", "junk": "("}.items()}
    assert known == {"int": 4, "text": 5, "literal": 6, "data": 3, "bool": None, "float data": None,
                     "vector data": None, "param": None, "float": None, "junk": None}


@pytest.mark.parametrize(("params", "define", "path", "message"), [
    # numpy stops at 32 dimensions: a 33-dimensional shape was a plain-text 500
    ({"a": {"dist": "Normal(0, 1)", "shape": [1] * 33}}, {}, "params.a.shape", "33 dimensions; at most 8 are allowed"),
    ({"a": {"dist": "Normal(0, 1)", "dims": ["g"] * 9}}, {}, "params.a.dims", "9 dimensions; at most 8 are allowed"),
    ({"a": "Normal(0, 1)"}, {"d": {"expr": "y", "dims": ["g"] * 40}}, "define.d.dims",
     "40 dimensions; at most 8 are allowed"),
    # indexing adds dimensions: a chain of gathers would reach numpy's limit
    ({"a": "Normal(0, 1)"}, {"d": "y[i8][i8]"}, "define.d", "y[i8][i8] would have 15 dimensions; at most 8"),
    ({"a": {"dist": "Normal(0, 1)", "shape": [2**32, 2**32]}}, {}, "params.a",
     "declared shape (4294967296, 4294967296) has 18446744073709551616 elements; params have at most 200000 in all"),
    # JAX raises for an integer to a negative integer power (a traceback in the worker)
    ({"a": "Normal(0, 1)"}, {"d": "n ** -1"}, "define.d", "n is an integer and the exponent -1 is negative"),
    ({"a": "Normal(0, 1)"}, {"d": "pow(n[0], k)"}, "define.d", "n[0] is an integer and the exponent k is negative"),
    ({"a": "Normal(0, 1)"}, {"d": "(n + 1) ** (k * 2)"}, "define.d",
     "n + 1 is an integer and the exponent k * 2 may be negative"),
])
def test_dimension_and_power_problems(params: dict[str, Any], define: dict[str, Any], path: str,
                                      message: str) -> None:
    data = {"y": [1.0, 2.0, 3.0], "n": [1, 2, 3], "k": -2, "i8": np.zeros((1,) * 8, int).tolist()}
    model, problems = resolved(data=data, coords={"g": ["a", "b", "c"]}, params=params, define=define)
    assert model is None
    assert len(problems) == 1 and problems[0][0] == path and message in problems[0][1], problems


@pytest.mark.parametrize("define", ["n ** 2", "(1.0 * n) ** -1", "n ** 0.5", "a ** n", "2 ** a", "n ** m"])
def test_powers_jax_computes(define: str) -> None:
    model, problems = resolved(data={"n": [1, 2, 3], "m": [0, 1, 2]}, params={"a": "HalfNormal(1)"},
                               define={"d": define})
    assert problems == [] and model is not None


@pytest.mark.parametrize(("sections", "path", "message"), [
    # each of these validated, sampled, and then crashed result assembly (xarray) in the worker
    ({"coords": {"theta_dim_0": ["a", "b", "c"]}, "params": {"theta": {"dist": "Normal(0, 1)", "shape": [5]}}},
     "coords.theta_dim_0", "names dimension theta_dim_0 of 'theta', of size 5, but has 3 labels"),
    ({"data": {"y": [1.0, 2.0]}, "coords": {"y_dim_0": ["a", "b", "c"]}, "params": {"m": "Normal(0, 1)"},
      "observe": {"y": "Normal(m, 1)"}},
     "coords.y_dim_0", "names dimension y_dim_0 of 'y', of size 2, but has 3 labels"),
    ({"coords": {"g": ["a", "b"]}, "params": {"t": {"dist": "Normal(0, 1)", "dims": ["g", "g"]}}},
     "params.t.dims", "g given twice; a variable's dimensions must be distinct"),
])
def test_dimensions_netcdf_cannot_store_are_refused(sections: dict[str, Any], path: str, message: str) -> None:
    model, problems = resolved(**sections)
    assert model is None
    assert len(problems) == 1 and problems[0][0] == path and message in problems[0][1], problems


def test_a_coord_may_label_an_unnamed_dimension_of_its_size() -> None:
    model, problems = resolved(coords={"theta_dim_0": ["a", "b", "c"]},
                               params={"theta": {"dist": "Normal(0, 1)", "shape": [3]}})
    assert problems == [] and model is not None and model.params[0].dims == ("theta_dim_0",)
