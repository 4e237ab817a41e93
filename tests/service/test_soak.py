"""Soak: jobs whose workers are SIGKILLed at random moments (warmup, sampling, between storing a chain and
acknowledging it, while the result is assembled; a third of them both workers), restarted under the same
name; and Redis SIGKILLed mid-job. Every job ends bit-identical to a fault-free run, none is left running,
and the queue metrics read true afterwards."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis import Redis

from cli.stack import Stack, start_redis
from service import keys
from service.client import Client
from service.codec import unpack
from service.jobs import blobs
from service.language.loader import load_file
from service.queue import ChainQueue, Depth
from service.sampler import parse_job
from tests.conftest import EXAMPLES
from tests.service.conftest import TOKENS, finished, make_stack

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("jax_ready")]
WARMUP, DRAWS, JOBS = 300, 300, 20
MOMENTS = ("warmup", "sampling", "stored", "assembly")
"""Where a kill lands: a chain in warmup, in sampling, a chain's draws stored (before its ack), all chains
stored (the last chain's worker assembles the result)."""


def job_doc(seed: int) -> dict[str, Any]:
    return {"model": load_file(EXAMPLES / "eight_schools.yaml"),
            "sampler": {"chains": 2, "warmup": WARMUP, "draws": DRAWS, "seed": seed}}


def reference(doc: dict[str, Any]) -> dict[str, np.ndarray]:
    from workers.engine import Engine

    model, settings = parse_job(doc)
    return Engine().run(model, settings).draws


@pytest.fixture
def stack(tmp_path: Path, compile_cache: Path) -> Iterator[Stack]:
    s = make_stack(tmp_path, compile_cache, workers=2)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def iterations(redis: Redis, job_id: str) -> list[int]:
    return [int(redis.hget(keys.chain(job_id, c), "iteration") or 0) for c in (0, 1)]


def condition(moment: str, target: int) -> Callable[[Redis, str], bool]:
    def reached(redis: Redis, job_id: str) -> bool:
        stored = [redis.exists(keys.chain_draws(job_id, c)) for c in (0, 1)]
        if moment == "stored":
            return any(stored)
        if moment == "assembly":
            return all(stored)
        return any(i >= target for i in iterations(redis, job_id))

    return reached


def kill_when(stack: Stack, redis: Redis, job_id: str, reached: Callable[[Redis, str], bool], victims: list[str],
              timeout: float = 120) -> bool:
    """SIGKILL `victims` once `reached` holds (polled every 2 ms); False if the job ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reached(redis, job_id):
            for name in victims:
                stack.worker_procs[name].send_signal(signal.SIGKILL)
            for name in victims:
                stack.worker_procs[name].wait()
            return True
        if redis.hget(keys.job(job_id), "state") in (b"succeeded", b"failed", b"cancelled"):
            return False
        time.sleep(0.002)
    raise AssertionError(f"kill point never reached; iterations {iterations(redis, job_id)}")


def test_twenty_jobs_each_with_workers_killed_end_bit_identical(stack: Stack) -> None:
    rng = random.Random(20)
    redis = Redis.from_url(stack.redis_url)
    landed: list[tuple[str, int, bool]] = []
    with Client(stack.url, TOKENS["alice"]) as client:
        for i in range(JOBS):
            doc = job_doc(500 + i)
            moment = MOMENTS[i % len(MOMENTS)]
            both = i % 3 == 0
            victims = ["worker-0", "worker-1"] if both else [rng.choice(["worker-0", "worker-1"])]
            target = rng.randrange(20, WARMUP - 20) if moment == "warmup" else rng.randrange(WARMUP + 20,
                                                                                           WARMUP + DRAWS - 20)
            job = client.submit(doc)
            killed = kill_when(stack, redis, job["id"], condition(moment, target), victims)
            for name in victims:
                stack.start_worker(name)  # same name and volume: it resumes its pending chains
            done = finished(client, job["id"], timeout=300)
            assert done["state"] == "succeeded", (i, moment, done["error"])
            got, want = unpack(blobs.read(redis, keys.result_file(job["id"], "draws")) or b""), reference(doc)
            for name in want:
                assert np.array_equal(got[name], want[name]), (i, moment, name)
            assert all(c["phase"] == "done" and c["iteration"] == c["of"] for c in done["chains"])
            landed.append((moment, len(victims), killed))
    assert sum(k for _, _, k in landed) >= JOBS - 2, landed  # nearly every kill landed before its job ended
    assert {m for m, _, k in landed if k} == set(MOMENTS), landed
    queue = ChainQueue(redis, visibility_timeout=4)
    deadline = time.monotonic() + 30
    while queue.depth() != Depth(waiting=0, pending=0):  # tasks of stopped chains are acknowledged
        assert time.monotonic() < deadline, queue.depth()
        time.sleep(0.1)
    assert redis.xlen(keys.TASKS) == 0
    assert redis.zcard(keys.jobs_in_state("running")) == 0 and redis.zcard(keys.ASSEMBLY_DUE) == 0


def test_redis_sigkilled_mid_job_then_restarted(stack: Stack) -> None:
    redis = Redis.from_url(stack.redis_url)
    doc = job_doc(77)
    with Client(stack.url, TOKENS["alice"]) as client:
        job = client.submit(doc)
        deadline = time.monotonic() + 120
        while min(iterations(redis, job["id"])) < WARMUP:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        redis.execute_command("BGREWRITEAOF")  # the job and its tasks are on disk; later writes may be lost
        deadline = time.monotonic() + 30
        while int(redis.info("persistence")["aof_rewrite_in_progress"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert stack.redis is not None
        stack.redis.send_signal(signal.SIGKILL)
        stack.redis.wait()
        stack.redis = start_redis(stack.data_dir / "redis", stack.redis_port, stack.logs / "redis.log")
        done = finished(client, job["id"], timeout=300)
    assert done["state"] == "succeeded"
    got, want = unpack(blobs.read(redis, keys.result_file(job["id"], "draws")) or b""), reference(doc)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    assert all(c["phase"] == "done" and c["iteration"] == c["of"] for c in done["chains"])  # progress repaired
    queue = ChainQueue(redis, visibility_timeout=4)
    deadline = time.monotonic() + 30
    while queue.depth() != Depth(waiting=0, pending=0):
        assert time.monotonic() < deadline, queue.depth()
        time.sleep(0.1)
