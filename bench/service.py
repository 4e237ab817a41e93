"""Service overhead: submit -> succeeded through the stack vs the same fit in one process; jobs per minute.

    .venv/bin/python bench/service.py [--repeats 3] [--jobs 100] [--out bench/results]

Runs a real local stack (Redis, uvicorn API, 2 worker processes) with warm workers
(each model fitted once before timing). "Local" is what `chainyard run` does in this
process (fit, InferenceData, summary), also warm, with the same seeds: the draws are checked
equal, so both did the same work. Medians of `--repeats`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as `python bench/service.py`, this file would shadow the `service` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np
from redis import Redis

from cli.stack import Stack, free_port
from service import keys
from service.client import Client
from service.codec import unpack
from service.jobs import blobs
from service.language.loader import load_file
from service.results import summary, to_inference_data
from service.sampler import parse_job

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"eight_schools": ROOT / "examples/eight_schools.yaml",
          "hierarchical_regression": ROOT / "examples/hierarchical_regression.yaml"}
TOKEN = "bench-token"


def wait(redis: Redis, job_id: str, timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = redis.hget(keys.job(job_id), "state")
        if state in (b"succeeded", b"failed", b"cancelled"):
            return state.decode()
        time.sleep(0.01)
    raise TimeoutError(job_id)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="chainyard-bench-service-"))
    cache = tmp / "jax-cache"
    from workers.jaxsetup import configure

    configure(cache)
    from workers.engine import Engine

    stack = Stack(data_dir=tmp / "stack", port=free_port(), workers=2, token=TOKEN,
                  overrides={"compile_cache_dir": cache})
    stack.start()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {"chains": 4, "warmup": 1000, "draws": 1000, "workers": 2, "repeats": args.repeats},
        "models": {},
    }
    try:
        redis = Redis.from_url(stack.redis_url)
        with Client(stack.url, TOKEN) as client:
            for name, path in MODELS.items():
                spec = load_file(path)
                service_walls, local_walls, identical = [], [], True
                for r in range(args.repeats + 1):  # r == 0 warms both sides
                    doc = {"model": spec, "sampler": {"chains": 4, "warmup": 1000, "draws": 1000, "seed": 1000 + r}}
                    started = time.perf_counter()
                    job = client.submit(doc)
                    assert wait(redis, job["id"]) == "succeeded"
                    service_wall = time.perf_counter() - started
                    model, settings = parse_job(doc)
                    started = time.perf_counter()  # what `chainyard run FILE` does: fit, InferenceData, summary
                    fit = Engine().run(model, settings)
                    summary(to_inference_data(model, fit.draws, fit.stats))
                    local_wall = time.perf_counter() - started
                    got = unpack(blobs.read(redis, keys.result_file(job["id"], "draws")) or b"")
                    identical &= all(np.array_equal(got[k], fit.draws[k]) for k in fit.draws)
                    if r:
                        service_walls.append(service_wall)
                        local_walls.append(local_wall)
                s, loc = statistics.median(service_walls), statistics.median(local_walls)
                results["models"][name] = {"service_s": s, "local_s": loc, "ratio": s / loc, "overhead_s": s - loc,
                                           "target_met": (s - loc) < max(1.0, 0.1 * loc), "draws_identical": identical,
                                           "service_runs_s": service_walls, "local_runs_s": local_walls}
                print(name, results["models"][name], flush=True)
            spec = load_file(MODELS["eight_schools"])
            started = time.perf_counter()

            def submit(i: int) -> str:
                with Client(stack.url, TOKEN) as c:
                    return str(c.submit({"model": spec, "sampler": {"seed": 5000 + i}})["id"])

            with ThreadPoolExecutor(max_workers=8) as pool:
                ids = list(pool.map(submit, range(args.jobs)))
            states = [wait(redis, job_id) for job_id in ids]
            elapsed = time.perf_counter() - started
            results["throughput"] = {"jobs": args.jobs, "succeeded": states.count("succeeded"),
                                     "seconds": elapsed, "jobs_per_minute": 60 * args.jobs / elapsed}
            print(results["throughput"], flush=True)
    finally:
        stack.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "service.json").write_text(json.dumps(results, indent=1))
    lines = [
        "# Service benchmark",
        "",
        f"- date: {results['date']}; machine: {results['machine']['cpus']} cores; stack: Redis + API + 2 workers",
        f"- 4 chains x (1000 + 1000), warm workers, medians of {args.repeats}",
        "",
        "| model | service s | local (`chainyard run`) s | ratio | overhead s | target met | draws identical |",
        "|---|--:|--:|--:|--:|---|---|",
    ]
    for name, m in results["models"].items():
        lines.append(f"| {name} | {m['service_s']:.2f} | {m['local_s']:.2f} | {m['ratio']:.2f} | "
                     f"{m['overhead_s']:.2f} | {'yes' if m['target_met'] else 'no'} | {m['draws_identical']} |")
    t = results["throughput"]
    lines += ["", f"Throughput: {t['succeeded']}/{t['jobs']} eight-schools jobs (4 x 2000 iterations) in "
                  f"{t['seconds']:.1f} s = **{t['jobs_per_minute']:.0f} jobs/minute** on 2 workers.", ""]
    (args.out / "service.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
