"""Reading sections on their own: drafts as written, distributions bound, field problems with their paths."""

from __future__ import annotations

from typing import Any

import pytest

from service.exceptions import Problem
from service.language import expr
from service.language.catalog import DISTRIBUTIONS
from service.language.sections import DefineDraft, ParamDraft, Sections, dist, read


def read_doc(**sections: Any) -> tuple[Sections, list[tuple[str, str]]]:
    problems: list[Problem] = []
    out = read({"spec": 1, **sections}, problems)
    return out, [(p.path, p.message) for p in problems]


def test_drafts_keep_what_was_written() -> None:
    out, problems = read_doc(
        data={"y": [1.0, 2.0], "J": 2},
        coords={"g": ["a", "b"]},
        params={"mu": "Normal(0, 1)",
                "theta": {"dist": "Normal(mu, scale=2)", "dims": ["g"], "reparam": "noncentered", "label": "th"},
                "z": {"dist": "Normal(0, 1)", "shape": ["J", 3], "keep": False}},
        define={"d": "mu + 1", "e": {"expr": "theta * 2", "dims": ["g"]}},
        observe={"y": {"dist": "Normal(theta, 1)"}},
    )
    assert problems == []
    assert list(out.data) == ["y", "J"] and out.coords == {"g": ["a", "b"]}
    mu, theta, z = out.params
    assert mu == ParamDraft("mu", mu.dist, None, None, False, "params.mu")
    assert mu.dist is not None and mu.dist.path == "params.mu"
    assert theta.dims == ["g"] and theta.noncentered and theta.label == "th" and theta.keep
    assert theta.dist is not None and theta.dist.path == "params.theta.dist"
    assert {k: expr.to_text(v) for k, v in theta.dist.args.items()} == {"loc": "mu", "scale": "2"}
    assert z.shape == ["J", 3] and not z.keep and not z.noncentered
    d, e = out.defines
    assert isinstance(d, DefineDraft) and d.path == "define.d" and d.node == expr.parse("mu + 1", "")
    assert e.path == "define.e" and e.where == "define.e.expr" and e.dims == ["g"] and d.where == "define.d"
    assert out.observes["y"] is not None and out.observes["y"].path == "observe.y.dist"
    assert [x.name for x in out.drafts] == ["mu", "theta", "z", "d", "e"]


@pytest.mark.parametrize(("raw", "args"), [
    ("Normal(0, 1)", {"loc": "0", "scale": "1"}),
    ("Normal(scale=2)", {"scale": "2"}),
    ("StudentT(3, scale=s)", {"df": "3", "scale": "s"}),
    ("Categorical(logits=v)", {"logits": "v"}),
])
def test_dist_binds_arguments_to_numpyro_names(raw: str, args: dict[str, str]) -> None:
    problems: list[Problem] = []
    bound = dist(raw, "p", problems)
    assert problems == []
    assert bound is not None and bound.info is DISTRIBUTIONS[bound.name]
    assert {k: expr.to_text(v) for k, v in bound.args.items()} == args


@pytest.mark.parametrize(("raw", "message"), [
    ("Normall(0, 1)", "unknown distribution 'Normall'; did you mean Normal?"),
    ("exp(1)", "a function, not a distribution 'exp'"),
    ("mu", "expected a distribution such as Normal(0, 1), got 'mu'"),
    ("Normal(0, 1, 2)", "Normal takes at most 2 positional argument(s) (loc, scale), got 3"),
    ("Normal(0, sd=1)", "Normal has no argument 'sd'; its arguments are loc, scale"),
    ("Normal(0, loc=1)", "Normal: argument 'loc' given twice"),
    ("StudentT(loc=0)", "StudentT needs argument(s) df"),
    ("Categorical()", "Categorical needs exactly one of probs, logits"),
])
def test_dist_problems(raw: str, message: str) -> None:
    problems: list[Problem] = []
    assert dist(raw, "p", problems) is None
    assert [(p.path, p.message) for p in problems] == [("p", message)]


