"""Cost of the live convergence metrics: one refresh of a job's figures (what a worker's diagnostics thread
does at most every CHAINYARD_DIAGNOSTICS_INTERVAL per job) and one scrape of the lease holder.

    .venv/bin/python bench/metrics.py [--repeats 5] [--out bench/results]

Real Redis server; the draws are real fits of the examples (4 chains x 1000 draws), stored as live blocks
of 100 draws. Baselines measured in the same run: the sampling time of those fits (warm), and a scrape of
a process's own metrics without the cluster collector. Medians of `--repeats`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from redis import Redis

from cli.stack import free_port, start_redis
from service import keys
from service.codec import pack_block
from service.defaults import DIAGNOSTICS_CPU_SHARE
from service.jobs.record import JobRecord, JobState
from service.language.loader import load_file
from service.live import LiveDiagnostics
from service.metrics import ClusterCollector
from service.sampler import parse_job

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"eight_schools": ROOT / "examples/eight_schools.yaml",
          "hierarchical_regression": ROOT / "examples/hierarchical_regression.yaml"}
INTERVAL = 5.0


def timed(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=100, help="jobs with figures present at the scrape")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    from workers.engine import Engine
    from workers.jaxsetup import configure

    configure(Path(tempfile.gettempdir()) / "chainyard-bench-cache")
    engine = Engine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_redis(Path(tmp), port, Path(tmp) / "redis.log")
        try:
            r = Redis(port=port)
            live = LiveDiagnostics(r, interval=INTERVAL, linger=600)
            for name, path in MODELS.items():
                model, settings = parse_job({"model": load_file(path), "sampler": {"chains": 4, "seed": 1}})
                engine.run(model, settings)  # warm
                fit_seconds = timed(lambda m=model, s=settings: engine.run(m, s), 3)
                fit = engine.run(model, settings)
                job_id = f"bench-{name}"
                record = JobRecord(id=job_id, tenant="bench", name=None, labels={}, state=JobState.RUNNING,
                                   sampler=settings.model_copy(update={"seed": 1}), model_name=name,
                                   model_fingerprint="", structure="", created_at=time.time(),
                                   deadline=time.time() + 3600)
                r.hset(keys.job(job_id), mapping=record.to_hash())
                for c in range(4):
                    for start in range(0, settings.draws, 100):
                        block = {k: v[c, start:start + 100] for k, v in fit.draws.items()}
                        stats = {k: v[c, start:start + 100] for k, v in fit.stats.items()}
                        r.rpush(keys.live_blocks(job_id, c), pack_block(block, stats))
                refresh = timed(lambda rec=record: live.refresh(rec), args.repeats)
                params = sum(int(v[0, 0].size) for v in fit.draws.values())
                every = max(INTERVAL, refresh / DIAGNOSTICS_CPU_SHARE)  # what the worker does by default
                rows.append({"model": name, "parameters": params, "draws": 4 * settings.draws,
                             "refresh_ms": 1000 * refresh, "fit_s": fit_seconds,
                             "share_of_one_core_at_5s": refresh / INTERVAL, "refresh_every_s": every,
                             "share_of_one_core": refresh / every})
            # a scrape of the lease holder with `jobs` jobs' figures present
            template = live.read("bench-hierarchical_regression") or {}
            for i in range(args.jobs):
                r.hset(keys.diagnostics(f"j{i}"), mapping={**template, "job": f"j{i}"})
                r.zadd(keys.DIAGNOSTICS_INDEX, {f"j{i}": float("inf")})
            cluster = CollectorRegistry(auto_describe=False)
            cluster.register(ClusterCollector(r))
            scrape = timed(lambda: generate_latest(REGISTRY) + generate_latest(cluster), args.repeats)
            own = timed(lambda: generate_latest(REGISTRY), args.repeats)
        finally:
            proc.terminate()
            proc.wait()

    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "repeats": args.repeats,
              "interval_s": INTERVAL, "refresh": rows,
              "scrape": {"jobs": args.jobs, "leader_ms": 1000 * scrape, "own_metrics_only_ms": 1000 * own}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Metrics benchmark", "",
             f"- date: {result['date']}; medians of {args.repeats}; real Redis; 4 chains x 1000 draws",
             "", "| model | parameters | draws | refresh ms | warm fit s | core share if every 5 s | refreshed every s "
                 "| core share |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
    lines += [f"| {x['model']} | {x['parameters']} | {x['draws']} | {x['refresh_ms']:.1f} | {x['fit_s']:.2f} | "
              f"{100 * x['share_of_one_core_at_5s']:.2f}% | {x['refresh_every_s']:.1f} | "
              f"{100 * x['share_of_one_core']:.2f}% |" for x in rows]
    lines += ["", f"Scrape of the lease holder with {args.jobs} jobs' figures: {1000 * scrape:.1f} ms "
                  f"(own process metrics only: {1000 * own:.1f} ms)."]
    (args.out / "metrics.md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
