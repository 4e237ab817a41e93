"""/v1/jobs: submit, read, list, cancel, delete, summary, draws, events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from service.api.deps import Store, Tenant
from service.codec import unpack
from service.exceptions import NotFoundError, Problem, SpecError
from service.jobs.record import ChainProgress, JobRecord, JobState
from service.jobs.store import JobStore, sampling
from service.schemas import ChainPublic, Diagnostics, ErrorResponse, JobCreate, JobExtend, JobList, JobPublic

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 404, 409, 413, 422, 429)}
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)


def public(record: JobRecord, chains: list[ChainProgress], diagnostics: Diagnostics | None = None) -> JobPublic:
    """The Job resource, shaped from the typed record."""
    return JobPublic(
        id=record.id, name=record.name, labels=record.labels, state=record.state, created_at=record.created_at,
        started_at=record.started_at, finished_at=record.finished_at, seed=record.seed,
        sampler=record.sampler.model_dump(), chains=[ChainPublic(**_chain_fields(c)) for c in chains],
        diagnostics=diagnostics, error=record.error, priors=[{**asdict(p), "ref": p.ref} for p in record.priors],
        refit=_refit(record), sampling=sampling(record, chains),
    )


def _refit(record: JobRecord) -> dict[str, Any] | None:
    refit = record.refit
    if refit is None:
        return None
    return {"prior": refit.prior, "dataset": refit.dataset, "dataset_version": refit.dataset_version,
            "dataset_hash": refit.dataset_hash, "rows": refit.dataset_rows, "revision": refit.revision}


def _chain_fields(chain: ChainProgress) -> dict[str, Any]:
    fields = asdict(chain)
    fields.pop("error")  # a retried attempt's error is the operator's; the job's error says why it failed
    fields.pop("stored")
    return fields


def _read(store: JobStore, tenant: str, job_id: str, *, diagnostics: bool) -> JobPublic:
    record = store.get(tenant, job_id)
    return public(record, store.chains(record), store.live.public(job_id) if diagnostics else None)


@router.post("", status_code=202, response_model=JobPublic)
def submit(body: JobCreate, store: Store, tenant: Tenant) -> JobPublic:
    """Queue a job: one task per chain. With a seed, an identical request returns the same job."""
    record, _ = store.submit(tenant, model=body.model, sampler=body.sampler, name=body.name, labels=body.labels)
    return public(record, store.chains(record))


@router.get("", response_model=JobList)
def list_jobs(store: Store, tenant: Tenant,
              state: Annotated[JobState | None, Query()] = None,
              label: Annotated[str | None, Query(max_length=200, description="`key=value`: jobs with that label "
                                                 "value; `key`: jobs that have the label, whatever its value")] = None,
              offset: Annotated[int, Query(ge=0)] = 0,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> JobList:
    page = store.list(tenant, state=state, label=label, offset=offset, limit=limit)
    return JobList(jobs=[public(record, chains) for record, chains in page.jobs], total=page.total, offset=offset,
                   limit=limit)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, store: Store, tenant: Tenant) -> JobPublic:
    return _read(store, tenant, job_id, diagnostics=True)


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel(job_id: str, store: Store, tenant: Tenant) -> JobPublic:
    """Stops every chain at its next block boundary."""
    record = store.cancel(tenant, job_id)
    return public(record, store.chains(record))


@router.post("/{job_id}/extend", status_code=202, response_model=JobPublic)
def extend(job_id: str, body: JobExtend, store: Store, tenant: Tenant) -> JobPublic:
    """Continue a succeeded job's chains for `draws` more draws each; it runs again and succeeds with the
    draws of a job that had asked for the longer run from the start, bit for bit (same id, same warmup)."""
    record = store.extend(tenant, job_id, body.draws)
    return public(record, store.chains(record))


@router.delete("/{job_id}", status_code=204)
def delete(job_id: str, store: Store, tenant: Tenant) -> Response:
    """Cancels the job if it runs, then removes it and its results."""
    store.delete(tenant, job_id)
    return Response(status_code=204)


@router.get("/{job_id}/summary")
def summary(job_id: str, store: Store, tenant: Tenant) -> dict[str, Any]:
    """Per variable and element: mean, sd, hdi_3%, hdi_97%, mcse, ess_bulk, ess_tail, r_hat; totals."""
    return store.summary(tenant, job_id)


@router.get("/{job_id}/draws", response_model=None)
def draws(job_id: str, store: Store, tenant: Tenant,
          format: Annotated[Literal["netcdf", "json"], Query()] = "json",
          vars: Annotated[str | None, Query(max_length=2000, description="comma-separated names")] = None,
          ) -> Response | dict[str, Any]:
    """ArviZ InferenceData as netCDF (`az.from_netcdf`), or JSON {variable: [chain][draw]...}."""
    if format == "netcdf":  # streamed chunk by chunk from Redis: the file is never held whole here
        size, chunks = store.result_file(tenant, job_id, "netcdf")
        return StreamingResponse(chunks, media_type="application/x-netcdf",
                                 headers={"Content-Disposition": f'attachment; filename="{job_id}.nc"',
                                          "Content-Length": str(size)})
    _, chunks = store.result_file(tenant, job_id, "draws")
    arrays = unpack(b"".join(chunks))
    wanted = [v for v in vars.split(",") if v] if vars else list(arrays)
    unknown = [v for v in wanted if v not in arrays]
    if unknown:
        raise SpecError([Problem("vars", f"unknown variable(s) {', '.join(unknown)}; known: {', '.join(arrays)}")])
    return {"job": job_id, "dims": ["chain", "draw"], "draws": {v: np.asarray(arrays[v]).tolist() for v in wanted}}


@router.get("/{job_id}/events")
async def events(job_id: str, store: Store, tenant: Tenant) -> StreamingResponse:
    """Server-sent events: a `progress` event whenever chains move, then one `end` event with the final state
    (`deleted` if the job is deleted meanwhile)."""
    await run_in_threadpool(store.get, tenant, job_id)

    async def stream() -> AsyncIterator[str]:
        last = None
        while True:
            try:
                job = await run_in_threadpool(_read, store, tenant, job_id, diagnostics=False)
            except NotFoundError:
                yield f"event: end\ndata: {json.dumps({'state': 'deleted'})}\n\n"
                return
            except RedisError:  # the stream outlives a Redis outage: no event until Redis answers again
                await asyncio.sleep(1.0)
                continue
            payload = job.model_dump_json()
            if payload != last:
                yield f"event: progress\ndata: {payload}\n\n"
                last = payload
            if job.state.terminal:
                yield f"event: end\ndata: {json.dumps({'state': job.state.value})}\n\n"
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
