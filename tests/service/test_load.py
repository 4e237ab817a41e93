"""Load: 200 small jobs submitted concurrently to 2 workers all succeed; none lost or duplicated."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from redis import Redis

from service import keys
from service.client import Client
from service.language.loader import load_file
from tests.conftest import EXAMPLES
from tests.service.conftest import TOKENS, finished, make_stack

pytestmark = pytest.mark.slow
JOBS = 200


def test_200_concurrent_jobs_on_2_workers(tmp_path: Path, compile_cache: Path) -> None:
    stack = make_stack(tmp_path, compile_cache, workers=2, CHAINYARD_MAX_BLOCK="1000",
                       CHAINYARD_BLOCK_SECONDS="1")
    stack.start()
    try:
        model = load_file(EXAMPLES / "eight_schools.yaml")

        def submit(i: int) -> str:
            with Client(stack.url, TOKENS["alice"]) as client:
                job = client.submit({"model": model, "name": f"load-{i}",
                                     "sampler": {"chains": 2, "warmup": 100, "draws": 100, "seed": i}})
                return str(job["id"])

        with ThreadPoolExecutor(max_workers=16) as pool:
            ids = list(pool.map(submit, range(JOBS)))
        assert len(set(ids)) == JOBS
        with Client(stack.url, TOKENS["alice"]) as client:
            states = [finished(client, job_id, timeout=600)["state"] for job_id in ids]
            assert states.count("succeeded") == JOBS
            listed = client.list(limit=500)
            assert listed["total"] == JOBS and {j["id"] for j in listed["jobs"]} == set(ids)
            for job_id in ids[:: JOBS // 10]:
                assert client.summary(job_id)["totals"]["draws_per_chain"] == 100
        redis = Redis.from_url(stack.redis_url)
        assert redis.xinfo_stream(keys.TASKS)["entries-added"] == 2 * JOBS  # one entry per chain, none twice
        assert redis.xpending(keys.TASKS, keys.GROUP)["pending"] == 0  # every chain acknowledged
        assert redis.xlen(keys.TASKS) == 0  # and deleted with its acknowledgement
    finally:
        stack.stop()
