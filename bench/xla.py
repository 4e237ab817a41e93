"""XLA CPU's small-while-loop threshold: how much faster the engine's NUTS runs with chainyard's XLA_FLAGS, and
that no draw changes.

    .venv/bin/python bench/xla.py [--repeats 3] [--models eight_schools,...] [--out bench/results]

For each model (bench/engine.py's three) and each setting, one fresh process fits 4 chains x (1000 + 1000),
seed 1, once to compile and then `--repeats` times more; the median warm wall time is reported. The settings:

- `none`: no backend options (XLA's default threshold, which leaves NUTS' loops to the thunk runtime);
- `chainyard`: what `workers.jaxsetup.apply_xla_flags` sets (`XLA_BACKEND_OPTIONS`);
- `1000000`: the threshold at 1,000,000 bytes, for comparison.

The processes of one model run one after the other, alternating order per model, so load drift hits all alike.
Each process hashes its draws; the table says whether every setting drew the same. Writes bench/results/xla.json
and xla.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# run as `python bench/xla.py`, bench/service.py would shadow the `service` package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
from typing import Any

from bench.engine import MODELS, load_model, min_ess_bulk, versions, write_results
from workers.jaxsetup import XLA_BACKEND_OPTIONS

SETTINGS = {
    "none": "",
    "chainyard": f"--xla_backend_extra_options={XLA_BACKEND_OPTIONS}",
    "1000000": "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1000000",
}
CANDIDATES = {
    # besides SETTINGS with --candidates (issue 14: the options profiling suggested for fewer or cheaper kernels
    # per gradient), each on top of chainyard's backend options unless it replaces the threshold
    name: f"--xla_backend_extra_options={XLA_BACKEND_OPTIONS} {flag}" for name, flag in {
        "concurrency_scheduler_off": "--xla_cpu_enable_concurrency_optimized_scheduler=false",
        "fusion_emitters_off": "--xla_cpu_use_fusion_emitters=false",
        "xnn_greedy": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
        "xnnpack": "--xla_cpu_use_xnnpack=true",
        "eigen_single_thread": "--xla_cpu_multi_thread_eigen=false",
    }.items()
} | {"threshold_400000": "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=400000"} | {
    # fewer thunks per gradient (XLA CPU runs each fusion as a thunk at a fixed cost): entries of the same map as
    # the threshold, so they ride in the one xla_backend_extra_options list
    name: f"--xla_backend_extra_options={XLA_BACKEND_OPTIONS},{option}" for name, option in {
        "multi_output_fusion": "xla_cpu_use_multi_output_fusion=true",
        "flatten_after_fusion": "xla_cpu_flatten_after_fusion=true",
        "loop_unrolling_off": "xla_cpu_disable_loop_unrolling=true",
    }.items()
}


def worker(model_name: str, repeats: int) -> dict[str, Any]:
    """In a process whose XLA_FLAGS the parent set: compile, then time `repeats` fits of the same job."""
    import jax
    import numpy as np

    from service.sampler import SamplerSettings
    from workers.engine import Engine

    # configure() without apply_xla_flags: the parent chose XLA_FLAGS
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    model = load_model(model_name, 0)
    settings = SamplerSettings(seed=1, chains=4, warmup=1000, draws=1000)
    engine = Engine(threads=0)
    first = engine.run(model, settings)
    walls, fit = [], first
    for _ in range(repeats):
        fit = engine.run(model, settings)
        walls.append(fit.timings["wall"])
    digest = hashlib.sha256()
    for name in sorted(fit.draws):
        digest.update(np.ascontiguousarray(fit.draws[name]).tobytes())
    params = [p.name for p in model.params]
    return {"xla_flags": os.environ.get("XLA_FLAGS", ""), "first_wall_s": first.timings["wall"], "walls_s": walls,
            "wall_s": statistics.median(walls), "gradients": int(fit.gradient_evaluations),
            "min_ess_bulk": min_ess_bulk({p: fit.draws[p] for p in params}), "draws_sha256": digest.hexdigest()}


def run_one(model_name: str, setting: str, repeats: int) -> dict[str, Any]:
    flags = {**SETTINGS, **CANDIDATES}[setting]
    env = {**os.environ, "XLA_FLAGS": flags}
    out = subprocess.run([sys.executable, __file__, "--worker", model_name, "--repeats", str(repeats)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{model_name} with XLA_FLAGS={flags!r} failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# XLA CPU options ({report['date']}, load average {report['load_before']} -> "
             f"{report['load_after']})", "",
             "4 chains x (1000 + 1000), seed 1; median of the warm fits; one fresh process per setting; "
             "ratio = chainyard's wall / the setting's (> 1: faster than chainyard's); same draws: the same "
             "draws as chainyard's setting, bit for bit.", "",
             "| model | setting | XLA_FLAGS | wall s | vs chainyard | same draws |", "|---|---|---|--:|--:|---|"]
    for name, res in report["models"].items():
        base = res["chainyard"]
        for setting, r in res.items():
            same = r["draws_sha256"] == base["draws_sha256"]
            lines.append(f"| {name} | {setting} | `{r['xla_flags'] or '(none)'}` | {r['wall_s']:.3f} | "
                         f"{base['wall_s'] / r['wall_s']:.2f}x | {'yes' if same else 'NO'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--candidates", action="store_true", help="also run the flags in CANDIDATES")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats)))
        return
    report: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                              "versions": versions(), "load_before": round(os.getloadavg()[0], 2), "models": {}}
    for i, name in enumerate(args.models.split(",")):
        names = list(SETTINGS) + (list(CANDIDATES) if args.candidates else [])
        order = names if i % 2 == 0 else list(reversed(names))
        report["models"][name] = {setting: run_one(name, setting, args.repeats) for setting in order}
        print(name, {k: round(v["wall_s"], 3) for k, v in report["models"][name].items()}, flush=True)
    report["load_after"] = round(os.getloadavg()[0], 2)
    write_results(args.out, "xla", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
