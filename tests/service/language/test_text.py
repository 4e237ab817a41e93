"""Strings a spec carries: what UTF-8 cannot encode is refused everywhere, keys included, with a safe path."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.exceptions import SpecError
from service.language import text
from service.sampler import parse_job
from tests.service.language.test_validate import BASE, with_

SURROGATE = "\ud800"
LONE = "is not valid Unicode text: lone surrogate U+D800"


def problems_of(doc: Any) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        parse_job(doc)
    return [(p.path, p.message) for p in info.value.problems]


def test_walk_finds_keys_and_strings_in_document_order() -> None:
    doc = {"a": ["x", f"y{SURROGATE}", [1.0, {f"k{SURROGATE}": "v"}]], "b": {"c": SURROGATE}, "d": [1, 2.5, None]}
    found = [(p.path, p.message) for p in text.unencodable(doc, "model")]
    assert found == [
        ("model.a[1]", f"{LONE} at position 1"),
        ("model.a[2][1].k\\ud800", f"the name {LONE} at position 1"),
        ("model.b.c", f"{LONE} at position 0"),
    ]
    json.dumps(found, ensure_ascii=False).encode("utf-8")  # the paths themselves are safe to send


def test_walk_reports_a_bounded_number_of_problems() -> None:
    assert len(text.unencodable({"x": [SURROGATE] * 1000})) == text.MAX_REPORTED


def test_walk_skips_numeric_data_quickly() -> None:
    import time

    doc = {"data": {"X": [[float(i)] * 1000 for i in range(2000)], "y": list(range(1_000_000))}}
    start = time.perf_counter()
    assert text.unencodable(doc) == []
    assert time.perf_counter() - start < 2.0  # ~0.05 s: one pass over element types per list


def test_shown_escapes_only_what_utf8_cannot_encode() -> None:
    assert text.shown(f"caf\u00e9 {SURROGATE}") == "caf\u00e9 \\ud800"


@pytest.mark.parametrize(("doc", "path"), [
    # the model name labels metrics: this one killed every worker that assembled the job
    (with_(name=f"eight{SURROGATE}"), "name"),
    (with_(description=SURROGATE), "description"),
    (with_(coords__school=["A", "B", "C", "D", "E", "F", "G", f"H{SURROGATE}"]), "coords.school[7]"),
    (with_(params__theta={"dist": "Normal(mu, tau)", "dims": ["school"], "label": f"t{SURROGATE}"}),
     "params.theta.label"),
    (with_(data={**BASE["data"], f"z{SURROGATE}": 1.0}), "data.z\\ud800"),
    (with_(coords={**BASE["coords"], f"g{SURROGATE}": ["a"]}), "coords.g\\ud800"),
    (with_(params={**BASE["params"], f"p{SURROGATE}": "Normal(0, 1)"}), "params.p\\ud800"),
    (with_(define__x=f"mu + {SURROGATE}"), "define.x"),
    (with_(observe__y=f"Normal(theta[idx], sigma{SURROGATE})"), "observe.y"),
    ({"spec": 1, "formula": "y ~ 1 + (1 | g)", "data": {"y": [1.0, 2.0, 3.0], "g": ["a", f"b{SURROGATE}", "a"]}},
     "data.g[1]"),
    ({"spec": 1, "formula": f"y ~ x{SURROGATE}", "data": {"y": [1.0, 2.0], "x": [1.0, 2.0]}}, "formula"),
])
def test_a_surrogate_anywhere_in_a_model_is_refused_naming_the_field(doc: dict[str, Any], path: str) -> None:
    found = problems_of(doc)
    assert len(found) == 1 and found[0][0] == path and LONE in found[0][1], found
    assert problems_of({"model": doc}) == [(f"model.{path}", found[0][1])]


@pytest.mark.parametrize(("job", "path"), [
    ({"model": BASE, "name": f"job{SURROGATE}"}, "name"),
    ({"model": BASE, "labels": {"team": f"a{SURROGATE}"}}, "labels.team"),
    ({"model": BASE, "labels": {f"t{SURROGATE}": "a"}}, "labels.t\\ud800"),
    ({"model": BASE, "sampler": {"keep": [f"mu{SURROGATE}"]}}, "sampler.keep[0]"),
    ({"model": BASE, "sampler": {f"chains{SURROGATE}": 2}}, "sampler.chains\\ud800"),
    ({"model": BASE, f"x{SURROGATE}": 1}, "x\\ud800"),
])
def test_a_surrogate_anywhere_in_a_job_is_refused_naming_the_field(job: dict[str, Any], path: str) -> None:
    found = problems_of(job)
    assert len(found) == 1 and found[0][0] == path and LONE in found[0][1], found


@pytest.mark.parametrize(("job", "path", "message"), [
    ({"model": BASE, "name": "job\x00"}, "name", "contains the control character U+0000"),
    ({"model": BASE, "labels": {"team": "a\nb"}}, "labels.team", "the label value contains the control character"),
    ({"model": BASE, "labels": {"te\tam": "a"}}, "labels.te\tam", "the label name contains the control character"),
    ({"model": BASE, "labels": {"team": 3}}, "labels", "must map strings to strings"),
    ({"spec": 1, "formula": "y ~ 1 + (1 | g)", "data": {"y": [1.0, 2.0, 3.0], "g": ["a", "b\x00", "a"]}},
     "data.g[1]", "the factor level contains the control character U+0000"),
])
def test_control_characters_in_names_and_labels_are_refused(job: dict[str, Any], path: str, message: str) -> None:
    found = problems_of(job)
    assert any(p == path and message in m for p, m in found), found


def test_labels_that_pass_validation_survive_a_netcdf_round_trip(tmp_path: Path) -> None:
    """What the validator lets through, results.write_netcdf stores and ArviZ reads back unchanged."""
    from service.results import to_inference_data, write_netcdf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az

    cases: dict[str, list[Any]] = {
        "strings": ["a/b", "c d", "\U0001F600", "", "x" * 1024, "\ufeff", "caf\u00e9", "1"],
        "ints": [-(2**53), 0, 2**53],
        "floats": [0.5, -1e300, 3.0],
    }
    for kind, labels in cases.items():
        spec = {"spec": 1, "name": f"m {kind} \u00e9", "coords": {"g": labels},
                "params": {"t": {"dist": "Normal(0, 1)", "dims": ["g"], "label": "t \u00e9|x"}}}
        model, _ = parse_job(spec)
        draws = {"t \u00e9|x": np.zeros((1, 4, len(labels)))}
        stats = {"diverging": np.zeros((1, 4), bool), "lp": np.zeros((1, 4))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ArviZ warns about 4 draws
            idata = to_inference_data(model, draws, stats, attrs={"model": spec["name"]})
        path = tmp_path / f"{kind}.nc"
        write_netcdf(idata, path)
        back = az.from_netcdf(str(path))
        assert list(back.posterior.coords["g"].values) == labels, kind
        assert list(back.posterior.data_vars) == ["t \u00e9|x"]


def test_a_formula_spec_name_is_checked_like_a_graph_spec_name() -> None:
    doc = {"spec": 1, "formula": "y ~ x", "name": "m\x1b[2J", "data": {"y": [1.0, 2.0, 3.0], "x": [0.0, 1.0, 2.0]}}
    assert problems_of(doc) == [("name", "contains the control character U+001B")]
    assert problems_of({**doc, "formula": "y ~ nope"})[0] == ("name", "contains the control character U+001B")