def test_field_problems_are_all_reported_with_their_paths() -> None:
    out, problems = read_doc(
        priors={},
        coords={"a": [], "b": [True], "c": ["x", "x"], "d": ["x"]},
        params={"p": {"dist": "Gamma(1, 1)", "reparam": "noncentered", "dimz": 1, "label": "a/b", "keep": "no"},
                "q": {"dims": "g", "shape": 3},
                "r": {"dist": "Normal(0, 1)", "dims": ["g"], "shape": [2]}},
        define={"d": "Normal(0, 1)", "e": {"expr": "1 +", "dims": [1]}},
        observe={"y": {"dist": "Normal(0, 1)", "sd": 1}},
    )
    assert problems == [
        ("priors", "unknown section; expected one of spec, data, coords, params, define, observe, factor, "
                   "fitted_priors, name, description"),
        ("coords.a", "must be a non-empty list of labels"),
        ("coords.b", "labels must be strings or numbers"),
        ("coords.c", "labels must be unique"),
        ("params.p.dimz", "unknown field; expected one of dist, dims, shape, reparam, label, keep"),
        ("params.p.label", "a label is 1-128 printable characters without slashes"),
        ("params.p.keep", "must be true or false"),
        ("params.p.reparam", "noncentered needs a location-scale distribution (Cauchy, Laplace, Normal, StudentT), "
                             "got Gamma"),
        ("params.q.dims", "must be a list of coordinate names"),
        ("params.q.shape", "must be a list of sizes (integers or integer data names)"),
        ("params.q.dist", "missing"),
        ("params.r", "give dims or shape, not both"),
        ("define.d", "Normal is a distribution; random variables belong under params"),
        ("define.e.dims", "must be a list of coordinate names"),
        ("define.e.expr", "cannot parse '1 +': invalid syntax"),
        ("observe.y.sd", "unknown field; expected dist"),
    ]
    assert list(out.coords) == ["d"]
    assert [p.name for p in out.params] == ["p", "q", "r"] and out.params[1].dist is None
    assert out.defines[0].node is None and out.defines[1].node is None
    assert out.observes["y"] is not None  # its unknown field does not stop the distribution being read


def test_sections_must_be_mappings_of_bounded_size(monkeypatch: pytest.MonkeyPatch) -> None:
    out, problems = read_doc(params="mu", define=None)
    assert problems == [("params", "must be a mapping of names, got str"),
                        ("params", "a model needs at least one param to sample")]
    assert out.params == [] and out.defines == []
    monkeypatch.setattr("service.language.sections.MAX_NAMES", 2)
    _, problems = read_doc(params={"a": "Normal(0, 1)"}, define={"x": "a", "y": "a", "z": "a"})
    assert problems == [("define", "more than 2 entries")]


@pytest.mark.parametrize(("labels", "path", "message"), [
    # netCDF truncates at U+0000 ("a\x00" came back as "a"): no control characters in labels
    (["a\x00", "a"], "coords.g[0]", "the label contains the control character U+0000"),
    (["a", "b\n"], "coords.g[1]", "the label contains the control character U+000A"),
    (["a\x85"], "coords.g[0]", "the label contains the control character U+0085"),
    (["a" * 1025], "coords.g[0]", "the label is 1025 characters long; at most 1024"),
    # a mixed list is stored as strings: 1 came back as "1", and [1, "1"] crashed the netCDF writer
    ([1, "a"], "coords.g", "labels must be all strings or all numbers"),
    ([float("nan"), 1.0], "coords.g[0]", "a numeric label must be finite"),
    ([1.0, float("inf")], "coords.g[1]", "a numeric label must be finite"),
    ([2**70, 1], "coords.g[0]", "an integer label must be within +-2**53, got 1.18e+21"),  # crashed the writer
])
def test_coordinate_labels_netcdf_cannot_store_are_refused(labels: list[Any], path: str, message: str) -> None:
    out, problems = read_doc(coords={"g": labels}, params={"a": "Normal(0, 1)"})
    assert problems == [(path, message)]
    assert out.coords == {}


@pytest.mark.parametrize("labels", [["a/b", "c d", "\U0001F600", "", "x" * 1024, "\ufeff"], [1, 2.5, -3], [2**53]])
def test_coordinate_labels_netcdf_stores_are_accepted(labels: list[Any]) -> None:
    out, problems = read_doc(coords={"g": labels}, params={"a": "Normal(0, 1)"})
    assert problems == [] and out.coords == {"g": labels}


@pytest.mark.parametrize(("doc", "path", "message"), [
    ({"name": "m\x1b[31m"}, "name", "contains the control character U+001B"),  # a terminal escape in logs
    ({"name": "m" * 201}, "name", "is 201 characters long; at most 200"),
    ({"name": 7}, "name", "must be a non-empty string"),
    ({"name": ""}, "name", "must be a non-empty string"),
    ({"description": ["x"]}, "description", "must be a string"),
    ({"description": "a\x00b"}, "description", "contains the control character U+0000"),
    ({"params": {"a": {"dist": "Normal(0, 1)", "label": "a\x7f"}}}, "params.a.label",
     "a label is 1-128 printable characters without slashes"),
])
def test_model_name_description_and_labels(doc: dict[str, Any], path: str, message: str) -> None:
    _, problems = read_doc(**{"params": {"a": "Normal(0, 1)"}, **doc})
    assert problems == [(path, message)]


def test_a_description_may_span_lines() -> None:
    _, problems = read_doc(name="radon \u00e9", description="Gelman & Hill\n\tchapter 12\r\n",
                           params={"a": "Normal(0, 1)"})
    assert problems == []
