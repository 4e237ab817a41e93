"""/v1/jobs: submit, read, list, cancel, delete, summary, draws, events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import Store, Tenant
from service.codec import unpack
from service.schemas import TERMINAL, ErrorResponse, JobCreate, JobList, JobPublic

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 404, 409, 413, 422)}
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)


@router.post("", status_code=202, response_model=JobPublic)
def submit(body: JobCreate, store: Store, tenant: Tenant) -> JobPublic:
    """Queue a job: one task per chain. With a seed, an identical request returns the same job."""
    record, _ = store.submit(tenant, body)
    return store.public(record, diagnostics=False)


@router.get("", response_model=JobList)
def list_jobs(store: Store, tenant: Tenant,
              state: Annotated[Literal["queued", "running", "succeeded", "failed", "cancelled"] | None, Query()] = None,
              label: Annotated[str | None, Query(max_length=200, description="key=value")] = None,
              offset: Annotated[int, Query(ge=0)] = 0,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> JobList:
    return store.list(tenant, state=state, label=label, offset=offset, limit=limit)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, store: Store, tenant: Tenant) -> JobPublic:
    return store.public(store.get(tenant, job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel(job_id: str, store: Store, tenant: Tenant) -> JobPublic:
    """Stops every chain at its next block boundary."""
    return store.public(store.cancel(tenant, job_id), diagnostics=False)


@router.delete("/{job_id}", status_code=204)
def delete(job_id: str, store: Store, tenant: Tenant) -> Response:
    """Cancels the job if it runs, then removes it and its results."""
    store.delete(tenant, job_id)
    return Response(status_code=204)


@router.get("/{job_id}/summary")
def summary(job_id: str, store: Store, tenant: Tenant) -> dict[str, Any]:
    """Per variable and element: mean, sd, hdi_3%, hdi_97%, mcse, ess_bulk, ess_tail, r_hat; totals."""
    result: dict[str, Any] = json.loads(store.result(tenant, job_id, "summary"))
    return result


@router.get("/{job_id}/draws", response_model=None)
def draws(job_id: str, store: Store, tenant: Tenant,
          format: Annotated[Literal["netcdf", "json"], Query()] = "json",
          vars: Annotated[str | None, Query(max_length=2000, description="comma-separated names")] = None,
          ) -> Response | dict[str, Any]:
    """ArviZ InferenceData as netCDF (`az.from_netcdf`), or JSON {variable: [chain][draw]...}."""
    if format == "netcdf":
        blob = store.result(tenant, job_id, "netcdf")
        return Response(blob, media_type="application/x-netcdf",
                        headers={"Content-Disposition": f'attachment; filename="{job_id}.nc"'})
    arrays = unpack(store.result(tenant, job_id, "draws"))
    wanted = [v for v in vars.split(",") if v] if vars else list(arrays)
    unknown = [v for v in wanted if v not in arrays]
    if unknown:
        from service.exceptions import Problem, SpecError

        raise SpecError([Problem("vars", f"unknown variable(s) {', '.join(unknown)}; known: {', '.join(arrays)}")])
    return {"job": job_id, "dims": ["chain", "draw"], "draws": {v: np.asarray(arrays[v]).tolist() for v in wanted}}


@router.get("/{job_id}/events")
async def events(job_id: str, store: Store, tenant: Tenant) -> StreamingResponse:
    """Server-sent events: a `progress` event whenever chains move, then one `end` event."""
    await run_in_threadpool(store.get, tenant, job_id)

    async def stream() -> AsyncIterator[str]:
        last = None
        while True:
            record = await run_in_threadpool(store.get, tenant, job_id)
            public = await run_in_threadpool(store.public, record, diagnostics=False)
            payload = public.model_dump_json()
            if payload != last:
                yield f"event: progress\ndata: {payload}\n\n"
                last = payload
            if public.state in TERMINAL:
                yield f"event: end\ndata: {json.dumps({'state': public.state})}\n\n"
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
