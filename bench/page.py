"""Cost of the job page per refresh: the page, its trace PNG and its rank PNG, as a browser asks every 2 s.

    .venv/bin/python bench/page.py [--repeats 5] [--out bench/results]

Real Redis server; the draws are a real fit of examples/hierarchical_regression.yaml (175 parameters, 4 chains
x 1000 draws), stored as live blocks of 100 draws of a running job (as bench/metrics.py does, no stack). The
API application runs in-process (Starlette's TestClient). Three cases, medians of `--repeats`:
first (a fresh API process: nothing cached), cached (nothing new since the last refresh) and new block (each
chain got one more block of 100 draws since the last refresh, back to back: mostly served the throttled
figures of service.plots.FigureCache). Then the live case over time: a new block and a refresh every 2 s,
its CPU share measured over `--live-refreshes`. CPU is the process's CPU time.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from redis import Redis

from cli.stack import free_port, start_redis
from service import keys
from service.api.app import create_app
from service.codec import pack_block
from service.config import ApiSettings
from service.jobs.record import JobRecord, JobState
from service.language.loader import load_file
from service.pages import REFRESH_SECONDS
from service.plots import CPU_SHARE
from service.sampler import parse_job

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples/hierarchical_regression.yaml"
TOKEN = "tok-bench"
BLOCK = 100


def refresh(client: TestClient, job_id: str) -> None:
    for path in (f"/v1/jobs/{job_id}/page", f"/v1/jobs/{job_id}/plots/trace.png",
                 f"/v1/jobs/{job_id}/plots/rank.png"):
        reply = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert reply.status_code == 200, (path, reply.status_code, reply.text[:200])


def measured(fn: Callable[[], None], before: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of fn(), each run after before() (not timed)."""
    walls, cpus = [], []
    for _ in range(repeats):
        before()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--live-refreshes", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    from workers.engine import Engine
    from workers.jaxsetup import configure

    configure(Path(tempfile.gettempdir()) / "chainyard-bench-cache")
    model, settings = parse_job({"model": load_file(MODEL), "sampler": {"chains": 4, "seed": 1}})
    fit = Engine().run(model, settings)
    params = sum(int(v[0, 0].size) for v in fit.draws.values())
    extra = Engine().run(model, settings.model_copy(update={"seed": 2}))  # the blocks of the "new block" case
    job_id = "bench-page"
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_redis(Path(tmp), port, Path(tmp) / "redis.log")
        try:
            r = Redis(port=port)
            record = JobRecord(id=job_id, tenant="bench", name="bench", labels={}, state=JobState.RUNNING,
                               sampler=settings.model_copy(update={"seed": 1}), model_name="hierarchical_regression",
                               model_fingerprint="", structure="", created_at=time.time(),
                               deadline=time.time() + 3600)
            r.hset(keys.job(job_id), mapping=record.to_hash())
            done = [0] * 4

            def push(source: Any, c: int, start: int) -> None:
                block = {k: v[c, start:start + BLOCK] for k, v in source.draws.items()}
                stats = {k: v[c, start:start + BLOCK] for k, v in source.stats.items()}
                r.rpush(keys.live_blocks(job_id, c), pack_block(block, stats))
                done[c] += BLOCK
                r.hset(keys.chain(job_id, c), mapping={"phase": "sampling", "iteration": settings.warmup + done[c],
                                                       "of": settings.warmup + 100 * settings.draws})

            for c in range(4):
                for start in range(0, settings.draws, BLOCK):
                    push(fit, c, start)
            api = ApiSettings(redis_url=f"redis://127.0.0.1:{port}/0", tokens={TOKEN: "bench"})
            fresh: list[TestClient] = []

            def new_process() -> None:
                fresh.append(TestClient(create_app(api)))

            rows["first"] = measured(lambda: refresh(fresh[-1], job_id), new_process, args.repeats)
            warm = TestClient(create_app(api))
            refresh(warm, job_id)
            rows["cached"] = measured(lambda: refresh(warm, job_id), lambda: None, args.repeats)
            blocks = itertools.cycle(range(0, settings.draws, BLOCK))

            def one_more_block() -> None:
                start = next(blocks)
                for c in range(4):
                    push(extra, c, start)

            rows["new_block"] = measured(lambda: refresh(warm, job_id), one_more_block, args.repeats)
            # the live case over time: a new block per chain, then a refresh, every REFRESH_SECONDS
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.live_refreshes):
                one_more_block()
                refresh(warm, job_id)
                time.sleep(max(0.0, REFRESH_SECONDS - (time.perf_counter() - wall) % REFRESH_SECONDS))
            live_share = (time.process_time() - cpu) / (time.perf_counter() - wall)
        finally:
            proc.terminate()
            proc.wait()

    cases = {name: {"ms": 1000 * wall, "cpu_ms": 1000 * cpu, "cpu_share_at_2s": cpu / REFRESH_SECONDS}
             for name, (wall, cpu) in rows.items()}
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "repeats": args.repeats,
              "model": "hierarchical_regression", "parameters": params, "chains": 4, "draws_per_chain": settings.draws,
              "refresh_s": REFRESH_SECONDS, "per_refresh": "page + trace.png + rank.png", "cases": cases,
              "live": {"refreshes": args.live_refreshes, "cpu_share": live_share, "plots_cpu_share": CPU_SHARE}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "page.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Job page benchmark", "",
             f"- date: {result['date']}; medians of {args.repeats}; real Redis; hierarchical_regression ({params} "
             f"parameters), 4 chains x {settings.draws} draws in live blocks of {BLOCK}; one refresh = page + "
             "trace.png + rank.png", "", "| case | ms per refresh | CPU ms | CPU share of one core at a 2 s refresh |",
             "|---|--:|--:|--:|"]
    lines += [f"| {name} | {c['ms']:.1f} | {c['cpu_ms']:.1f} | {100 * c['cpu_share_at_2s']:.1f}% |"
              for name, c in cases.items()]
    lines += ["", f"Live, a new block per chain before each refresh every {REFRESH_SECONDS} s, "
              f"{args.live_refreshes} refreshes: {100 * live_share:.1f}% of one core (figures redrawn at most "
              f"once per cost / {CPU_SHARE}; the page itself every time)."]
    (args.out / "page.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
