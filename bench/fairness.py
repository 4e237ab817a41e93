"""Fair share: tenant A floods the queue with small jobs, then tenant B submits one; how long B waits.

    .venv/bin/python bench/fairness.py [--flood 300] [--repeats 3] [--tree DIR] [--out bench/results]

Runs a real local stack (Redis, uvicorn API, 2 worker processes) from the source tree DIR (default this
one; pass a `git worktree` of an older commit to measure it the same way: the stack's processes import
that tree). Each round: A submits `--flood` eight-schools jobs (2 chains x (200 + 200)) from 16 threads,
then B submits one; B's wait is the time from its submission until it started (started_at) and until it
succeeded. A's jobs are then cancelled and the next round starts on an empty queue. The target (issue 11)
is B's wait at most one chain's runtime plus 1 s; a chain's runtime is measured on the idle stack first.
Medians of `--repeats` rounds.
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as `python bench/fairness.py`, bench/service.py would shadow the `service` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from cli.stack import Stack, free_port
from service.client import Client
from service.language.loader import load_file

ROOT = Path(__file__).resolve().parent.parent
TOKENS = {"tok-a": "a", "tok-b": "b"}
SAMPLER = {"chains": 2, "warmup": 200, "draws": 200}
TERMINAL = ("succeeded", "failed", "cancelled")


def job(seed: int) -> dict[str, Any]:
    return {"model": load_file(ROOT / "examples" / "eight_schools.yaml"), "sampler": {**SAMPLER, "seed": seed}}


def wait_done(client: Client, job_id: str, timeout: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.get(job_id)
        if found["state"] in TERMINAL:
            return found
        time.sleep(0.02)
    raise TimeoutError(job_id)


def one_round(a: Client, b: Client, flood: int, base: int) -> dict[str, float]:
    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = list(pool.map(lambda i: a.submit(job(base + i))["id"], range(flood)))
    submitted = time.time()
    b_job = b.submit(job(base + flood))
    done = wait_done(b, b_job["id"])
    finished = time.time()
    assert done["state"] == "succeeded", done
    a_left = sum(1 for j in ids if a.get(j)["state"] not in TERMINAL)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(a.cancel, ids))
    for j in ids:
        wait_done(a, j)
    return {"b_start_s": done["started_at"] - done["created_at"], "b_done_s": finished - submitted,
            "a_jobs_unfinished_when_b_done": a_left}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flood", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree the stack's processes run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    tree = args.tree.resolve()
    os.environ["PYTHONPATH"] = str(tree)  # the children import the tree under test ...
    os.chdir(tree)  # ... also as `python -m`, which puts the working directory first
    revision = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"tokens": TOKENS, "auth_disabled": False, "tokens_file": None,
                     "compile_cache_dir": Path(tmp) / "jax-cache", "block_seconds": 0.2,
                     "quota_submissions_per_minute": 100_000, "quota_queued_chains": 100_000}
        stack = Stack(data_dir=Path(tmp) / "stack", port=free_port(), workers=2, token=None, overrides=overrides)
        stack.start()
        try:
            with Client(stack.url, "tok-a") as a, Client(stack.url, "tok-b") as b:
                for seed in (1, 2):  # warm both workers (compile)
                    wait_done(a, a.submit(job(seed))["id"])
                started = time.time()
                alone = wait_done(b, b.submit(job(3))["id"])
                job_alone = time.time() - started
                chain_s = job_alone  # its 2 chains ran side by side on the 2 workers
                rounds = [one_round(a, b, args.flood, 1000 * (r + 1)) for r in range(args.repeats)]
                assert alone["state"] == "succeeded"
        finally:
            stack.stop()
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "tree": str(tree), "revision": revision, "flood_jobs": args.flood, "sampler": SAMPLER, "workers": 2,
        "chain_runtime_s": round(chain_s, 3),
        "target_s": round(chain_s + 1.0, 3),
        "rounds": rounds,
        "median_b_start_s": round(statistics.median(r["b_start_s"] for r in rounds), 3),
        "median_b_done_s": round(statistics.median(r["b_done_s"] for r in rounds), 3),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"fairness-{revision or 'tree'}.json"
    (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
