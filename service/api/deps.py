"""Dependencies of the routes, as `Annotated` aliases (one place)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.datasets import DatasetStore
from service.exceptions import AuthError
from service.jobs.store import JobStore
from service.plots import JobFigures
from service.priors.schedules import ScheduleStore
from service.priors.store import PriorStore


def get_store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def get_figures(request: Request) -> JobFigures:
    figures: JobFigures = request.app.state.figures
    return figures


def get_datasets(request: Request) -> DatasetStore:
    datasets: DatasetStore = request.app.state.datasets
    return datasets


def get_priors(request: Request) -> PriorStore:
    priors: PriorStore = request.app.state.priors
    return priors


def get_schedules(request: Request) -> ScheduleStore:
    schedules: ScheduleStore = request.app.state.schedules
    return schedules


def get_tenant(request: Request) -> str:
    """The tenant service.api.auth.Authenticate found for this request (before its body was read)."""
    tenant = getattr(request.state, "tenant", None)
    if not isinstance(tenant, str):
        raise AuthError("missing bearer token (Authorization: Bearer <token>)")
    return tenant


Store = Annotated[JobStore, Depends(get_store)]
Tenant = Annotated[str, Depends(get_tenant)]
Figures = Annotated[JobFigures, Depends(get_figures)]
Datasets = Annotated[DatasetStore, Depends(get_datasets)]
Priors = Annotated[PriorStore, Depends(get_priors)]
Schedules = Annotated[ScheduleStore, Depends(get_schedules)]
