"""Request and response bodies of the REST API (separate create/public schemas)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.jobs.record import ChainPhase, JobState


class JobCreate(BaseModel):
    """POST /v1/jobs: a model spec (graph or formula) and sampler settings."""

    model_config = ConfigDict(extra="forbid")

    model: dict[str, Any] = Field(description="Model spec, design section 2 (graph or formula front end).")
    sampler: dict[str, Any] | None = Field(None, description="Sampler settings, design section 2.3.")
    name: str | None = Field(None, max_length=200)
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)


class ChainPublic(BaseModel):
    """One chain's progress as the API shows it (service.jobs.record.ChainProgress)."""

    model_config = ConfigDict(title="ChainProgress")

    chain: int
    phase: ChainPhase
    iteration: int
    of: int
    divergences: int
    step_size: float | None
    worker: str | None
    attempts: int


class Diagnostics(BaseModel):
    """Convergence of the draws so far across chains (ArviZ, rank-normalized): the first `draws_per_chain`
    draws of each chain in `chains` (those that have started sampling); divergences count every draw so far."""

    chains: list[int]
    draws_per_chain: int
    max_rhat: float | None
    min_ess_bulk: float | None
    min_ess_tail: float | None
    divergences: int
    updated_at: float


class JobPublic(BaseModel):
    id: str
    name: str | None
    labels: dict[str, str]
    state: JobState
    created_at: float
    started_at: float | None
    finished_at: float | None
    seed: int
    sampler: dict[str, Any]
    chains: list[ChainPublic]
    diagnostics: Diagnostics | None
    error: str | None


class JobList(BaseModel):
    jobs: list[JobPublic]
    total: int
    offset: int
    limit: int


class ErrorDetail(BaseModel):
    path: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """Every error the API returns has this shape."""

    error: ErrorBody


class ValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: dict[str, Any]
    sampler: dict[str, Any] | None = None


class ValidateResponse(BaseModel):
    variables: list[dict[str, Any]]
    observe: list[dict[str, Any]]
    data: dict[str, Any]
    graph: dict[str, Any]
    sampler: dict[str, Any]
