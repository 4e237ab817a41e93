"""A pinned model with fitted priors rebuilds the same model: same structure, fingerprint and priors."""

from __future__ import annotations

from typing import Any

import pytest

from service.jobs.pinned import PinnedModel
from service.sampler import parse_job

MVN = {"source": "hospitals@3", "method": "mvn",
       "members": [{"param": "mu", "shape": [], "support": "real"},
                   {"param": "tau", "shape": [], "support": "positive"}],
       "components": [{"weight": 0.9, "loc": [0.5, -1], "scale_tril": [[1, 0], [0.3, 0.5]]},
                      {"weight": 0.1, "loc": [0.5, -1], "scale_tril": [[10, 0], [3, 5]]}]}
MARGINAL = {"source": "elicited@1", "method": "marginal",
            "members": [{"param": "theta", "shape": [3], "support": "real"}],
            "marginals": [[{"weight": 1, "dist": "Normal", "args": {"loc": [0.1, 0.2, 0.3], "scale": 1}}]]}
GRAPH = {"spec": 1, "coords": {"g": ["a", "b", "c"]}, "data": {"y": [0.5, 1.0, -0.3]},
         "params": {"mu": "Normal(0, 10)", "tau": "HalfNormal(5)",
                    "theta": {"dist": "Normal(mu, tau)", "dims": ["g"], "reparam": "noncentered"}},
         "observe": {"y": "Normal(theta, 1)"}, "fitted_priors": [MVN, MARGINAL]}
FORMULA = {"spec": 1, "formula": "y ~ 1 + x + (1 | g)",
           "data": {"y": [0.1 * i for i in range(30)], "x": [float(i % 7) for i in range(30)],
                    "g": [f"g{i % 3}" for i in range(30)]},
           "fitted_priors": [{"source": "trial@2", "method": "mvn",
                              "members": [{"param": "Intercept", "shape": [], "support": "real"},
                                          {"param": "1|g_sigma", "shape": [], "support": "positive"}],
                              "components": [{"weight": 1, "loc": [0, 0], "scale_tril": [[1, 0], [0, 1]]}]}]}


@pytest.mark.parametrize("doc", [GRAPH, FORMULA], ids=["graph", "formula"])
def test_the_pin_keeps_the_fitted_priors(doc: dict[str, Any]) -> None:
    model, _ = parse_job(doc)
    pinned = PinnedModel.of(model)
    rebuilt = pinned.model()
    assert rebuilt.fitted == model.fitted and len(model.fitted) == len(doc["fitted_priors"])
    assert rebuilt.structure_key() == model.structure_key()
    assert rebuilt.fingerprint() == model.fingerprint()
    assert PinnedModel.of(rebuilt) == pinned
    assert pinned.graph["fitted_priors"][0]["source"] == doc["fitted_priors"][0]["source"]
