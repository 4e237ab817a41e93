"""A real Redis server for the job store's tests (one per module, flushed per test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from service.config import Settings
from service.jobs.store import JobStore
from service.language.loader import load_file

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture
def redis(empty_redis: Redis) -> Redis:
    return empty_redis


@pytest.fixture
def store(redis: Redis, redis_server: str) -> JobStore:
    return JobStore(redis, Settings(redis_url=redis_server, retention_seconds=600))


def submit_eight_schools(store: JobStore, tenant: str = "t", **sampler: Any) -> str:
    model = load_file(EXAMPLES / "eight_schools.yaml")
    record, _ = store.submit(tenant, model=model, sampler={"chains": 2, "seed": 1, **sampler}, name=None, labels={})
    return record.id


def keys_of(redis: Redis, job_id: str) -> list[bytes]:
    return sorted(redis.scan_iter(match=f"*{job_id}*"))
