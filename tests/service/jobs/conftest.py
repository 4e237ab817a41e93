"""A real Redis server for the job store's tests (one per module, flushed per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from service.config import Settings
from service.jobs.store import JobStore
from service.language.loader import load_file
from tests.conftest import real_redis

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with real_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def redis(redis_server: str) -> Redis:
    r = Redis.from_url(redis_server)
    r.flushall()
    return r


@pytest.fixture
def store(redis: Redis, redis_server: str) -> JobStore:
    return JobStore(redis, Settings(redis_url=redis_server, retention_seconds=600))


def submit_eight_schools(store: JobStore, tenant: str = "t", **sampler: Any) -> str:
    model = load_file(EXAMPLES / "eight_schools.yaml")
    record, _ = store.submit(tenant, model=model, sampler={"chains": 2, "seed": 1, **sampler}, name=None, labels={})
    return record.id


def keys_of(redis: Redis, job_id: str) -> list[bytes]:
    return sorted(redis.scan_iter(match=f"*{job_id}*"))
