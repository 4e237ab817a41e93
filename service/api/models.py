"""/v1/models/validate: what a spec compiles to, or every problem with its path."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.api.deps import Tenant
from service.api.jobs import ERRORS
from service.language.describe import describe
from service.sampler import parse_job
from service.schemas import ValidateRequest, ValidateResponse

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERRORS)


@router.post("/validate", response_model=ValidateResponse)
def validate(body: ValidateRequest, tenant: Tenant, request: Request) -> dict[str, Any]:
    limits = request.app.state.settings.cost_limits()  # the same limits as a submission
    spec, _ = request.app.state.store.resolve_priors(tenant, body.model)  # `priors_from` as a job would get it
    model, settings = parse_job({"model": spec, "sampler": body.sampler}, limits=limits)
    return {**describe(model), "sampler": settings.model_dump()}
