"""The chain queue against a real Redis: per-tenant queues dispatched round-robin through a small window,
claim order, reclaim after the visibility timeout, ack deletes, exact depth."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis import Redis

from service import keys
from service.queue import ChainQueue, Depth, Task
from tests.conftest import real_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with real_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


def make_queue(redis_server: str, *, window: int = 1, visibility: float = 0.3) -> ChainQueue:
    redis = Redis.from_url(redis_server)
    redis.flushall()
    q = ChainQueue(redis, visibility_timeout=visibility, window=window)
    q.ensure_group()
    q.ensure_group()  # idempotent
    return q


@pytest.fixture
def queue(redis_server: str) -> ChainQueue:
    return make_queue(redis_server)


def put(queue: ChainQueue, tenant: str, job_id: str, chains: int, running: int = 0) -> None:
    pipe = queue.r.pipeline()
    queue.limit(pipe, tenant, running)
    queue.put(pipe, tenant, job_id, chains)
    pipe.execute()
    queue.dispatch()


def claim(queue: ChainQueue, consumer: str = "w0") -> Task:
    task = queue.claim_next(consumer, block_ms=10)
    assert task is not None
    return task


def test_new_tasks_in_order_and_own_pending_first(queue: ChainQueue) -> None:
    put(queue, "alice", "ja", 2)
    first = claim(queue, "w0")
    assert (first.job_id, first.chain, first.tenant) == ("ja", 0, "alice")
    assert claim(queue, "w0") == first  # its own pending task again (a restart resumes it)
    other = claim(queue, "w1")
    assert (other.job_id, other.chain) == ("ja", 1)
    assert queue.claim_next("w2", block_ms=10) is None
    assert queue.depth() == Depth(waiting=0, pending=2)


def test_the_window_bounds_what_is_dispatched(redis_server: str) -> None:
    queue = make_queue(redis_server, window=3)
    put(queue, "alice", "ja", 10)
    assert queue.length() == 3 and queue.queued("alice") == 7 and queue.in_flight("alice") == 3
    assert queue.depth() == Depth(waiting=10, pending=0)
    claim(queue)  # claiming refills the window
    assert queue.length() == 4 and queue.queued("alice") == 6
    assert queue.depth() == Depth(waiting=9, pending=1)


def test_tenants_are_served_round_robin(queue: ChainQueue) -> None:
    for j in range(20):
        put(queue, "flood", f"jf{j}", 2)
    put(queue, "quiet", "jq", 2)
    order = []
    for _ in range(8):
        task = claim(queue)
        order.append(task.tenant)
        queue.ack(task)
    assert order.count("quiet") == 2 and order.index("quiet") <= 2, order  # behind one flood task at most


def test_the_running_quota_holds_a_tenant_back_but_not_others(queue: ChainQueue) -> None:
    put(queue, "capped", "jc", 5, running=2)
    put(queue, "free", "jf", 3)
    tasks = [claim(queue, f"w{i}") for i in range(5)]
    assert sorted(t.tenant for t in tasks) == ["capped", "capped", "free", "free", "free"]
    assert queue.claim_next("w9", block_ms=10) is None and queue.queued("capped") == 3
    queue.ack(next(t for t in tasks if t.tenant == "capped"))
    assert claim(queue, "w9").tenant == "capped"  # one finished, the next is dispatched
    assert queue.in_flight("capped") == 2


def test_an_idle_task_is_reclaimed_unless_kept_claimed(redis_server: str) -> None:
    queue = make_queue(redis_server, window=2)
    put(queue, "alice", "ja", 2)
    kept, abandoned = claim(queue, "w0"), claim(queue, "w2")
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # w0 keeps refreshing its claim; w2 is gone
        queue.keep_claimed("w0", kept)
        time.sleep(0.05)
    assert claim(queue, "w1") == abandoned
    assert claim(queue, "w1") == abandoned  # now w1's own
    assert queue.in_flight("alice") == 2  # reclaiming does not count it twice


def test_ack_deletes_so_the_stream_empties(queue: ChainQueue) -> None:
    for j in range(5):
        put(queue, f"t{j % 2}", f"j{j}", 3)
    assert queue.depth() == Depth(waiting=15, pending=0)
    done = 0
    while (task := queue.claim_next("w0", block_ms=10)) is not None:
        queue.ack(task)
        done += 1
        assert queue.depth().waiting == 15 - done
    assert done == 15 and queue.length() == 0 and queue.depth() == Depth(waiting=0, pending=0)
    assert queue.r.xlen(keys.TASKS) == 0 and queue.r.hgetall(keys.TENANT_INFLIGHT) == {}
    assert queue.r.llen(keys.TENANT_RING) == 0


def test_dropping_a_job_removes_its_queued_chains(queue: ChainQueue) -> None:
    put(queue, "alice", "ja", 4)
    put(queue, "alice", "jb", 1)
    pipe = queue.r.pipeline()
    queue.drop(pipe, "alice", "ja", 4)
    pipe.execute()
    tasks = [claim(queue, f"w{i}") for i in range(2)]
    assert [(t.job_id, t.chain) for t in tasks] == [("ja", 0), ("jb", 0)]  # ja/0 was already dispatched
    assert queue.claim_next("w9", block_ms=10) is None


def test_depth_before_any_worker_made_the_group(redis_server: str) -> None:
    redis = Redis.from_url(redis_server)
    redis.flushall()
    q = ChainQueue(redis, visibility_timeout=1)
    assert q.depth() == Depth(waiting=0, pending=0)  # no stream yet
    put(q, "alice", "ja", 4)
    assert q.depth() == Depth(waiting=4, pending=0)  # no group yet: all waiting
