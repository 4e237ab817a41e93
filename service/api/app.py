"""The API application factory: `uvicorn service.api.app:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from redis import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import errors, health, jobs, models
from service.config import ApiSettings
from service.jobs.store import JobStore
from service.metrics import ClusterCollector, HttpMetrics


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()  # refuses to start without tokens (unless auth is disabled)
    app = FastAPI(title="chainyard", version="1", summary="Bayesian inference (NUTS) as a service")
    redis = Redis.from_url(settings.redis_url)
    app.state.settings = settings
    app.state.redis = redis
    app.state.store = JobStore(redis, settings)
    app.state.cluster_metrics = CollectorRegistry(auto_describe=False)
    app.state.cluster_metrics.register(ClusterCollector(redis))
    errors.install(app)
    for router in (jobs.router, models.router, health.router):
        app.include_router(router)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(HttpMetrics)  # outermost: counts 413s too
    return app


class BodyLimit:
    """413 for bodies over the limit, whether or not they announce their length."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(send, self.limit)


class _TooLarge(Exception):  # noqa: N818 - control flow
    pass


async def _too_large(send: Send, limit: int) -> None:
    response = errors.error(413, "too_large", f"request body over {limit} bytes")
    await response({"type": "http"}, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
