"""/v1/priors: definitions, refits, published versions, saved elicitations (design section 6)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from service.api.deps import Priors, Schedules, Tenant
from service.api.jobs import ERRORS, public
from service.priors.definition import PriorDefinition
from service.priors.schedule import parse_schedule
from service.priors.schedules import ScheduleState
from service.priors.store import PriorHead
from service.schemas import (
    ErrorResponse,
    JobPublic,
    PriorList,
    PriorPublic,
    PriorSave,
    PriorSchedulePublic,
    PriorVersionList,
    PriorVersionPublic,
    ScheduleCreate,
    ScheduleRunPublic,
)

router = APIRouter(prefix="/v1/priors", tags=["priors"], responses=ERRORS)
Name = Annotated[str, Path(max_length=64)]


def _public(head: PriorHead) -> PriorPublic:
    return PriorPublic(name=head.name, definition=head.definition, revision=head.revision, latest=head.latest,
                       versions=head.versions, created_at=head.created_at, updated_at=head.updated_at,
                       last_refit=head.last_refit)


@router.get("", response_model=PriorList)
def list_priors(priors: Priors, tenant: Tenant) -> PriorList:
    """The tenant's priors."""
    return PriorList(priors=[_public(priors.get(tenant, n)) for n in priors.names(tenant)])


@router.put("/{name}", response_model=PriorPublic, responses={201: {"model": PriorPublic}})
def put_prior(name: Name, body: PriorDefinition, priors: Priors, tenant: Tenant, response: Response) -> PriorPublic:
    """Create or replace a prior definition: a model whose data come from a dataset, its export and gate."""
    head, created = priors.put(tenant, name, body)
    response.status_code = 201 if created else 200
    return _public(head)


@router.get("/{name}", response_model=PriorPublic)
def get_prior(name: Name, priors: Priors, tenant: Tenant) -> PriorPublic:
    """The definition, the latest published version's number and the last refit's outcome."""
    return _public(priors.get(tenant, name))


@router.delete("/{name}", status_code=204)
def delete_prior(name: Name, priors: Priors, tenant: Tenant) -> Response:
    """Remove a prior and its versions (jobs that used a version keep it pinned)."""
    priors.delete(tenant, name)
    return Response(status_code=204)


@router.post("/{name}/refit", status_code=202, response_model=JobPublic)
def refit(name: Name, priors: Priors, tenant: Tenant) -> JobPublic:
    """Refit on the dataset as it is now: an ordinary job; version N+1 is published when it ends, if it
    passes the gate."""
    record, _ = priors.refit(tenant, name)
    return public(record, priors.jobs.chains(record))


@router.get("/{name}/versions", response_model=PriorVersionList)
def versions(name: Name, priors: Priors, tenant: Tenant) -> PriorVersionList:
    """Every published version, oldest first."""
    priors.get(tenant, name)
    return PriorVersionList(versions=[PriorVersionPublic(**v) for v in priors.versions.all(tenant, name)])


@router.post("/{name}/versions", status_code=201, response_model=PriorVersionPublic)
def save(name: Name, body: PriorSave, priors: Priors, tenant: Tenant) -> PriorVersionPublic:
    """Publish expert judgements (fitted as by POST /v1/priors/elicit) as a new version, source `elicited`."""
    _, version = priors.save_elicited(tenant, name, body.params)
    return PriorVersionPublic(**version)


@router.get("/{name}/versions/{number}", response_model=PriorVersionPublic)
def version(name: Name, number: Annotated[int, Path(ge=1, le=10**9)], priors: Priors,
            tenant: Tenant) -> PriorVersionPublic:
    """One version: its export (on the unconstrained scale), provenance and diagnostics."""
    _, found = priors.versions.read(tenant, name, number)
    return PriorVersionPublic(**found)


@router.get("/{name}/refits")
def refits(name: Name, priors: Priors, tenant: Tenant,
           limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    """The latest refit outcomes, newest first: job, dataset version, outcome, reasons, diagnostics."""
    priors.get(tenant, name)
    return {"refits": priors.versions.refits(tenant, name, limit=limit)}


# -- schedules (service.priors.schedules)


SCHEDULE_ERRORS: dict[int | str, dict[str, Any]] = {503: {"model": ErrorResponse}}


def _schedule(state: ScheduleState) -> PriorSchedulePublic:
    last = state.last_run
    return PriorSchedulePublic(
        prior=state.prior, cron=state.schedule.cron, timezone=state.schedule.timezone,
        suspend=state.schedule.suspend, next_run=state.next_run.isoformat() if state.next_run else None,
        next_run_unix=state.next_run.timestamp() if state.next_run else None,
        last_run=None if last is None else ScheduleRunPublic(at=last.at, scheduled=last.scheduled, job=last.job,
                                                             outcome=last.outcome,
                                                             message=last.message, refit=state.refit),
        backend=state.backend, in_sync=state.in_sync, note=state.note, created_at=state.created_at,
        updated_at=state.updated_at)


@router.put("/{name}/schedule", response_model=PriorSchedulePublic,
            responses={201: {"model": PriorSchedulePublic}, **SCHEDULE_ERRORS})
def put_schedule(name: Name, body: ScheduleCreate, schedules: Schedules, tenant: Tenant,
                 response: Response) -> PriorSchedulePublic:
    """Refit the prior on a cron schedule (five fields or a macro) in an IANA timezone; 201 when created."""
    state, created = schedules.put(tenant, name, parse_schedule(body.model_dump()))
    response.status_code = 201 if created else 200
    return _schedule(state)


@router.get("/{name}/schedule", response_model=PriorSchedulePublic, responses=SCHEDULE_ERRORS)
def get_schedule(name: Name, schedules: Schedules, tenant: Tenant) -> PriorSchedulePublic:
    """The schedule, its next run, its last run and that refit's outcome; whether the backend runs it."""
    return _schedule(schedules.get(tenant, name))


@router.delete("/{name}/schedule", status_code=204, responses=SCHEDULE_ERRORS)
def delete_schedule(name: Name, schedules: Schedules, tenant: Tenant) -> Response:
    """Stop refitting the prior on a schedule (its versions and refits stay)."""
    schedules.delete(tenant, name)
    return Response(status_code=204)
