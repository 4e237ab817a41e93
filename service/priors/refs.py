"""What a job records of priors: the versions its `priors_from` resolved to, and the refit it is (if any).

Plain data pinned in the job record at submit (style rule 14): assembly publishes from the pin, never from
the prior definition as it may read later.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class PriorPin:
    """One `priors_from` as resolved when the job was accepted."""

    prior: str
    version: int
    params: dict[str, str]
    """Exported variable -> the job's param that gets it."""
    method: str = "mvn"

    @property
    def ref(self) -> str:
        return f"{self.prior}@{self.version}"


@dataclass(frozen=True, kw_only=True)
class RefitOf:
    """The refit a job is: which prior, on which dataset version, with which export and gate."""

    prior: str
    revision: int
    """The prior definition's revision the job was submitted from."""
    dataset: str
    dataset_version: int
    dataset_hash: str
    dataset_rows: int
    export: dict[str, Any] = field(default_factory=dict)
    """The definition's `export` (service.priors.definition.Export as JSON)."""
    gate: dict[str, Any] = field(default_factory=dict)
    supports: dict[str, str] = field(default_factory=dict)
    """Exported variable -> its support (service.language.fitted.declared_support)."""


def pins_to_json(pins: tuple[PriorPin, ...]) -> str:
    return json.dumps([asdict(p) for p in pins])


def pins_from_json(raw: str | None) -> tuple[PriorPin, ...]:
    return tuple(PriorPin(**p) for p in json.loads(raw or "[]"))


def refit_to_json(refit: RefitOf | None) -> str:
    return json.dumps(asdict(refit)) if refit is not None else ""


def refit_from_json(raw: str | None) -> RefitOf | None:
    return RefitOf(**json.loads(raw)) if raw else None
