"""The model a job runs, pinned when the job is accepted (style rule 14).

At submit the spec (either front end) is validated once and stored as the normalized graph spec that
`POST /v1/models/validate` shows, with its data, plus a fingerprint. Workers and assembly rebuild the model
from that pin with the graph validator alone: the formula front end never runs again, so a rolling upgrade
cannot make a queued job run a model other than the one validated, and later features (priors_from) read
resolved values from the pin instead of re-deriving them.

The pin carries its own format version. A reader refuses versions it does not know with a clear message,
so a change to the model language adds a reader for the new version and keeps reading this one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.exceptions import ChainyardError
from service.language.describe import graph_spec
from service.language.ir import Model
from service.language.validate import validate

PIN_VERSION = 1
"""Version 1: {"pin": 1, "graph": graph spec v1 with data as (nested) lists, ints kept ints}."""


class PinError(ChainyardError):
    """A stored pin this version cannot read."""


@dataclass(frozen=True)
class PinnedModel:
    """A job's model as JSON text, and its sha256."""

    text: str
    fingerprint: str

    @classmethod
    def of(cls, model: Model) -> PinnedModel:
        graph = {**graph_spec(model), "data": {k: _plain(v) for k, v in model.data.items()}}
        text = json.dumps({"pin": PIN_VERSION, "graph": graph}, separators=(",", ":"),  # order is meaningful
                          allow_nan=False)
        return cls(text=text, fingerprint=hashlib.sha256(text.encode()).hexdigest())

    @classmethod
    def load(cls, text: str) -> PinnedModel:
        return cls(text=text, fingerprint=hashlib.sha256(text.encode()).hexdigest())

    @property
    def graph(self) -> dict[str, Any]:
        """The graph spec, data included."""
        doc = json.loads(self.text)
        version = doc.get("pin") if isinstance(doc, dict) else None
        if version != PIN_VERSION:
            raise PinError(f"pinned model format {version!r} is not one this chainyard reads ({PIN_VERSION}); "
                           "the job was accepted by another version of the service")
        graph: dict[str, Any] = doc["graph"]
        return graph

    def model(self) -> Model:
        """The model to run (the graph validator only)."""
        return validate(self.graph)


def _plain(value: np.ndarray) -> Any:
    """Data as JSON: float64 values round-trip exactly through repr; int64 stays int."""
    return np.asarray(value).tolist()
