"""Scale: one hierarchical regression family at about 1k, 10k and 100k parameters, on this machine.

    .venv/bin/python bench/scale.py [--groups 200,2000,20000] [--chains 2] [--warmup 500] [--draws 500]
                                    [--reparam centered|noncentered]
                                    [--out bench/results]

The family (`family(groups)`): `groups` subjects x 5 varying effects (an intercept and 4 slopes, each
Normal(mu_k, tau_k), centered unless --reparam noncentered), 10 rows per subject, a Gaussian likelihood:
5 * groups + 11 parameters, 10 * groups rows. Each size runs in its own process (peak memory is that process's
ru_maxrss) with an empty JAX compile cache, `CHAINYARD_PLATFORM` as the environment says (default cpu):
- the raw gradient: `jax.grad` of the potential in one jitted loop (bench/engine.py's `gradient_rate`),
  milliseconds per evaluation, median of 3;
- one fit of `--chains` chains x (warmup + draws) with the default sampler settings (fisher adaptation),
  compile seconds (jax.monitoring), gradients per second while sampling (gradients / (wall - compile)), min bulk
  ESS over every element of every parameter, ESS/s on the same seconds, the blocks the engine chose
  (iterations per block: it sizes blocks to about a second) and peak memory.
The cost exponents are least-squares slopes of log(cost) on log(parameters): gradient ms, seconds per 1000
in-sampler gradients, and memory. Linear cost is an exponent of 1.
Writes bench/results/scale.json (every measurement) and scale.md (the table); scale-noncentered.* with --reparam
noncentered.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# run as `python bench/scale.py`, bench/service.py would shadow the `service` package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from typing import Any

import numpy as np

from bench.engine import (
    CompileMonitor,
    fmt,
    gradient_rate,
    machine_info,
    min_ess_bulk,
    tree_revision,
    versions,
    write_results,
)

EFFECTS = 5
ROWS_PER_GROUP = 10
GROUPS = (200, 2000, 20000)


def family(groups: int, reparam: str = "centered", seed: int = 30) -> dict[str, Any]:
    """`groups` subjects x 5 varying effects, 10 rows each: 5 * groups + 11 parameters. Ten rows of noise sd 0.5
    per subject make each subject's effects well identified (posterior sd ~0.16 against a spread tau of 0.2-0.8),
    which is where the centered form samples well; `noncentered` is the other choice (it mixes tau poorly here:
    bench/results/scale-noncentered.md)."""
    rng = np.random.default_rng(seed)
    n = groups * ROWS_PER_GROUP
    g = np.repeat(np.arange(groups), ROWS_PER_GROUP)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, EFFECTS - 1))])
    mu = rng.normal(0, 1, size=EFFECTS)
    tau = rng.uniform(0.2, 0.8, size=EFFECTS)
    b = mu + tau * rng.normal(size=(groups, EFFECTS))
    y = np.sum(b[g] * X, axis=1) + rng.normal(0, 0.5, size=n)
    return {
        "spec": 1,
        "data": {"y": np.round(y, 4).tolist(), "X": np.round(X, 4).tolist(), "g": g.tolist()},
        "coords": {"subject": [f"s{i}" for i in range(groups)], "effect": [f"e{k}" for k in range(EFFECTS)]},
        "params": {
            "mu": {"dist": "Normal(0, 2)", "dims": ["effect"]},
            "tau": {"dist": "HalfNormal(1)", "dims": ["effect"]},
            "b": {"dist": "Normal(mu, tau)", "dims": ["subject", "effect"],
                  **({"reparam": "noncentered"} if reparam == "noncentered" else {})},
            "sigma": "HalfNormal(1)",
        },
        "observe": {"y": "Normal(sum(b[g] * X, axis=1), sigma)"},
    }


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One size, in this process: raw gradient, one fit, peak memory."""
    from workers.jaxsetup import configure

    configure(Path(args.cache_dir), os.environ.get("CHAINYARD_PLATFORM", "cpu"))  # type: ignore[arg-type]
    monitor = CompileMonitor()
    monitor.install()
    import jax

    from service.language.validate import validate
    from service.sampler import SamplerSettings
    from workers.engine import Engine
    from workers.program import STAT_NAMES

    out: dict[str, Any] = {"groups": args.groups, "rows": args.groups * ROWS_PER_GROUP,
                           "device": str(jax.devices()[0])}
    model = validate(family(args.groups, args.reparam))
    out["params"] = int(sum(int(np.prod(p.shape)) for p in model.params))
    out["rss_model_mib"] = peak_mib()
    rate = gradient_rate(model, 100, 3)
    out["gradient_ms"] = 1000 / statistics.median(rate["evals_per_s"])
    out["gradient_loop"] = rate
    out["rss_after_gradient_mib"] = peak_mib()

    blocks: list[dict[str, Any]] = []
    last: dict[int, float] = {}
    started = time.perf_counter()

    def progress(p: Any) -> None:
        now = time.perf_counter()
        iterations = p.block_warmup + p.block_sampling
        if iterations:
            blocks.append({"chain": p.chain, "phase": "sampling" if p.block_sampling else "warmup",
                           "iterations": iterations, "gradients": p.block_gradients,
                           "seconds": now - last.get(p.chain, started)})
        last[p.chain] = now

    settings = SamplerSettings(seed=1, chains=args.chains, warmup=args.warmup, draws=args.draws)
    mark = monitor.mark()
    fit = Engine(threads=0).run(model, settings, progress=progress)
    wall = float(fit.timings["wall"])
    compiled = monitor.since(mark)
    compile_s = float(compiled["compile_s"])
    sampling_s = wall - compile_s
    ess = min_ess_bulk({p.name: fit.draws[p.name] for p in model.params})
    stats = {k: np.asarray(fit.stats[k]) for k in STAT_NAMES}
    later = blocks[1:]  # the first block includes compiling
    out["fit"] = {
        "wall_s": wall,
        "compile_s": compile_s,
        "compile": compiled,
        "gradients": int(fit.gradient_evaluations),
        "gradients_per_s": fit.gradient_evaluations / sampling_s,
        "s_per_1000_gradients": 1000 * sampling_s / fit.gradient_evaluations,
        "min_ess_bulk": ess,
        "ess_per_s": ess / sampling_s,
        "divergences": int(stats["diverging"].sum()),
        "mean_tree_depth": float(stats["tree_depth"].mean()),
        "mean_steps_per_draw": float(stats["n_steps"].mean()),
        "block_iterations": {phase: [b["iterations"] for b in later if b["phase"] == phase]
                             for phase in ("warmup", "sampling")},
        "blocks": blocks,
    }
    out["peak_rss_mib"] = peak_mib()
    return out


