"""Liveness, readiness (Redis reachable) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from redis.exceptions import RedisError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: answered on the event loop, so it does not wait behind requests stuck on a hung Redis."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request, response: Response) -> dict[str, str]:
    """Ready: Redis answered PING within Settings.readiness_timeout (a hung Redis fails this, not only a
    refusing one)."""
    try:
        request.app.state.readiness.ping()
    except RedisError as exc:
        response.status_code = 503
        return {"status": "redis unreachable", "detail": str(exc)}
    return {"status": "ok"}


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """This process's metrics, then the cluster-wide ones (empty unless this process holds the lease)."""
    body = generate_latest(REGISTRY) + generate_latest(request.app.state.cluster_metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
