"""The API application factory; service.api.server serves it (with the connection limits uvicorn lacks)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import datasets, elicit, errors, health, jobs, models, pages, priors
from service.api.auth import Authenticate
from service.config import ApiSettings
from service.connect import redis_client
from service.datasets import DatasetStore
from service.jobs.store import JobStore
from service.metrics import ClusterCollector, HttpMetrics
from service.plots import JobFigures
from service.priors.backends import backend_for
from service.priors.scheduler import LocalScheduler
from service.priors.schedules import ScheduleStore
from service.priors.store import PriorStore


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()  # refuses to start without tokens (unless auth is disabled)
    app = FastAPI(title="chainyard", version="1", summary="Bayesian inference (NUTS) as a service",
                  lifespan=_lifespan)
    redis = redis_client(settings)
    app.state.settings = settings
    app.state.redis = redis
    app.state.readiness = redis_client(settings, timeout=settings.readiness_timeout)
    app.state.store = JobStore(redis, settings)
    app.state.datasets = DatasetStore(redis, settings)
    app.state.priors = PriorStore(jobs=app.state.store, datasets=app.state.datasets)
    app.state.schedules = ScheduleStore(priors=app.state.priors, backend=backend_for(settings, redis=redis))
    app.state.priors.unschedule = app.state.schedules.forget  # deleting a prior deletes its schedule
    app.state.figures = JobFigures(redis, cpu_share=settings.diagnostics_cpu_share)  # cached per draw count
    app.state.cluster_metrics = CollectorRegistry(auto_describe=False)
    app.state.cluster_metrics.register(ClusterCollector(redis))
    errors.install(app)
    for router in (jobs.router, datasets.router, pages.router, models.router, elicit.router,
                   priors.router, health.router):
        app.include_router(router)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(Authenticate, settings=settings)  # before the body is read, even its length checked
    app.add_middleware(HttpMetrics)  # outermost: counts 401s and 413s too
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While the app serves: reconcile the schedules with their backend (in a thread: a slow backend must not
    delay start) and, in local mode, run the scheduler thread that fires them."""
    settings: ApiSettings = app.state.settings
    schedules: ScheduleStore = app.state.schedules
    threading.Thread(target=schedules.reconcile_quietly, name="chainyard-reconcile", daemon=True).start()
    scheduler = None
    if settings.scheduler == "local":
        scheduler = LocalScheduler(app.state.redis, app.state.priors,
                                   starting_deadline=settings.schedule_starting_deadline_seconds)
        scheduler.start()
    try:
        yield
    finally:
        if scheduler is not None:
            scheduler.stop()


class BodyLimit:
    """413 for bodies over the limit, whether or not they announce their length.

    A chunked body is counted as it is read: over the limit, reading raises HTTPException(413), which FastAPI
    lets through its body parsing (any other exception there becomes a 400) to the error handler.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await errors.respond(send, errors.error(413, "too_large", self._message))
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, self._message)
            return message

        await self.app(scope, limited, send)

    @property
    def _message(self) -> str:
        return f"request body over {self.limit} bytes"