def exponent(xs: list[float], ys: list[float]) -> float | None:
    """Slope of log(y) on log(x) (least squares); None with fewer than 2 points."""
    if len(xs) < 2:
        return None
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def run_size(groups: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    result = tmp / f"scale-{groups}.json"
    cmd = [sys.executable, __file__, "--worker", "--groups", str(groups), "--chains", str(args.chains),
           "--warmup", str(args.warmup), "--draws", str(args.draws), "--reparam", args.reparam,
           "--cache-dir", str(tmp / f"cache-{groups}"), "--result", str(result)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, timeout=args.timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return {"groups": groups, "error": f"did not finish in {args.timeout} s"}
    if proc.returncode != 0:
        return {"groups": groups, "error": proc.stderr[-2000:]}
    rec: dict[str, Any] = json.loads(result.read_text())
    rec["process_s"] = time.perf_counter() - started
    return rec


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        "# Scale benchmark",
        "",
        f"- date: {report['date']}",
        f"- machine: {report['machine']['nproc']} cores, {report['machine']['cpu']}, "
        f"{report['machine']['memory_gib']} GiB; platform {s['platform']}",
        f"- chainyard tree: git {(report['tree']['git_head'] or '?')[:12]}",
        f"- family: subjects x {EFFECTS} varying effects ({s.get('reparam', 'noncentered')}), {ROWS_PER_GROUP} rows "
        "per subject, Gaussian "
        f"likelihood; {s['chains']} chains x ({s['warmup']} warmup + {s['draws']} draws), default sampler "
        "(fisher adaptation), one fit per size in its own process, empty compile cache",
        "",
        "| params | rows | gradient ms | grads/s sampling | s / 1000 grads | steps / draw | compile s | wall s "
        "| min ESS_bulk | ESS_bulk/s | divergences | block iterations (warmup; sampling, median) | peak RSS MiB |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--|--:|",
    ]
    for r in report["sizes"]:
        if "error" in r:
            lines.append(f"| ({r['groups']} subjects) | | {r['error'][:200]} |" + " |" * 10)
            continue
        f = r["fit"]
        bi = f["block_iterations"]
        med = {k: (statistics.median(v) if v else None) for k, v in bi.items()}
        lines.append(
            f"| {r['params']:,} | {r['rows']:,} | {fmt(r['gradient_ms'])} | {fmt(f['gradients_per_s'])} | "
            f"{fmt(f['s_per_1000_gradients'])} | {fmt(f['mean_steps_per_draw'])} | {fmt(f['compile_s'])} | "
            f"{fmt(f['wall_s'])} | {fmt(f['min_ess_bulk'])} | {fmt(f['ess_per_s'])} | {f['divergences']} | "
            f"{fmt(med['warmup'])}; {fmt(med['sampling'])} | {fmt(r['peak_rss_mib'])} |")
    e = report["exponents"]
    lines += [
        "",
        "Cost exponents (slope of log cost on log parameters; 1 = linear): "
        f"gradient ms **{fmt(e['gradient_ms'])}**, s per 1000 in-sampler gradients {fmt(e['s_per_1000_gradients'])}, "
        f"peak RSS {fmt(e['peak_rss_mib'])} (RSS includes a fixed ~0.5 GB of Python, JAX and XLA).",
        "",
        "- gradient ms: raw `jax.grad` of the potential in a jitted loop, one thread, median of 3.",
        "- grads/s sampling: the fit's gradient evaluations (warmup included) / (wall - compile); chains run on "
        "the cores in parallel, so this is the whole machine's rate.",
        "- block iterations: iterations per block after the first (the engine sizes blocks to about 1 s).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", default=",".join(map(str, GROUPS)),
                        help="subjects per size, comma-separated (parameters = 5 * subjects + 11)")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--reparam", choices=("centered", "noncentered"), default="centered",
                        help="parameterization of the subjects' effects b")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one size may take")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.groups = int(args.groups)
        args.result.write_text(json.dumps(worker(args)))
        return
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(),
        "tree": tree_revision(),
        "settings": {"chains": args.chains, "warmup": args.warmup, "draws": args.draws, "reparam": args.reparam,
                     "platform": os.environ.get("CHAINYARD_PLATFORM", "cpu")},
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="chainyard-bench-scale-") as tmp:
        for groups in map(int, args.groups.split(",")):
            rec = run_size(groups, args, Path(tmp))
            print(json.dumps({k: v for k, v in rec.items() if k not in ("fit", "gradient_loop")}
                             | ({"fit": {k: v for k, v in rec["fit"].items() if k != "blocks"}} if "fit" in rec
                                else {})), flush=True)
            report["sizes"].append(rec)
    ok = [r for r in report["sizes"] if "error" not in r]
    dims = [float(r["params"]) for r in ok]
    report["exponents"] = {
        "gradient_ms": exponent(dims, [r["gradient_ms"] for r in ok]),
        "s_per_1000_gradients": exponent(dims, [r["fit"]["s_per_1000_gradients"] for r in ok]),
        "peak_rss_mib": exponent(dims, [r["peak_rss_mib"] for r in ok]),
    }
    table = markdown(report)
    write_results(args.out, "scale" if args.reparam == "centered" else "scale-noncentered", report, table)
    print(table)


if __name__ == "__main__":
    main()
