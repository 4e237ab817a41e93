"""A real local stack for service tests: Redis server, uvicorn API, worker processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from cli.stack import Stack, free_port
from service.client import Client

TOKENS = {"alice": "tok-alice", "bob": "tok-bob"}


def make_stack(root: Path, compile_cache: Path, *, workers: int = 2, prometheus_port: int | None = None,
               **overrides: Any) -> Stack:
    """A stack with small blocks and a short visibility timeout; `overrides` are more Settings fields."""
    settings = {
        "tokens": {t: tenant for tenant, t in TOKENS.items()},
        "compile_cache_dir": compile_cache,
        "max_block": 50,
        "block_seconds": 0.05,
        "checkpoint_seconds": 0.2,  # a few blocks per checkpoint write, so kills find checkpoints
        "visibility_timeout": 4,
        **overrides,
    }
    return Stack(data_dir=root, port=free_port(), workers=workers, token=TOKENS["alice"], overrides=settings,
                 prometheus_port=prometheus_port, scrape_interval="1s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, compile_cache: Path) -> Iterator[Stack]:
    s = make_stack(tmp_path_factory.mktemp("stack"), compile_cache)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def alice(stack: Stack) -> Iterator[Client]:
    with Client(stack.url, TOKENS["alice"]) as c:
        yield c


@pytest.fixture
def bob(stack: Stack) -> Iterator[Client]:
    with Client(stack.url, TOKENS["bob"]) as c:
        yield c


@pytest.fixture
def redis(stack: Stack) -> Redis:
    return Redis.from_url(stack.redis_url)


def wait_for(client: Client, job_id: str, predicate: Any, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(job_id)
        if predicate(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"condition not reached; last: {job['state']} {[c['iteration'] for c in job['chains']]}")


def finished(client: Client, job_id: str, timeout: float = 240) -> dict[str, Any]:
    return wait_for(client, job_id, lambda j: j["state"] in ("succeeded", "failed", "cancelled"), timeout)
