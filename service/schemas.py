"""Request and response bodies of the REST API (separate create/public schemas)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from service.jobs.record import ChainPhase, JobState
from service.priors.definition import PriorDefinition


class JobCreate(BaseModel):
    """POST /v1/jobs: a model spec (graph or formula) and sampler settings."""

    model_config = ConfigDict(extra="forbid")

    model: dict[str, Any] = Field(description="Model spec, design section 2 (graph or formula front end).")
    sampler: dict[str, Any] | None = Field(None, description="Sampler settings, design section 2.3.")
    name: str | None = Field(None, max_length=200)
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)


class JobExtend(BaseModel):
    """POST /v1/jobs/{id}/extend: draws to add to each chain of a succeeded job."""

    model_config = ConfigDict(extra="forbid")

    draws: int = Field(ge=1, le=200_000, description="More draws per chain (iterations, as `sampler.draws`).")


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
    gradients: int = Field(0, description="Gradient evaluations of the chain as last stored, warmup included.")
    warmup_gradients: int = Field(0, description="... of its warmup.")


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
    priors: list[dict[str, Any]] = Field(default_factory=list, description="The prior versions `priors_from` "
                                         "resolved to when the job was accepted: prior, version, params.")
    refit: dict[str, Any] | None = Field(None, description="Set on a prior's refit: prior, dataset and version.")
    sampling: dict[str, Any] = Field(default_factory=dict, description="How far the chains run: warmup, "
                                     "draws_per_chain (now), until and its rounds, why sampling stopped, extensions, "
                                     "warm_start, gradient evaluations so far.")


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


class PriorPublic(BaseModel):
    """A prior: its definition (absent for one that only holds saved versions), the latest published version
    and the outcome of its last refit."""

    name: str
    definition: PriorDefinition | None
    revision: int
    latest: int | None
    versions: int
    created_at: float
    updated_at: float
    last_refit: dict[str, Any] | None


class PriorList(BaseModel):
    priors: list[PriorPublic]


class PriorVersionPublic(BaseModel):
    """A published version: `export` is what `priors_from` applies (members, their supports, and the mvn
    components or marginal families on the unconstrained scale, with the fitted mean and covariance)."""

    version: int
    source: str = Field(description="`refit` or `elicited`.")
    created_at: float
    export: dict[str, Any]
    diagnostics: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] | None = Field(None, description="Refits: job, dataset, dataset_version, "
                                              "dataset_hash, rows, revision, gate.")
    elicitation: dict[str, Any] | None = None


class PriorVersionList(BaseModel):
    versions: list[PriorVersionPublic]


class PriorSave(BaseModel):
    """POST /v1/priors/{name}/versions: expert judgements per variable, each as POST /v1/priors/elicit takes."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["elicited"] = "elicited"
    params: dict[str, dict[str, Any]] = Field(max_length=64)


class DatasetCreate(BaseModel):
    """PUT /v1/datasets/{name}: the columns (in order) and their types."""

    model_config = ConfigDict(extra="forbid")

    columns: dict[str, str] = Field(description="Column -> float, int, string or category (a string column), in "
                                    "order; names as in the model language, at most 200 columns.",
                                    examples=[{"hospital": "string", "n": "int", "y": "float"}])
    description: str | None = Field(None, max_length=2000)


class DatasetRows(BaseModel):
    """POST /v1/datasets/{name}/rows as JSON: exactly one of `columns` or `rows`, every column of the dataset in
    each (the same rows may be sent as text/csv with a header line instead)."""

    columns: dict[str, list[Any]] | None = Field(None, description="Column -> its values, all of equal length.")
    rows: list[dict[str, Any]] | None = Field(None, description="One object {column: value} per row.")


class DatasetVersionPublic(BaseModel):
    """One immutable version (service.datasets.DatasetVersion): 0 is the declared schema, N the N-th append."""

    model_config = ConfigDict(title="DatasetVersion")

    number: int
    rows: int = Field(description="Rows of the dataset as of this version.")
    added: int = Field(description="Rows this version appended.")
    hash: str = Field(description="sha256 hex, chained: of the previous version's hash and the rows appended.")
    created_at: float


class DatasetPublic(BaseModel):
    name: str
    columns: dict[str, str]
    description: str | None
    rows: int
    version: int = Field(description="The latest version's number.")
    hash: str = Field(description="The latest version's hash.")
    created_at: float
    updated_at: float
    versions: list[DatasetVersionPublic] = Field(description="The last few versions, oldest first (in a list of "
                                                 "datasets: the latest only).")


class DatasetList(BaseModel):
    datasets: list[DatasetPublic]


class DatasetVersionList(BaseModel):
    versions: list[DatasetVersionPublic] = Field(description="In number order.")
    total: int
    offset: int
    limit: int


class ScheduleCreate(BaseModel):
    """PUT /v1/priors/{name}/schedule: refit the prior on a cron schedule in a timezone."""

    model_config = ConfigDict(extra="forbid")

    cron: StrictStr = Field(max_length=200, description="Five fields (minute hour day-of-month month day-of-week) "
                            "or @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly.",
                            examples=["30 2 * * *", "@daily"])
    timezone: StrictStr = Field(max_length=64, description="IANA timezone the cron fields are read in.",
                                examples=["Europe/Berlin", "UTC"])
    suspend: StrictBool = Field(False, description="Keep the schedule but do not run it.")


class ScheduleRunPublic(BaseModel):
    """The last time a schedule fired."""

    model_config = ConfigDict(title="ScheduleRun")

    at: float = Field(description="When it fired (unix time).")
    scheduled: float | None = Field(description="The scheduled instant it fired for (unix time).")
    job: str | None = Field(description="The refit job it submitted, or found unchanged.")
    outcome: Literal["submitted", "unchanged", "error", "missed"] = Field(
        description="submitted: a new refit job; unchanged: the dataset has not changed since this definition's "
        "last refit (the same job); error: see message; missed: more than the starting deadline late, skipped.")
    message: str | None
    refit: dict[str, Any] | None = Field(None, description="The refit job's outcome (as in GET .../refits), once "
                                         "it has ended.")


class PriorSchedulePublic(BaseModel):
    """A prior's refit schedule, when it runs next and how its last run went."""

    model_config = ConfigDict(title="PriorSchedule")

    prior: str
    cron: str
    timezone: str
    suspend: bool
    next_run: str | None = Field(description="ISO 8601 with the timezone's offset; null while suspended.")
    next_run_unix: float | None
    last_run: ScheduleRunPublic | None
    backend: str = Field(description="What runs it: local (the API's scheduler), kubernetes (a CronJob) or none.")
    in_sync: bool = Field(description="Whether the backend runs exactly this schedule.")
    note: str | None = Field(None, description="What the backend disagreed on, and what was done about it.")
    created_at: float
    updated_at: float
