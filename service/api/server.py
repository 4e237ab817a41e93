"""The API's HTTP server: uvicorn's h11 protocol with the connection limits uvicorn lacks.

uvicorn (0.54) times out only idle keep-alive connections between requests. A connection that sends part of
a request head and then nothing, or drips it a byte at a time, is held forever, one file descriptor each;
ASGI middleware cannot help, since the head is parsed before the application is called. hypercorn's
`keep_alive_timeout`/`read_timeout` restart on every read, so a drip defeats them too; granian has an
absolute head deadline (hyper's `header_read_timeout`) but no body-pause limit or connection cap, and would
replace the server, its logging and its process model. So the API keeps uvicorn and subclasses its h11
protocol (`H11Protocol`, pinned with uvicorn in requirements.lock) to add:

- a head deadline: from the moment a connection opens, or its previous response ends, to the end of the
  next request head; absolute, so dripping bytes does not extend it (nginx's `client_header_timeout`);
- a body pause limit between two reads of a request body (nginx's `client_body_timeout`);
- a bounded drain: after an early answer (401 before the body, 413) uvicorn reads and drops the rest of
  the body, so clients that send a whole body before reading still see the answer; at most
  `max_request_bytes` are dropped before the connection is closed;
- a connection cap, kept (with the listen backlog) below the file-descriptor limit: over it, the oldest
  connection still waiting for a request head is closed (a slow-header flood evicts itself, not clients
  that send whole requests), or the new one when none is waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service import metrics
from service.api.app import create_app
from service.config import ApiSettings

log = logging.getLogger("chainyard.api")

FD_RESERVE = 256
"""File descriptors kept free of HTTP connections: Redis connections, the listening socket, logs, imports."""


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    header_timeout: float
    """Seconds from connection open (or the previous response's end) to the end of a request head."""
    body_timeout: float
    """Longest pause between two reads of a request body, in seconds."""
    max_connections: int
    """Open connections at most."""
    drain_bytes: int
    """Most bytes of an unread body dropped after an early answer before the connection is closed."""


class GuardedH11Protocol(H11Protocol):
    """One connection; `protocol_class` makes the subclass a server uses (its limits, its registry)."""

    limits: ClassVar[ConnectionLimits]
    awaiting_head: ClassVar[dict[GuardedH11Protocol, None]]
    """Connections waiting for a request head, oldest first (a dict keeps insertion order)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._dropped = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        metrics.HTTP_CONNECTIONS.inc()
        if len(self.connections) > self.limits.max_connections:
            victim = next(iter(self.awaiting_head), self)
            victim.drop("over_capacity")
            if victim is self:
                return
        self._watch(fresh_data=False)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and self.cycle.response_complete and self.conn.their_state is h11.SEND_BODY:
            self._dropped += len(data)  # uvicorn drops the body of a request already answered
            if self._dropped > self.limits.drain_bytes:
                self.drop("drain_limit")
                return
        self._watch(fresh_data=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch(fresh_data=False)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._stop_head_timer()
        self._stop_body_timer()
        metrics.HTTP_CONNECTIONS.dec()

    def drop(self, reason: str) -> None:
        """Close the connection now, counted by reason."""
        self._stop_head_timer()
        self._stop_body_timer()
        if self.transport.is_closing():
            return
        metrics.HTTP_CONNECTIONS_CLOSED.labels(reason).inc()
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()

    def _watch(self, *, fresh_data: bool) -> None:
        """Arm or stop the timers for what the connection waits for now (called after every event)."""
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:  # waiting for a request head
            if self._head_timer is None:
                self._dropped = 0
                self._head_timer = self.loop.call_later(self.limits.header_timeout, self.drop, "header_timeout")
                self.awaiting_head[self] = None
        else:
            self._stop_head_timer()
        if state is h11.SEND_BODY:
            if fresh_data or self._body_timer is None:
                self._stop_body_timer()
                self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_paused)
        else:
            self._stop_body_timer()

    def _body_paused(self) -> None:
        self._body_timer = None
        if self.flow.read_paused:  # the application is slow to read, not the client to send
            self._watch(fresh_data=True)
        else:
            self.drop("body_timeout")

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.awaiting_head.pop(self, None)

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None


def protocol_class(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """The protocol class of one server: its limits and its own registry of connections awaiting a head."""

    class Protocol(GuardedH11Protocol):
        pass

    Protocol.limits = limits
    Protocol.awaiting_head = {}
    return Protocol


def connection_budget(wanted: int) -> tuple[int, int]:
    """(max_connections, listen backlog) that fit the file-descriptor limit, raised to its hard limit first (the
    default soft limit, often 1024, is far below what a server needs). Connections in the backlog hold a
    descriptor too (asyncio accepts a whole backlog in one burst before any is counted), so cap + backlog +
    FD_RESERVE stays under the limit; `wanted` is lowered, with a warning, if need be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    backlog = min(2048, wanted)
    if soft == resource.RLIM_INFINITY or wanted + backlog + FD_RESERVE <= soft:
        return wanted, backlog
    backlog = max(16, min(2048, (soft - FD_RESERVE) // 4))
    cap = max(16, soft - FD_RESERVE - backlog)
    log.warning("max_connections lowered from %d to %d: the file-descriptor limit is %d", wanted, cap, soft)
    return cap, backlog


def serve(settings: ApiSettings, *, host: str, port: int, log_level: str) -> None:
    """Run the API in this process until SIGTERM/SIGINT."""
    max_connections, backlog = connection_budget(settings.max_connections)
    limits = ConnectionLimits(header_timeout=settings.header_timeout_seconds,
                              body_timeout=settings.body_timeout_seconds, max_connections=max_connections,
                              drain_bytes=settings.max_request_bytes)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, proxy_headers=True,
                access_log=False, http=protocol_class(limits), ws="none", backlog=backlog)
