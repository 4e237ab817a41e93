"""Memory of one worker across repeated jobs: does it stay flat?

    .venv/bin/python bench/memory.py [--rounds 20] [--models eight_schools,hierarchical_regression,...]
                                     [--out bench/results]

A real local stack (Redis, the uvicorn API, ONE worker process). Each round submits every model once, one job
after another, each with new data values of the same shapes (bench/engine.py's variants) and its own seed,
4 chains x (1000 + 1000); after each job succeeds, the worker's resident memory (VmRSS of its process and any
children, from /proc) is read. Round 1 compiles each model's program; from then on nothing new should be kept.
Reported: RSS after round 1 and after the last round, the growth between them (MiB and %), and the
least-squares slope over rounds 2..N in MiB per round. Flat means growth under 5% of the round-1 RSS.
Writes bench/results/memory.json and memory.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# run as `python bench/memory.py`, bench/service.py would shadow the `service` package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import datetime as dt
import tempfile
import time
from typing import Any

import numpy as np
from redis import Redis

from bench.engine import MODELS, machine_info, model_spec, tree_revision, versions, write_results
from bench.service import wait
from cli.stack import Stack, free_port

TOKEN = "bench-token"
FLAT = 0.05
"""Growth from round 1 to the last round, as a fraction of round 1's RSS, below which memory counts as flat."""


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its descendants (MiB)."""
    total = 0.0
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024
        pending += [int(c) for c in children]
    return total


def slope(ys: list[float]) -> float | None:
    return float(np.polyfit(np.arange(len(ys)), ys, 1)[0]) if len(ys) >= 2 else None


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        "# Worker memory across repeated jobs",
        "",
        f"- date: {report['date']}; machine: {report['machine']['nproc']} cores, {report['machine']['memory_gib']} GiB",
        f"- chainyard tree: git {(report['tree']['git_head'] or '?')[:12]}",
        f"- one worker process; {report['settings']['rounds']} rounds x {len(report['settings']['models'])} models "
        f"({', '.join(report['settings']['models'])}), each job new data values and its own seed, "
        "4 chains x (1000 + 1000)",
        "",
        "| | MiB |",
        "|---|--:|",
        f"| worker RSS before the first job | {s['rss_idle_mib']:.0f} |",
        f"| after round 1 (every program compiled) | {s['rss_round1_mib']:.0f} |",
        f"| after round {report['settings']['rounds']} | {s['rss_last_mib']:.0f} |",
        f"| growth, round 1 to last | {s['growth_mib']:+.1f} ({100 * s['growth_fraction']:+.1f}%) |",
        f"| slope over rounds 2..{report['settings']['rounds']} (per round) | "
        + ("—" if s["slope_mib_per_round"] is None else f"{s['slope_mib_per_round']:+.2f}") + " |",
        f"| max RSS seen | {s['rss_max_mib']:.0f} |",
        "",
        f"Flat (growth < {100 * FLAT:.0f}% of round 1): **{'yes' if s['flat'] else 'no'}**. "
        f"All {s['jobs']} jobs succeeded: {'yes' if s['all_succeeded'] else 'no'}.",
        "",
        "RSS after each round: " + ", ".join(f"{x:.0f}" for x in s["rss_by_round_mib"]) + " MiB.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    models = args.models.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="chainyard-bench-memory-"))
    stack = Stack(data_dir=tmp / "stack", port=free_port(), workers=1, token=TOKEN,
                  overrides={"compile_cache_dir": tmp / "jax-cache"})
    stack.start()
    from service.client import Client

    jobs: list[dict[str, Any]] = []
    try:
        pid = stack.worker_procs["worker-0"].pid
        redis = Redis.from_url(stack.redis_url)
        time.sleep(2)
        idle = rss_mib(pid)
        with Client(stack.url, TOKEN) as client:
            for r in range(1, args.rounds + 1):
                for name in models:
                    doc = {"model": model_spec(name, r),
                           "sampler": {"chains": 4, "warmup": 1000, "draws": 1000, "seed": r}}
                    started = time.perf_counter()
                    job = client.submit(doc)
                    state = wait(redis, job["id"])
                    jobs.append({"round": r, "model": name, "state": state, "seconds": time.perf_counter() - started,
                                 "rss_mib": rss_mib(pid)})
                print(f"round {r}: RSS {jobs[-1]['rss_mib']:.0f} MiB", flush=True)
    finally:
        stack.stop()
    by_round = [[j["rss_mib"] for j in jobs if j["round"] == r][-1] for r in range(1, args.rounds + 1)]
    summary = {
        "jobs": len(jobs),
        "all_succeeded": all(j["state"] == "succeeded" for j in jobs),
        "rss_idle_mib": idle,
        "rss_round1_mib": by_round[0],
        "rss_last_mib": by_round[-1],
        "growth_mib": by_round[-1] - by_round[0],
        "growth_fraction": (by_round[-1] - by_round[0]) / by_round[0],
        "slope_mib_per_round": slope(by_round[1:]),
        "rss_max_mib": max(j["rss_mib"] for j in jobs),
        "rss_by_round_mib": by_round,
    }
    summary["flat"] = summary["growth_fraction"] < FLAT
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(),
        "tree": tree_revision(),
        "settings": {"rounds": args.rounds, "models": models, "workers": 1},
        "summary": summary,
        "jobs": jobs,
    }
    table = markdown(report)
    write_results(args.out, "memory", report, table)
    print(table)


if __name__ == "__main__":
    main()
