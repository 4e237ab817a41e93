"""The model pinned at submit: rebuilding it gives the same model, without the formula front end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.jobs.pinned import PIN_VERSION, PinError, PinnedModel
from service.language import formula
from service.language.loader import load_file
from service.sampler import parse_job

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
rows = 40
FORMULAS: list[dict[str, Any]] = [
    {"spec": 1, "formula": "y ~ 1 + x + (1 + x | g)", "family": "gaussian",
     "data": {"y": [0.1 * i for i in range(rows)], "x": [float(i % 7) for i in range(rows)],
              "g": [f"g{i % 5}" for i in range(rows)]}},
    {"spec": 1, "formula": "y ~ x + (1 | region/site)", "family": "poisson",
     "data": {"y": [i % 4 for i in range(rows)], "x": [i / rows for i in range(rows)],
              "region": [f"r{i % 2}" for i in range(rows)], "site": [f"s{i % 4}" for i in range(rows)]}},
    {"spec": 1, "formula": "y ~ x", "family": "gaussian", "sigma": "~ x",
     "data": {"y": [(-1) ** i * 0.5 * i for i in range(rows)], "x": [float(i) for i in range(rows)]}},
    {"spec": 1, "formula": "y ~ x + (1 | g)", "family": "bernoulli",
     "data": {"y": [i % 2 for i in range(rows)], "x": [0.25 * i for i in range(rows)],
              "g": [i % 3 for i in range(rows)]}},
]
SPECS = [pytest.param(load_file(p), id=p.stem) for p in sorted(EXAMPLES.glob("*.yaml"))] + [
    pytest.param(doc, id=f"formula-{doc['family']}-{i}") for i, doc in enumerate(FORMULAS)]


@pytest.mark.parametrize("doc", SPECS)
def test_the_pin_rebuilds_the_same_model(doc: dict[str, Any]) -> None:
    model, _ = parse_job(doc)
    pinned = PinnedModel.of(model)
    rebuilt = pinned.model()
    assert rebuilt.structure_key() == model.structure_key()
    assert rebuilt.fingerprint() == model.fingerprint()
    assert repr(rebuilt.nodes) == repr(model.nodes) and repr(rebuilt.observes) == repr(model.observes)
    assert {k: (v.dtype, v.shape) for k, v in rebuilt.data.items()} == {k: (v.dtype, v.shape)
                                                                        for k, v in model.data.items()}
    assert PinnedModel.of(rebuilt) == pinned  # a fixed point: pinning the pin changes nothing
    assert "formula" not in pinned.graph and pinned.graph["spec"] == 1


def test_rebuilding_never_runs_the_formula_front_end(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = parse_job(FORMULAS[0])
    pinned = PinnedModel.load(PinnedModel.of(model).text)  # as read back from Redis

    def refuse(doc: Any) -> Any:
        raise AssertionError("the formula front end ran")

    monkeypatch.setattr(formula, "compile_formula", refuse)
    assert pinned.model().fingerprint() == model.fingerprint()


def test_fingerprint_names_the_text() -> None:
    a = PinnedModel.of(parse_job(FORMULAS[0])[0])
    changed = {**FORMULAS[0], "data": {**FORMULAS[0]["data"], "y": [0.1 * i + 1e-9 for i in range(rows)]}}
    assert PinnedModel.of(parse_job(changed)[0]).fingerprint != a.fingerprint
    assert PinnedModel.load(a.text).fingerprint == a.fingerprint


@pytest.mark.parametrize("version", [PIN_VERSION + 1, None, "1"])
def test_a_pin_of_an_unknown_format_is_refused(version: object) -> None:
    doc = json.loads(PinnedModel.of(parse_job(FORMULAS[0])[0]).text)
    doc["pin"] = version
    with pytest.raises(PinError, match=r"pinned model format .* is not one this chainyard reads"):
        PinnedModel.load(json.dumps(doc)).model()
