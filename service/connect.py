"""Redis clients: the one place their timeouts are set. No JAX here, so workers and the API share it."""

from __future__ import annotations

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.config import Settings


def redis_client(settings: Settings, *, timeout: float | None = None) -> Redis:
    """A client of `settings.redis_url` whose connects and replies are bounded in time.

    Without timeouts a Redis that hangs (stopped, partitioned, swapping) rather than refusing would hold
    every caller forever. Pooled connections idle for `redis_health_check_interval` are PINGed before reuse,
    so one broken by a Redis restart is replaced instead of failing a request. Commands are not retried
    here: a timed-out write may have been applied, and callers know which of theirs are safe to repeat.
    `timeout` replaces both the connect and the reply timeout (a readiness probe that must answer quickly).
    """
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_connect_timeout if timeout is None else timeout,
        socket_timeout=settings.redis_socket_timeout if timeout is None else timeout,
        socket_keepalive=True,
        health_check_interval=settings.redis_health_check_interval,
        retry=Retry(NoBackoff(), 0),
    )
