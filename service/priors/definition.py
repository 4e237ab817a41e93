"""A prior definition: the model to refit, where its data come from, what it exports and the gate it must pass.

Read by pydantic (the request body and the stored record are the same document), so every field problem is a
422 with its path; what needs Redis (the dataset, the model against its data) is checked by the store.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
"""Prior (and dataset) names: they appear in URLs, metrics labels and `priors_from` references."""
RESERVED = frozenset({"elicit"})
"""Names that are routes under /v1/priors."""
MAX_EXPORT = 64
"""Variables one prior may export."""
MAX_EXPORT_ELEMENTS = 1_000
"""Elements of the exported vector (its covariance has the square of this many numbers)."""
DEFAULT_SEED = 0
"""Seed of a refit whose sampler settings have none: a refit of the same dataset version is the same job."""


class DataFrom(BaseModel):
    """Where the model's data come from: a dataset of the tenant's, at its latest version or a fixed one."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="A dataset of the same tenant.")
    version: int | Literal["latest"] = Field("latest", description="`latest` (refits follow the data) or N.")
    columns: dict[str, str] | None = Field(
        None, max_length=200, description="Model data name -> dataset column; default: every column by its name. "
        "In a graph spec a string column becomes 0-based integer codes (in order of first appearance) and a "
        "coordinate of the same name holding the labels.")

    @field_validator("dataset")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(f"dataset names match {NAME_RE.pattern}")
        return value


class Robust(BaseModel):
    """Mix a vague component into the prior (RBesT's robustify)."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(gt=0, lt=1, description="Weight of the vague component.")
    scale: float = Field(10.0, ge=1, le=1e6, description="How many times wider the vague component's standard "
                                                         "deviations are (Beta: the vague component is Beta(1, 1)).")


class Export(BaseModel):
    """What becomes the prior, and how it is fitted."""

    model_config = ConfigDict(extra="forbid")

    params: list[str] = Field(min_length=1, max_length=MAX_EXPORT,
                              description="Params or defines of the model (population-level ones, or a predictive "
                                          "`theta_new`).")
    method: Literal["mvn", "marginal"] = Field(
        "mvn", description="`mvn`: one multivariate normal on the unconstrained scale (keeps correlations); "
                           "`marginal`: a family per variable by its support.")
    inflate: float = Field(1.0, ge=1, le=1e6, description="Covariance x k: a power prior with a0 = 1/k.")
    robust: Robust | None = None

    @field_validator("params")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each exported variable once")
        return value


class Gate(BaseModel):
    """What a refit must achieve to be published (over every stored variable of the fit)."""

    model_config = ConfigDict(extra="forbid")

    max_rhat: float = Field(1.01, gt=1, le=10, description="Every R-hat below this.")
    max_divergences: int = Field(0, ge=0, description="At most this many divergent transitions.")
    min_ess_bulk: float = Field(400, ge=0)
    min_ess_tail: float = Field(400, ge=0)


class WarmRefit(BaseModel):
    """How refits warm-start from the latest version's job."""

    model_config = ConfigDict(extra="forbid")

    warmup: int = Field(150, ge=0, le=200_000, description="Warmup of a warm-started refit (at most the sampler's); "
                        "the adaptation continues from the earlier chains' step size and mass matrix. Below ~150, "
                        "Stan's schedule leaves the step size a final window too short to settle (divergences).")


class PriorDefinition(BaseModel):
    """PUT /v1/priors/{name}."""

    model_config = ConfigDict(extra="forbid")

    model: dict[str, Any] = Field(description="A model spec (graph or formula front end) without the dataset's "
                                              "columns; `data` may hold constants.")
    data_from: DataFrom
    sampler: dict[str, Any] | None = Field(None, description="Sampler settings (seed 0 unless given).")
    export: Export
    gate: Gate = Field(default_factory=Gate)
    warm_start: WarmRefit | None = Field(
        default_factory=WarmRefit, description="Refits start from the chains of the latest version's job, while "
        "it is kept and has the same parameters (more rows of the same groups); null: every refit starts cold.")
    description: str | None = Field(None, max_length=10_000)


def check_name(name: str) -> str | None:
    """Why `name` cannot name a prior, or None."""
    if not NAME_RE.match(name):
        return f"prior names match {NAME_RE.pattern}"
    if name in RESERVED:
        return f"{name!r} is reserved"
    return None


def gate_failures(gate: Gate, totals: dict[str, Any]) -> list[str]:
    """Why a fit's summary totals do not pass `gate` (empty: it passes)."""
    reasons = []
    rhat, bulk, tail = totals.get("max_rhat"), totals.get("min_ess_bulk"), totals.get("min_ess_tail")
    if rhat is None or not rhat < gate.max_rhat:
        reasons.append(f"max R-hat {_fmt(rhat)} is not below {gate.max_rhat}")
    if int(totals.get("divergences") or 0) > gate.max_divergences:
        reasons.append(f"{totals.get('divergences')} divergent transitions (at most {gate.max_divergences})")
    if bulk is None or bulk < gate.min_ess_bulk:
        reasons.append(f"min bulk ESS {_fmt(bulk)} is below {gate.min_ess_bulk:g}")
    if tail is None or tail < gate.min_ess_tail:
        reasons.append(f"min tail ESS {_fmt(tail)} is below {gate.min_ess_tail:g}")
    return reasons


def _fmt(value: Any) -> str:
    return "unknown" if value is None else f"{value:.4g}"
