"""The chain queue against a real Redis: claim order, reclaim after the visibility timeout, ack deletes,
exact depth."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis import Redis

from service import keys
from service.queue import ChainQueue, Depth
from tests.conftest import real_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with real_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def queue(redis_server: str) -> ChainQueue:
    redis = Redis.from_url(redis_server)
    redis.flushall()
    q = ChainQueue(redis, visibility_timeout=0.3)
    q.ensure_group()
    q.ensure_group()  # idempotent
    return q


def put(queue: ChainQueue, job_id: str, chains: int) -> None:
    pipe = queue.r.pipeline()
    queue.put(pipe, job_id, chains)
    pipe.execute()


def test_new_tasks_in_order_and_own_pending_first(queue: ChainQueue) -> None:
    put(queue, "ja", 2)
    put(queue, "jb", 1)
    first = queue.claim_next("w0", block_ms=10)
    assert first is not None and (first.job_id, first.chain) == ("ja", 0)
    assert queue.claim_next("w0", block_ms=10) == first  # its own pending task again (a restart resumes it)
    other = queue.claim_next("w1", block_ms=10)
    assert other is not None and (other.job_id, other.chain) == ("ja", 1)
    assert queue.depth() == Depth(waiting=1, pending=2)


def test_an_idle_task_is_reclaimed_unless_kept_claimed(queue: ChainQueue) -> None:
    put(queue, "ja", 2)
    kept = queue.claim_next("w0", block_ms=10)
    abandoned = queue.claim_next("w2", block_ms=10)
    assert kept is not None and abandoned is not None
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # w0 keeps refreshing its claim; w2 is gone
        queue.keep_claimed("w0", kept)
        time.sleep(0.05)
    assert queue.claim_next("w1", block_ms=10) == abandoned
    assert queue.claim_next("w1", block_ms=10) == abandoned  # now w1's own


def test_ack_deletes_so_the_stream_empties(queue: ChainQueue) -> None:
    for j in range(5):
        put(queue, f"j{j}", 3)
    assert queue.length() == 15 and queue.depth() == Depth(waiting=15, pending=0)
    done = 0
    while (task := queue.claim_next("w0", block_ms=10)) is not None:
        queue.ack(task)
        done += 1
        assert queue.length() == 15 - done
    assert done == 15 and queue.length() == 0 and queue.depth() == Depth(waiting=0, pending=0)
    assert queue.r.xlen(keys.TASKS) == 0


def test_depth_before_any_worker_made_the_group(redis_server: str) -> None:
    redis = Redis.from_url(redis_server)
    redis.flushall()
    q = ChainQueue(redis, visibility_timeout=1)
    assert q.depth() == Depth(waiting=0, pending=0)  # no stream yet
    put(q, "ja", 4)
    assert q.depth() == Depth(waiting=4, pending=0)  # no group yet: all waiting
