"""The job store against a real Redis: the pinned model, small records, idempotent seeded submit, states."""

from __future__ import annotations

import pytest
from redis import Redis

from service import keys
from service.exceptions import NotFoundError
from service.jobs.record import JobState
from service.jobs.store import JobStore
from service.language.loader import load_file
from service.sampler import parse_job
from tests.service.jobs.conftest import EXAMPLES, keys_of, submit_eight_schools


def test_submit_pins_the_graph_spec_and_keeps_the_record_small(redis: Redis, store: JobStore) -> None:
    doc = load_file(EXAMPLES / "radon.yaml")  # the formula front end
    record, created = store.submit("t", model=doc, sampler={"chains": 2, "seed": 3}, name="radon",
                                   labels={"k": "v"})
    assert created and record.state is JobState.QUEUED and record.chains == 2
    pinned = store.pinned(record.id)
    assert pinned is not None and pinned.fingerprint == record.model_fingerprint
    assert "formula" not in pinned.graph
    assert pinned.model().fingerprint() == parse_job(doc)[0].fingerprint()
    stored = redis.hgetall(keys.job(record.id))
    assert sum(len(v) for v in stored.values()) < 2000  # the data live beside the record, not in it
    assert store.get("t", record.id) == record
    assert store.queue.depth().waiting == 2 and redis.xlen(keys.TASKS) == 1  # the dispatch window is 1


def test_seeded_resubmit_is_the_same_job_and_another_tenant_sees_nothing(store: JobStore) -> None:
    a = submit_eight_schools(store, "t")
    assert submit_eight_schools(store, "t") == a
    assert store.submit("u", model=load_file(EXAMPLES / "eight_schools.yaml"), sampler={"chains": 2, "seed": 1},
                        name=None, labels={})[0].id != a  # scoped to the tenant
    with pytest.raises(NotFoundError):
        store.get("u", a)


def test_states_move_once(redis: Redis, store: JobStore) -> None:
    job_id = submit_eight_schools(store)
    store.mark_running(job_id)
    assert store.get("t", job_id).state is JobState.RUNNING
    assert store.finish(job_id, JobState.FAILED, "chain 0: boom")
    assert not store.finish(job_id, JobState.SUCCEEDED)
    record = store.get("t", job_id)
    assert record.state is JobState.FAILED and record.error == "chain 0: boom" and record.finished_at
    assert all(0 < redis.ttl(k) <= 600 for k in keys_of(redis, job_id))
    assert redis.zscore(keys.jobs_in_state(JobState.FAILED), job_id) is not None
    assert redis.zscore(keys.jobs_in_state(JobState.RUNNING), job_id) is None


def test_list_filters_by_state_and_label(store: JobStore) -> None:
    model = load_file(EXAMPLES / "eight_schools.yaml")
    ids = [store.submit("t", model=model, sampler={"chains": 1, "seed": i}, name=None,
                        labels={"team": "a" if i % 2 else "b"})[0].id for i in range(4)]
    store.cancel("t", ids[1])
    page = store.list("t", state=None, label="team=a", offset=0, limit=10)
    assert [r.id for r, _ in page.jobs] == [ids[3], ids[1]] and page.total == 2
    page = store.list("t", state=JobState.CANCELLED, label=None, offset=0, limit=10)
    assert [r.id for r, _ in page.jobs] == [ids[1]]
    page = store.list("t", state=None, label=None, offset=1, limit=2)
    assert [r.id for r, _ in page.jobs] == [ids[2], ids[1]] and page.total == 4


def test_until_and_extensions_are_checked_against_the_server_limits(redis: Redis, redis_server: str) -> None:
    """An `until` job is sized at max_draws, an extension at its new length: over the limits, a 422 naming the
    field; a job that has not succeeded cannot be extended (409)."""
    from service.config import Settings
    from service.exceptions import ConflictError, SpecError

    store = JobStore(redis, Settings(redis_url=redis_server, max_iterations_per_job=10_000))
    with pytest.raises(SpecError) as caught:
        submit_eight_schools(store, warmup=100, draws=100, until={"max_draws": 5000})
    assert [(p.path, "until.max_draws" in p.message) for p in caught.value.problems] == [("sampler", True)]
    job_id = submit_eight_schools(store, warmup=100, draws=100, until={"max_draws": 4000})
    with pytest.raises(ConflictError, match="only a succeeded job can be extended"):
        store.extend("t", job_id, 100)
    redis.hset(keys.job(job_id), "state", "succeeded")  # as if it had run
    with pytest.raises(ConflictError, match="chain states are not stored"):
        store.extend("t", job_id, 100)
    for c in range(2):
        redis.rpush(keys.chain_state(job_id, c), b"x")
    with pytest.raises(SpecError) as caught:
        store.extend("t", job_id, 5000)
    assert [p.path for p in caught.value.problems] == ["draws"]
    assert store.extend("t", job_id, 100).state.value == "running"
