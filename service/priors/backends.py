"""Where schedules run (Settings.scheduler): the API's own thread (local), a Kubernetes CronJob, or nothing.

The schedule store (service.priors.schedules) keeps every schedule in Redis and tells the backend; the local
backend needs telling nothing, since service.priors.scheduler.LocalScheduler reads Redis itself. The
Kubernetes backend (service.priors.kube) is imported only in Kubernetes mode, so that the `kubernetes` package
is needed there alone.
"""

from __future__ import annotations

import importlib
from typing import Any

from service.config import Settings
from service.connect import redis_client
from service.priors.schedule import Schedule, ScheduleBackend
from service.priors.schedules import read_schedule


class LocalBackend:
    """Schedules run by the API processes' LocalScheduler threads, straight from Redis."""

    kind = "local"

    def __init__(self, redis: Any) -> None:
        self.r = redis

    def apply(self, *, tenant: str, prior: str, schedule: Schedule) -> None:
        """Nothing to do: the scheduler threads read the schedule from Redis."""

    def delete(self, *, tenant: str, prior: str) -> None:
        """Nothing to do: the scheduler threads read the schedule from Redis."""

    def observed(self, *, tenant: str, prior: str) -> Schedule | None:
        found = read_schedule(self.r, tenant, prior)
        return None if found is None else found[0]


class NoBackend:
    """CHAINYARD_SCHEDULER=none: schedules are stored and shown, and nothing runs them."""

    kind = "none"

    def apply(self, *, tenant: str, prior: str, schedule: Schedule) -> None:
        """Nothing runs schedules here."""

    def delete(self, *, tenant: str, prior: str) -> None:
        """Nothing runs schedules here."""

    def observed(self, *, tenant: str, prior: str) -> Schedule | None:
        return None


def backend_for(settings: Settings, *, redis: Any = None) -> ScheduleBackend:
    """The backend Settings.scheduler names (`redis`: the client the local backend reads; default: a new one)."""
    if settings.scheduler == "kubernetes":
        kube = importlib.import_module("service.priors.kube")  # the kubernetes package: in this mode only
        backend: ScheduleBackend = kube.KubernetesBackend.from_settings(settings)
        return backend
    if settings.scheduler == "none":
        return NoBackend()
    return LocalBackend(redis if redis is not None else redis_client(settings))
