"""Faults: each ends with draws bit-identical to a fault-free run of the same job."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
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
from service.sampler import parse_job
from tests.conftest import EXAMPLES
from tests.service.conftest import TOKENS, finished, make_stack

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("jax_ready")]
WARMUP, DRAWS = 800, 800


def job_doc(seed: int) -> dict[str, Any]:
    return {"model": load_file(EXAMPLES / "eight_schools.yaml"),
            "sampler": {"chains": 2, "warmup": WARMUP, "draws": DRAWS, "seed": seed}}


def reference(doc: dict[str, Any]) -> dict[str, np.ndarray]:
    from workers.engine import Engine

    model, settings = parse_job(doc)
    return Engine().run(model, settings).draws


def service_draws(redis: Redis, job_id: str) -> dict[str, np.ndarray]:
    arrays = unpack(blobs.read(redis, keys.result_file(job_id, "draws")) or b"")
    return arrays


def assert_identical(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(want) <= set(got)
    for name in want:
        assert np.array_equal(got[name], want[name]), name


def iteration(redis: Redis, job_id: str, chain: int) -> int:
    value = redis.hget(keys.chain(job_id, chain), "iteration")
    return int(value or 0)


def wait_until(redis: Redis, job_id: str, condition: Any, timeout: float = 120) -> list[int]:
    """Poll both chains' iterations until `condition(iterations)` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        its = [iteration(redis, job_id, c) for c in (0, 1)]
        if condition(its):
            return its
        time.sleep(0.005)
    raise AssertionError(f"never reached: {its}")


def kill_when(redis: Redis, job_id: str, proc: subprocess.Popen[bytes], condition: Any) -> None:
    wait_until(redis, job_id, condition)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture
def one_worker(tmp_path: Path, compile_cache: Path) -> Iterator[Stack]:
    stack = make_stack(tmp_path, compile_cache, workers=1, max_block=10)
    stack.start()
    yield stack
    stack.stop()


def test_worker_killed_in_warmup_and_in_sampling_resumes_bit_identical(one_worker: Stack) -> None:
    redis = Redis.from_url(one_worker.redis_url)
    doc = job_doc(31)
    with Client(one_worker.url, TOKENS["alice"]) as client:
        job = client.submit(doc)
        worker = one_worker.worker_procs["worker-0"]
        kill_when(redis, job["id"], worker, lambda its: 100 < its[0] < WARMUP - 100)
        at_kill = iteration(redis, job["id"], 0)
        worker = one_worker.start_worker("worker-0")  # same name, same volume: resumes its pending chain
        kill_when(redis, job["id"], worker, lambda its: any(WARMUP + 50 < i < WARMUP + DRAWS - 50 for i in its))
        one_worker.start_worker("worker-0")
        done = finished(client, job["id"])
    assert done["state"] == "succeeded" and at_kill > 100
    assert all(c["attempts"] >= 2 for c in done["chains"][:1])
    assert_identical(service_draws(redis, job["id"]), reference(doc))


def test_worker_gone_for_good_is_replaced_after_the_visibility_timeout(tmp_path: Path, compile_cache: Path) -> None:
    stack = make_stack(tmp_path, compile_cache, workers=2, max_block=10)
    stack.start()
    try:
        redis = Redis.from_url(stack.redis_url)
        doc = job_doc(32)
        with Client(stack.url, TOKENS["alice"]) as client:
            job = client.submit(doc)
            # kill the worker of chain 0 for good while that chain is well before its end (chain 1 may still be
            # compiling on a loaded machine: waiting for both could let chain 0 finish first)
            wait_until(redis, job["id"], lambda its: 100 <= its[0] <= WARMUP)
            victim = redis.hget(keys.chain(job["id"], 0), "worker").decode()
            stack.worker_procs[victim].send_signal(signal.SIGKILL)
            stack.worker_procs[victim].wait()
            done = finished(client, job["id"])
        assert done["state"] == "succeeded"
        assert done["chains"][0]["worker"] != victim  # reclaimed by the survivor
        assert_identical(service_draws(redis, job["id"]), reference(doc))
    finally:
        stack.stop()


def test_redis_and_api_restarted_mid_job(one_worker: Stack) -> None:
    redis = Redis.from_url(one_worker.redis_url)
    doc = job_doc(33)
    with Client(one_worker.url, TOKENS["alice"]) as client:
        job = client.submit(doc)
        wait_until(redis, job["id"], lambda its: its[0] >= 300)
        # Redis goes down (AOF flushed on shutdown) and comes back on the same port and files
        assert one_worker.redis is not None
        one_worker.redis.send_signal(signal.SIGTERM)
        one_worker.redis.wait()
        time.sleep(1.0)
        one_worker.redis = start_redis(one_worker.data_dir / "redis", one_worker.redis_port,
                                       one_worker.logs / "redis.log")
        # the API is replaced too
        assert one_worker.api is not None
        one_worker.api.send_signal(signal.SIGTERM)
        one_worker.api.wait()
        one_worker.start_api()
        one_worker.wait_ready()
        done = finished(client, job["id"])
    assert done["state"] == "succeeded"
    assert_identical(service_draws(redis, job["id"]), reference(doc))


def test_sigterm_checkpoints_and_exits_then_resumes(one_worker: Stack) -> None:
    redis = Redis.from_url(one_worker.redis_url)
    doc = job_doc(34)
    with Client(one_worker.url, TOKENS["alice"]) as client:
        job = client.submit(doc)
        wait_until(redis, job["id"], lambda its: its[0] >= 200)
        worker = one_worker.worker_procs["worker-0"]
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        assert time.monotonic() - started < 10  # one block and a checkpoint, not the whole chain
        stopped_at = iteration(redis, job["id"], 0)
        assert stopped_at < WARMUP + DRAWS and client.get(job["id"])["state"] == "running"
        checkpoints = list((one_worker.data_dir / "worker-0" / "jobs" / job["id"]).glob("chain-0/block-*.npz"))
        assert checkpoints
        one_worker.start_worker("worker-0")
        done = finished(client, job["id"])
    assert done["state"] == "succeeded"
    assert_identical(service_draws(redis, job["id"]), reference(doc))


def test_job_timeout_fails_the_job_at_a_block_boundary(tmp_path: Path, compile_cache: Path) -> None:
    stack = make_stack(tmp_path, compile_cache, workers=1, job_timeout_seconds=3)
    stack.start()
    try:
        with Client(stack.url, TOKENS["alice"]) as client:
            job = client.submit({"model": load_file(EXAMPLES / "eight_schools.yaml"),
                                 "sampler": {"chains": 1, "warmup": 100, "draws": 200_000, "seed": 35}})
            done = finished(client, job["id"], timeout=60)
        assert done["state"] == "failed" and "timed out after 3 s" in done["error"]
        assert done["chains"][0]["iteration"] < 100 + 200_000
    finally:
        stack.stop()
