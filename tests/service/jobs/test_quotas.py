"""Quotas against a real Redis: submissions per minute, queued chains, per-tenant overrides; and a seeded
resubmit of a cancelled job runs it again."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis

from service import keys
from service.config import Settings
from service.exceptions import QuotaExceededError
from service.jobs.quotas import Quota, read_quotas_file
from service.jobs.record import JobState
from service.jobs.store import JobStore
from tests.service.jobs.conftest import submit_eight_schools


def store_with(redis: Redis, redis_server: str, **settings: object) -> JobStore:
    return JobStore(redis, Settings(redis_url=redis_server, **settings))  # type: ignore[arg-type]


def test_submissions_per_minute(redis: Redis, redis_server: str) -> None:
    store = store_with(redis, redis_server, quota_submissions_per_minute=3)
    for seed in range(3):
        submit_eight_schools(store, "t", seed=seed)
    with pytest.raises(QuotaExceededError, match="over 3 submissions per minute") as info:
        submit_eight_schools(store, "t", seed=99)
    assert 1 <= info.value.retry_after <= 61
    submit_eight_schools(store, "u", seed=99)  # another tenant's own budget


def test_queued_chains(redis: Redis, redis_server: str) -> None:
    store = store_with(redis, redis_server, quota_queued_chains=5)
    submit_eight_schools(store, "t", seed=1)  # 2 chains: 1 dispatched (the window), 1 queued
    submit_eight_schools(store, "t", seed=2)
    submit_eight_schools(store, "t", seed=3)
    with pytest.raises(QuotaExceededError, match="5 chains already queued; 2 more would exceed") as info:
        submit_eight_schools(store, "t", seed=4)
    assert info.value.retry_after > 0
    assert submit_eight_schools(store, "t", seed=1)  # the same seeded request is free: it returns the job
    assert not redis.exists(keys.job("jnone"))


def test_per_tenant_overrides(tmp_path: Path, redis: Redis, redis_server: str) -> None:
    path = tmp_path / "quotas.yaml"
    path.write_text("big:\n  queued_chains: 100\n  running_chains: 8\nsmall:\n  submissions_per_minute: 1\n")
    store = store_with(redis, redis_server, quotas_file=path, quota_queued_chains=10)
    assert store.quotas.of("big") == Quota(queued_chains=100, running_chains=8, submissions_per_minute=600)
    assert store.quotas.of("small").queued_chains == 10 and store.quotas.of("other") == store.quotas.default
    submit_eight_schools(store, "big", seed=1)
    assert redis.hget(keys.TENANT_LIMITS, "big") == b"8"
    submit_eight_schools(store, "small", seed=1)
    with pytest.raises(QuotaExceededError):
        submit_eight_schools(store, "small", seed=2)
    path.write_text("big:\n  queued_chains: 0\n")
    with pytest.raises(ValueError, match="quota of tenant 'big'"):
        read_quotas_file(path, store.quotas.default)


def test_a_seeded_resubmit_of_a_cancelled_job_runs_it_again(redis: Redis, store: JobStore) -> None:
    job_id = submit_eight_schools(store)
    store.cancel("t", job_id)
    assert store.queue.queued("t") == 0  # its queued chain left the queue with it
    assert submit_eight_schools(store) == job_id
    record = store.get("t", job_id)
    assert record.state is JobState.QUEUED and record.error is None
    assert [c.attempts for c in store.chains(record)] == [0, 0]
    assert store.queue.queued("t") + store.queue.length() == 3  # the new run's 2, and one stale dispatched entry
