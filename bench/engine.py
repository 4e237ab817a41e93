"""Benchmark: chainyard's engine vs numpyro's MCMC.run vs PyStan 3, plus raw gradient throughput.

    python bench/engine.py                 # 4 chains x (1000 warmup + 1000 draws), 3 repeats
    python bench/engine.py --quick         # 200 + 200, 1 repeat: smoke test
    python bench/engine.py --models eight_schools --contenders chainyard,pystan,nutpie
    python bench/engine.py --models gp,garch,population_pk --out bench/results/language   # opt-in models

Writes bench/results/engine.json (every measurement) and bench/results/engine.md (the table).
Each contender runs in its own subprocess (`--worker NAME --model MODEL`), so JAX caches,
compiled code and memory never leak from one contender into another. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if sys.path[:1] != [str(ROOT)]:
    # first, even when PYTHONPATH already names it: bench/service.py must not shadow the `service` package
    sys.path.insert(0, str(ROOT))

CONTENDERS = ("chainyard", "numpyro", "pystan", "nutpie", "gradient")
CHAINS = 4
SEED = 1
PYSTAN_PYTHON = Path(os.environ.get("PYSTAN_PYTHON", "/tmp/pystan-venv/bin/python"))
NUTPIE_PYTHON = Path(os.environ.get("NUTPIE_PYTHON", "/tmp/nutpie-venv/bin/python"))
NUTPIE_MODELS = ("eight_schools", "hierarchical_regression", "hierarchical_logistic")
"""The models bench/nutpie_runner.py writes in PyMC."""
WORKER_TIMEOUT_S = 3600

# ----------------------------------------------------------------------------------------------
# Models: variant 0 is the example file; variant k >= 1 has new data values of the same shapes.
# ----------------------------------------------------------------------------------------------


def _load_module(path: str) -> Any:
    """A script under examples/ (generate.py, timeseries/simulate.py, ...) as a module."""
    import importlib.util

    name = "chainyard_examples_" + path.removesuffix(".py").replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shift_y(spec: dict[str, Any], variant: int) -> dict[str, Any]:
    """Eight schools' new data: y shifted by random integers (ints stay ints: same dtype)."""
    import numpy as np

    rng = np.random.default_rng(1000 + variant)
    y = np.asarray(spec["data"]["y"], dtype=np.int64)
    spec["data"]["y"] = (y + rng.integers(-8, 9, size=y.shape)).tolist()
    return spec


def _one_based(values: list[Any]) -> list[int]:
    return [int(c) + 1 for c in values]


@dataclass(frozen=True)
class BenchModel:
    """One benchmark model: its example file, how new data of the same shapes is made, and its Stan data.

    Variant k >= 1 is `simulate` ("script.py:function" under examples/, called with seed=1000+k) or, for a
    model without a simulator, `shift(example spec, k)`. `stan` maps (model.data as lists, model) to the
    data block of bench/stan/<name>.stan.
    """

    example: str
    stan: Callable[[dict[str, Any], Any], dict[str, Any]]
    simulate: str | None = None
    shift: Callable[[dict[str, Any], int], dict[str, Any]] | None = None


BENCH_MODELS: dict[str, BenchModel] = {
    "eight_schools": BenchModel(
        "eight_schools.yaml", shift=_shift_y,
        stan=lambda d, m: {"J": len(d["y"]), "y": d["y"], "sigma": d["sigma"]}),
    "hierarchical_regression": BenchModel(
        "hierarchical_regression.yaml", simulate="generate.py:hierarchical_regression",
        stan=lambda d, m: {"N": len(d["y"]), "J": len(m.coords["county"]), "y": d["y"], "x": d["x"],
                           "county": _one_based(d["county"])}),
    "hierarchical_logistic": BenchModel(
        "hierarchical_logistic.yaml", simulate="generate.py:hierarchical_logistic",
        stan=lambda d, m: {"N": len(d["y"]), "J": len(m.coords["group"]), "K": len(m.coords["predictor"]),
                           "y": d["y"], "X": d["X"], "g": _one_based(d["g"])}),
    # opt-in (--models gp,garch,population_pk): results kept apart, in bench/results/language
    "gp": BenchModel(
        "gp_regression.yaml", simulate="generate.py:gp_regression",
        stan=lambda d, m: {"N": len(d["y"]), "x": d["x"], "y": d["y"]}),
    "garch": BenchModel(
        "timeseries/garch.yaml", simulate="timeseries/simulate.py:garch",
        stan=lambda d, m: {"T": int(d["T"]), "r": d["r"], "sigma1": d["sigma1"]}),
    "population_pk": BenchModel(
        "ode/population_pk.yaml", simulate="ode/simulate.py:population_pk",
        stan=lambda d, m: {"T": len(d["ts"]), "J": len(m.coords["subject"]), "ts": d["ts"], "dose": d["dose"],
                           "conc": d["conc"]}),
}
MODELS = ("eight_schools", "hierarchical_regression", "hierarchical_logistic")
"""The default --models; the others in BENCH_MODELS are opt-in."""


def model_spec(name: str, variant: int = 0) -> dict[str, Any]:
    """The spec of benchmark model `name`: the example file (variant 0), or new data values of the same shapes."""
    from service.language.loader import load_file

    entry = BENCH_MODELS[name]
    if variant == 0:
        return dict(load_file(ROOT / "examples" / entry.example))
    if entry.shift is not None:
        return entry.shift(load_file(ROOT / "examples" / entry.example), variant)
    assert entry.simulate is not None
    script, function = entry.simulate.split(":")
    return dict(getattr(_load_module(script), function)(seed=1000 + variant))


def load_model(name: str, variant: int = 0) -> Any:
    """The benchmark model `name`; variant k >= 1 has new data values with the same shapes and dtypes."""
    from service.language.validate import validate
    from service.sampler import parse_job

    base, _ = parse_job(model_spec(name))
    if variant == 0:
        return base
    model = validate(model_spec(name, variant))
    if model.structure_key() != base.structure_key():
        raise RuntimeError(f"{name} variant {variant}: data shapes/dtypes differ from the example")
    return model


def stan_data(name: str, model: Any) -> dict[str, Any]:
    """model.data in the layout of bench/stan/<name>.stan (1-based indices, sizes as data)."""
    return BENCH_MODELS[name].stan({k: v.tolist() for k, v in model.data.items()}, model)


def min_ess_bulk(draws: dict[str, Any]) -> float:
    """Smallest bulk ESS over every element of the given (chain, draw, *shape) arrays."""
    import arviz as az
    import numpy as np

    ess = az.ess(az.convert_to_dataset({k: np.asarray(v) for k, v in draws.items()}), method="bulk")
    return float(min(float(ess[v].min()) for v in ess.data_vars))


# ----------------------------------------------------------------------------------------------
# JAX compile accounting (jax.monitoring events): what a fit spends tracing, lowering, compiling.
# ----------------------------------------------------------------------------------------------

TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
BACKEND_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileMonitor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[str, float | None, str]] = []

    def install(self) -> None:
        import jax.monitoring as monitoring

        monitoring.register_event_duration_secs_listener(self._duration)
        monitoring.register_event_listener(self._event)

    def _duration(self, event: str, duration: float, **kw: Any) -> None:
        with self._lock:
            self._events.append((event, float(duration), str(kw.get("fun_name", ""))))

    def _event(self, event: str, **_: Any) -> None:
        with self._lock:
            self._events.append((event, None, ""))

    def mark(self) -> int:
        with self._lock:
            return len(self._events)

    def since(self, mark: int) -> dict[str, Any]:
        with self._lock:
            events = self._events[mark:]

        def total(name: str) -> float:
            return sum(d for e, d, _ in events if e == name and d is not None)

        def count(name: str) -> int:
            return sum(1 for e, d, _ in events if e == name and (d is not None or "cache" in name))

        by_fun: dict[str, float] = {}
        for e, d, fun in events:
            if e in (TRACE_EVENT, LOWER_EVENT, BACKEND_EVENT) and d is not None:
                by_fun[fun] = by_fun.get(fun, 0.0) + d

        out = {
            "trace_s": total(TRACE_EVENT),
            "lower_s": total(LOWER_EVENT),
            "backend_compile_s": total(BACKEND_EVENT),
            "backend_compiles": count(BACKEND_EVENT),
            "traces": count(TRACE_EVENT),
            "persistent_cache_hits": count("/jax/compilation_cache/cache_hits"),
            "persistent_cache_misses": count("/jax/compilation_cache/cache_misses"),
        }
        out["compile_s"] = out["trace_s"] + out["lower_s"] + out["backend_compile_s"]
        out["top_functions_s"] = dict(sorted(by_fun.items(), key=lambda kv: -kv[1])[:6])
        return out


ENGINE_FILES = ("engine.py", "chain.py", "program.py", "state.py", "stop.py", "checkpoint.py", "lower.py")
"""The modules whose code decides a fit's speed."""


def engine_source() -> dict[str, Any]:
    """Which engine code a worker imported (the tree may be edited while a benchmark runs)."""
    import hashlib

    import workers.engine

    folder = Path(workers.engine.__file__).parent
    digest = hashlib.sha256()
    for name in ENGINE_FILES:
        digest.update((folder / name).read_bytes())
    return {"files": [str(folder / name) for name in ENGINE_FILES], "sha256": digest.hexdigest()[:16]}


def tree_revision() -> dict[str, Any]:
    """git HEAD of the tree under test and whether engine code differs from it (or the snapshot's revision)."""
    if os.environ.get("CHAINYARD_BENCH_REV"):
        return {"git_head": os.environ["CHAINYARD_BENCH_REV"], "dirty": [], "snapshot": str(ROOT)}

    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True, check=True).stdout

    try:
        dirty = [line[3:] for line in git("status", "--porcelain").splitlines()
                 if line[3:].startswith(("workers/", "service/", "examples/"))]
        return {"git_head": git("rev-parse", "HEAD").strip(), "dirty": dirty, "snapshot": None}
    except (OSError, subprocess.CalledProcessError):
        return {"git_head": None, "dirty": [], "snapshot": None}


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


# ----------------------------------------------------------------------------------------------
# Workers (each runs in its own subprocess and writes one JSON result file)
# ----------------------------------------------------------------------------------------------


def worker_chainyard(args: argparse.Namespace) -> dict[str, Any]:
    """mode=cold: first fit (empty cache dir), warm fits with new data +/- checkpointing, warm same-data fit.
    mode=restart: one fit of the example data in a fresh process whose persistent cache is already filled."""
    from workers.jaxsetup import configure

    configure(Path(args.cache_dir))
    monitor = CompileMonitor()
    monitor.install()
    import numpy as np

    from service.sampler import SamplerSettings
    from workers.engine import Engine

    settings = SamplerSettings(seed=SEED, chains=CHAINS, warmup=args.warmup, draws=args.draws)
    engine = Engine(threads=0)
    worker_engine = Engine(threads=0, checkpoint_at_end=False)  # what the service's workers run: writes by time only
    model0 = load_model(args.model, 0)
    params = [p.name for p in model0.params]
    models = {k: load_model(args.model, k) for k in range(1, args.repeats + 1)} if args.mode == "cold" else {}

    def fit(model: Any, checkpoint_dir: Path | None = None, runner: Engine = engine) -> tuple[dict[str, Any], Any]:
        mark = monitor.mark()
        f = runner.run(model, settings, checkpoint_dir=checkpoint_dir)
        rec = {
            "wall_s": f.timings["wall"],
            "compile": monitor.since(mark),
            "grads_total": int(f.gradient_evaluations),
            "grads_sampling": int(np.asarray(f.stats["n_steps"]).sum()),
            "divergences": int(np.asarray(f.stats["diverging"]).sum()),
            "min_ess_bulk": min_ess_bulk({p: f.draws[p] for p in params}),
            "checkpoint": checkpoint_dir is not None,
        }
        return rec, f

    out: dict[str, Any] = {"mode": args.mode, "params": params, "engine_source": engine_source()}
    if args.mode == "restart":
        out["restart"], _ = fit(model0)
        return out
    out["cold"], _ = fit(model0)
    kinds = ("warm", "warm_checkpoint", "warm_checkpoint_worker")
    out.update({kind: [] for kind in kinds})
    identical = []
    with tempfile.TemporaryDirectory(prefix="chainyard-bench-ckpt-") as tmp:
        for k in range(1, args.repeats + 1):
            # rotate which of the three runs first so drift in machine load hits them alike
            order = kinds[k % 3:] + kinds[:k % 3]
            firsts = {}
            for kind in order:
                directory = Path(tmp) / f"{kind}-{k}" if kind != "warm" else None
                rec, f = fit(models[k], directory, worker_engine if kind == "warm_checkpoint_worker" else engine)
                rec["variant"] = k
                out[kind].append(rec)
                firsts[kind] = f.draws[params[0]]
            identical.append(all(np.array_equal(firsts["warm"], firsts[kind]) for kind in kinds))
    out["checkpoint_draws_identical"] = all(identical)
    out["warm_same_data"], _ = fit(model0)  # same data and seed as the cold fit: cold - this = first-fit overhead
    return out


def worker_numpyro(args: argparse.Namespace) -> dict[str, Any]:
    """numpyro's MCMC.run the usual way: parallel chains on host devices, float64, one MCMC object reused."""
    import numpyro

    numpyro.set_host_device_count(max(CHAINS, os.cpu_count() or 1))
    numpyro.enable_x64()
    import jax
    import jax.numpy as jnp
    import numpy as np
    from numpyro.infer import MCMC, NUTS

    monitor = CompileMonitor()
    monitor.install()
    from workers.lower import lower

    model0 = load_model(args.model, 0)
    params = [p.name for p in model0.params]
    models = {k: load_model(args.model, k) for k in range(1, args.repeats + 1)}
    mcmc = MCMC(NUTS(lower(model0)), num_warmup=args.warmup, num_samples=args.draws, num_chains=CHAINS,
                chain_method="parallel", progress_bar=False)

    def call(model: Any) -> dict[str, Any]:
        mark = monitor.mark()
        started = time.perf_counter()
        data = {k: jnp.asarray(v) for k, v in model.data.items()}
        mcmc.run(jax.random.PRNGKey(SEED), data, extra_fields=("num_steps", "diverging"))
        samples = mcmc.get_samples(group_by_chain=True)
        extra = mcmc.get_extra_fields(group_by_chain=True)
        jax.block_until_ready((samples, extra))
        wall = time.perf_counter() - started
        return {
            "wall_s": wall,
            "compile": monitor.since(mark),
            "grads_total": None,  # MCMC.run collects extra fields after warmup only
            "grads_sampling": int(np.asarray(extra["num_steps"]).sum()),
            "divergences": int(np.asarray(extra["diverging"]).sum()),
            "min_ess_bulk": min_ess_bulk({p: np.asarray(samples[p]) for p in params}),
        }

    out: dict[str, Any] = {"params": params, "devices": jax.device_count()}
    out["cold"] = call(model0)
    out["warm"] = []
    for k in range(1, args.repeats + 1):
        rec = call(models[k])
        rec["variant"] = k
        out["warm"].append(rec)
    return out


def worker_gradient(args: argparse.Namespace) -> dict[str, Any]:
    """Gradient of the potential with the data bound, N evaluations inside one jitted fori_loop."""
    from workers.jaxsetup import configure

    configure(None)
    return gradient_rate(load_model(args.model, 0), args.grad_evals, args.repeats)


def gradient_rate(model: Any, evals: int, repeats: int) -> dict[str, Any]:
    """`repeats` timings of `jax.grad` of `model`'s potential (data bound) in one jitted fori_loop of at least
    `evals` evaluations, lengthened until one run takes >= 0.5 s (timer and dispatch noise do not matter)."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import initialize_model

    from workers.lower import lower

    data = {k: jnp.asarray(v) for k, v in model.data.items()}
    info = initialize_model(jax.random.PRNGKey(0), lower(model), model_args=(data,))
    z0 = info.param_info.z
    grad = jax.grad(info.potential_fn)

    @jax.jit
    def loop(z: Any, n: jax.Array) -> Any:
        def body(_: jax.Array, carry: Any) -> Any:
            z, acc = carry
            g = grad(z)
            # a tiny step along the gradient makes every evaluation depend on the previous one
            z = jax.tree.map(lambda a, b: a - 1e-9 * b, z, g)
            return z, acc + sum(jnp.sum(x) for x in jax.tree.leaves(g))

        return jax.lax.fori_loop(0, n, body, (z, jnp.zeros(())))

    jax.block_until_ready(loop(z0, 10))  # compile
    n = evals
    while True:
        started = time.perf_counter()
        jax.block_until_ready(loop(z0, n))
        if time.perf_counter() - started >= 0.5:
            break
        n *= 4
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(loop(z0, n))
        rates.append(n / (time.perf_counter() - started))
    return {"evals": n, "evals_per_s": rates, "dims": int(sum(x.size for x in jax.tree.leaves(z0)))}


WORKERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "chainyard": worker_chainyard,
    "numpyro": worker_numpyro,
    "gradient": worker_gradient,
}

# ----------------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------------


def run_worker(name: str, model: str, args: argparse.Namespace, log_dir: Path, **extra: Any) -> dict[str, Any]:
    tag = f"{name}-{model}" + (f"-{extra['mode']}" if "mode" in extra else "")
    with tempfile.TemporaryDirectory(prefix="chainyard-bench-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--model", model,
               "--result-file", str(result), "--warmup", str(args.warmup), "--draws", str(args.draws),
               "--repeats", str(args.repeats), "--grad-evals", str(args.grad_evals)]
        for key, value in extra.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        return _run(cmd, result, log_dir / f"{tag}.log", tag, env=None)


def _run(cmd: list[str], result: Path, log: Path, tag: str, env: dict[str, str] | None) -> dict[str, Any]:
    print(f"[bench] {tag} ...", file=sys.stderr, flush=True)
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        with open(log, "w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                  timeout=WORKER_TIMEOUT_S, check=False)
        rc: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    elapsed = time.perf_counter() - started
    out: dict[str, Any] = json.loads(result.read_text()) if result.exists() else {}
    if rc != 0 and "error" not in out:
        tail = log.read_text()[-2000:] if log.exists() else ""
        out["error"] = f"exit {rc}: {tail}"
    out["process_s"] = elapsed
    out["loadavg_before"] = load_before
    out["loadavg_after"] = os.getloadavg()
    print(f"[bench] {tag} done in {elapsed:.1f}s" + (" (ERROR)" if "error" in out else ""), file=sys.stderr,
          flush=True)
    return out


def run_pystan(model_name: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Cold build + sample, warm (cached build, new data) repeats, then a restart with the filled cache."""
    if not PYSTAN_PYTHON.exists():
        return {"error": f"{PYSTAN_PYTHON} not found; create it: python3 -m venv /tmp/pystan-venv && "
                         "/tmp/pystan-venv/bin/pip install pystan==3.10.0 pandas"}
    import numpy as np

    model0 = load_model(model_name, 0)
    params = [p.name for p in model0.params]
    work = Path(tempfile.mkdtemp(prefix="chainyard-bench-pystan-"))
    try:
        cache = work / "xdg-cache"  # empty: the first build compiles the C++
        cache.mkdir()
        datasets = []
        for k in range(args.repeats + 1):
            path = work / f"data-{k}.json"
            path.write_text(json.dumps(stan_data(model_name, load_model(model_name, k))))
            datasets.append(str(path))
        env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
        out: dict[str, Any] = {"params": params}
        for mode, ds in (("cold", datasets), ("restart", datasets[:1])):
            job = {"code": str(BENCH / "stan" / f"{model_name}.stan"), "datasets": ds, "params": params,
                   # httpstan caches fits made with a seed (same model, data, seed, arguments): the restart
                   # run uses another seed so it can never be served from that cache
                   "num_chains": CHAINS, "num_warmup": args.warmup, "num_samples": args.draws,
                   "seed": SEED if mode == "cold" else SEED + 1000,
                   "save_warmup": mode == "restart", "out_dir": str(work / f"draws-{mode}")}
            job_path, result = work / f"job-{mode}.json", work / f"result-{mode}.json"
            job_path.write_text(json.dumps(job))
            res = _run([str(PYSTAN_PYTHON), str(BENCH / "pystan_runner.py"), str(job_path), str(result)],
                       result, log_dir / f"pystan-{model_name}-{mode}.log", f"pystan-{model_name}-{mode}", env)
            for run in res.get("runs", []):
                with np.load(run.pop("npz")) as z:
                    run["min_ess_bulk"] = min_ess_bulk({p: z[p] for p in params})
                run["dataset"] = Path(run["dataset"]).name
            out[mode] = res
            if "error" in res:
                break
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_nutpie(model_name: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Cold compile + sample (empty pytensor and numba caches), warm `with_data` repeats, then a restart with the
    filled caches; each mode one process of bench/nutpie_runner.py under NUTPIE_PYTHON."""
    if model_name not in NUTPIE_MODELS:
        return {"error": f"no PyMC version of {model_name} in bench/nutpie_runner.py"}
    if not NUTPIE_PYTHON.exists():
        return {"error": f"{NUTPIE_PYTHON} not found; create it: python3.12 -m venv /tmp/nutpie-venv && "
                         "/tmp/nutpie-venv/bin/pip install nutpie==0.16.11 pymc==6.4.0 numba==0.68.0"}
    import numpy as np

    model0 = load_model(model_name, 0)
    params = [p.name for p in model0.params]
    work = Path(tempfile.mkdtemp(prefix="chainyard-bench-nutpie-"))
    try:
        datasets = []
        for k in range(args.repeats + 1):
            path = work / f"data-{k}.json"
            path.write_text(json.dumps(stan_data(model_name, load_model(model_name, k))))
            datasets.append(str(path))
        env = {**os.environ, "PYTENSOR_FLAGS": f"compiledir={work / 'pytensor-cache'}",
               "NUMBA_CACHE_DIR": str(work / "numba-cache")}
        out: dict[str, Any] = {"params": params}
        for mode, ds in (("cold", datasets), ("restart", datasets[:1])):
            job = {"model": model_name, "datasets": ds, "params": params, "num_chains": CHAINS,
                   "num_warmup": args.warmup, "num_samples": args.draws, "seed": SEED,
                   "out_dir": str(work / f"draws-{mode}")}
            job_path, result = work / f"job-{mode}.json", work / f"result-{mode}.json"
            job_path.write_text(json.dumps(job))
            res = _run([str(NUTPIE_PYTHON), str(BENCH / "nutpie_runner.py"), str(job_path), str(result)],
                       result, log_dir / f"nutpie-{model_name}-{mode}.log", f"nutpie-{model_name}-{mode}", env)
            for run in res.get("runs", []):
                with np.load(run.pop("npz")) as z:
                    run["min_ess_bulk"] = min_ess_bulk({p: z[p] for p in params})
                run["dataset"] = Path(run["dataset"]).name
                run["wall_s"] = run["build_s"] + run["sample_s"]
            out[mode] = res
            if "error" in res:
                break
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Summary table
# ----------------------------------------------------------------------------------------------


def _ratio_median(recs: list[dict[str, Any]], num: str, den: str = "wall_s") -> float | None:
    return _median(r[num] / r[den] if r.get(num) is not None and r.get(den) else None for r in recs)


def summarize(name: str, contender: str, res: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, "contender": contender, "error": res.get("error")}
    partial = contender in ("pystan", "nutpie") or (contender == "chainyard" and "warm_same_data" in res)
    if row["error"] and not partial:
        return row  # (a chainyard error in the restart run alone still leaves the cold and warm numbers)
    if contender == "chainyard":
        cold, warm, ckpt = res["cold"], res["warm"], res["warm_checkpoint"]
        warm_wall = _median(r["wall_s"] for r in warm)
        ckpt_wall = _median(r["wall_s"] for r in ckpt)
        worker_wall = _median(r["wall_s"] for r in res.get("warm_checkpoint_worker", []))
        restart = res.get("restart_result", {}).get("restart")
        row.update({
            "cold_s": cold["wall_s"],
            "warm_s": warm_wall,
            "restart_s": restart["wall_s"] if restart else None,
            "compile_s": cold["wall_s"] - res["warm_same_data"]["wall_s"],
            "compile_measured_s": cold["compile"]["compile_s"],
            "warm_compile_s": max(r["compile"]["compile_s"] for r in warm),
            "warm_backend_compiles": max(r["compile"]["backend_compiles"] for r in warm),
            "min_ess_bulk": _median(r["min_ess_bulk"] for r in warm),
            "ess_per_s": _ratio_median(warm, "min_ess_bulk"),
            "grads_per_s": _ratio_median(warm, "grads_total"),
            "grads_total": _median(r["grads_total"] for r in warm),
            "grads_note": "incl. warmup",
            "checkpoint_overhead_pct": (100.0 * (ckpt_wall - warm_wall) / warm_wall
                                        if warm_wall and ckpt_wall is not None else None),
            "checkpoint_worker_overhead_pct": (100.0 * (worker_wall - warm_wall) / warm_wall
                                               if warm_wall and worker_wall is not None else None),
            "checkpoint_draws_identical": res.get("checkpoint_draws_identical"),
            "divergences_warm": _median(r["divergences"] for r in warm),
        })
    elif contender == "numpyro":
        cold, warm = res["cold"], res["warm"]
        row.update({
            "cold_s": cold["wall_s"],
            "warm_s": _median(r["wall_s"] for r in warm),
            "restart_s": None,
            "compile_s": cold["compile"]["compile_s"],
            "compile_measured_s": cold["compile"]["compile_s"],
            "warm_compile_s": _median(r["compile"]["compile_s"] for r in warm),
            "warm_backend_compiles": max(r["compile"]["backend_compiles"] for r in warm),
            "min_ess_bulk": _median(r["min_ess_bulk"] for r in warm),
            "ess_per_s": _ratio_median(warm, "min_ess_bulk"),
            "grads_per_s": _ratio_median(warm, "grads_sampling"),
            "grads_note": "sampling phase only: a lower bound",
            "divergences_warm": _median(r["divergences"] for r in warm),
        })
    elif contender == "pystan":
        runs = res.get("cold", {}).get("runs", [])
        if not runs:
            row["error"] = row["error"] or res.get("cold", {}).get("error") or "no runs"
            return row
        cold, warm = runs[0], runs[1:] or runs[:1]
        for r in runs:
            r["wall_s"] = r["build_s"] + r["sample_s"]
        restart_runs = res.get("restart", {}).get("runs", [])
        warm_build = _median(r["build_s"] for r in warm)
        row.update({
            "cold_s": cold["wall_s"],
            "warm_s": _median(r["wall_s"] for r in warm),
            "restart_s": restart_runs[0]["build_s"] + restart_runs[0]["sample_s"] if restart_runs else None,
            "compile_s": cold["build_s"] - warm_build if warm_build is not None else None,
            "warm_compile_s": warm_build,
            "warm_backend_compiles": None,
            "min_ess_bulk": _median(r["min_ess_bulk"] for r in warm),
            "ess_per_s": _ratio_median(warm, "min_ess_bulk", "sample_s"),
            # timed runs keep no warmup draws (as users run it); the restart run (example data) saves them,
            # for the leapfrog count incl. warmup
            "grads_per_s": _ratio_median(restart_runs, "leapfrog_total", "sample_s"),
            "grads_total": restart_runs[0]["leapfrog_total"] if restart_runs else None,
            "grads_note": "incl. warmup, per sampling wall (build excluded), from the restart run",
            "sample_s": _median(r["sample_s"] for r in warm),
            "divergences_warm": _median(r["divergences"] for r in warm),
            "error": res.get("cold", {}).get("error") or res.get("restart", {}).get("error"),
        })
    elif contender == "nutpie":
        runs = res.get("cold", {}).get("runs", [])
        if not runs:
            row["error"] = row["error"] or res.get("cold", {}).get("error") or "no runs"
            return row
        cold, warm = runs[0], runs[1:] or runs[:1]
        restart_runs = res.get("restart", {}).get("runs", [])
        row.update({
            "cold_s": cold["wall_s"],
            "warm_s": _median(r["wall_s"] for r in warm),
            "restart_s": restart_runs[0]["wall_s"] if restart_runs else None,
            "compile_s": cold["build_s"],
            "warm_compile_s": _median(r["build_s"] for r in warm),
            "warm_backend_compiles": None,
            "min_ess_bulk": _median(r["min_ess_bulk"] for r in warm),
            "ess_per_s": _ratio_median(warm, "min_ess_bulk"),
            "grads_per_s": _ratio_median(warm, "leapfrog_total"),
            "grads_total": _median(r["leapfrog_total"] for r in warm),
            "grads_note": "incl. warmup",
            "divergences_warm": _median(r["divergences"] for r in warm),
            "error": res.get("cold", {}).get("error") or res.get("restart", {}).get("error"),
        })
    elif contender == "gradient":
        row.update({"grads_per_s": _median(res["evals_per_s"]), "grads_note": "jitted fori_loop, 1 thread",
                    "dims": res.get("dims")})
    return row


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) >= 1 else f"{value:.2g}"
    return str(value)


LABELS = {
    "chainyard": "chainyard",
    "numpyro": "numpyro MCMC.run",
    "pystan": "PyStan 3",
    "nutpie": "nutpie (PyMC, numba)",
    "gradient": "raw jax.grad loop",
}


def markdown(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    lines = [
        "# Engine benchmark",
        "",
        f"- date: {report['date']}" + (" — **--quick smoke run, not a benchmark**" if s["quick"] else ""),
        f"- machine: {m['nproc']} cores, {m['cpu']}, {m['memory_gib']} GiB, {m['platform']}; "
        f"load average at start {m['loadavg_start']}, end {m['loadavg_end']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"- chainyard tree: git {(report['tree']['git_head'] or 'unknown')[:12]}"
        + (" (snapshot via --snapshot)" if report["tree"].get("snapshot") else "")
        + (f", uncommitted changes in {', '.join(report['tree']['dirty'])}" if report["tree"]["dirty"] else "")
        + "; workers/engine.py sha256 " + (", ".join(sorted(_engine_hashes(report))) or "—")
        + (" — **differs between models: the engine changed during the run**" if len(_engine_hashes(report)) > 1
           else ""),
        f"- settings: {CHAINS} chains x ({s['warmup']} warmup + {s['draws']} draws), seed {SEED}, "
        f"medians of {s['repeats']} warm repeat(s); raw gradient loops of >= {s['grad_evals']:,} evaluations "
        "(lengthened until one takes >= 0.5 s)",
        "- noise: 2-core machine shared with other work during the run; treat differences under ~15% as noise",
        "",
        "| model | contender | cold wall s | warm wall s | restart wall s | compile s | warm compile s | "
        "min ESS_bulk | ESS_bulk/s | ESS/s vs PyStan | ESS/s vs nutpie | grad evals | grad evals/s | "
        "ckpt overhead % (run; worker) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    notes = []
    for row in report["rows"]:
        vs, vs_nutpie = (_vs(report["rows"], row, other) for other in ("pystan", "nutpie"))
        grads = fmt(row.get("grads_per_s"))
        if row["contender"] == "numpyro" and row.get("grads_per_s") is not None:
            grads = "≥ " + grads
        ckpt = row.get("checkpoint_overhead_pct")
        ckpt_s = "—" if ckpt is None else f"{ckpt:+.1f}"
        if row.get("checkpoint_worker_overhead_pct") is not None:
            ckpt_s += f"; {row['checkpoint_worker_overhead_pct']:+.1f}"
        if row.get("error"):
            notes.append(f"- {row['model']} / {LABELS[row['contender']]}: ERROR {row['error'][:300]!r}")
            if row.get("cold_s") is None:
                lines.append(f"| {row['model']} | {LABELS[row['contender']]} | failed (see notes) |"
                             + " |" * 13)
                continue
        warm_compile = fmt(row.get("warm_compile_s"))
        if row.get("warm_backend_compiles") is not None and row["contender"] != "pystan":
            n = row["warm_backend_compiles"]
            warm_compile += f" ({n} XLA compile{'' if n == 1 else 's'})"
        lines.append(
            f"| {row['model']} | {LABELS[row['contender']]} | {fmt(row.get('cold_s'))} | {fmt(row.get('warm_s'))} | "
            f"{fmt(row.get('restart_s'))} | {fmt(row.get('compile_s'))} | {warm_compile} | "
            f"{fmt(row.get('min_ess_bulk'), 4)} | {fmt(row.get('ess_per_s'))} | "
            f"{'—' if vs is None else f'{vs:.2f}x'} | {'—' if vs_nutpie is None else f'{vs_nutpie:.2f}x'} | "
            f"{fmt(row.get('grads_total'))} | {grads} | {ckpt_s} |")
    lines += [
        "",
        "Columns (details in bench/README.md):",
        "- cold: first fit in a fresh process — chainyard with an empty persistent compile cache, numpyro's "
        "first `MCMC.run`, PyStan `stan.build` with an empty httpstan cache + `sample`, nutpie "
        "`compile_pymc_model` (numba) with empty pytensor and numba caches + `sample`.",
        "- warm: median over repeats of a fit in the same process with new data values of the same shapes "
        "(chainyard: no recompile; numpyro: `MCMC.run` again, which re-traces and recompiles; PyStan: cached "
        "`stan.build` + `sample`; nutpie: `CompiledModel.with_data` + `sample`).",
        "- restart: a fresh process whose persistent cache is already filled (chainyard's JAX cache, httpstan's "
        "model cache, pytensor's and numba's caches for nutpie); numpyro keeps no cache across processes.",
        "- compile: chainyard = cold wall - wall of a warm fit of the *same* data and seed (identical draws); "
        "numpyro = JAX trace+lower+compile time measured (jax.monitoring) in the first call; PyStan = cold "
        "build - cached build; nutpie = its cold `compile_pymc_model`.",
        "- warm compile: JAX trace+lower+compile seconds measured during the warm fit (count of XLA compiles in "
        "parentheses); PyStan: the cached `stan.build` time.",
        "- min ESS_bulk over every element of the model's params (same set for all contenders), arviz bulk ESS "
        "of the warm fits; ESS_bulk/s = min ESS / warm wall (PyStan: / sampling wall, build excluded).",
        "- grad evals/s: leapfrog steps incl. warmup / warm wall (numpyro's MCMC.run reports sampling-phase "
        "steps only, hence ≥; PyStan: from the restart run, the only one that saves warmup draws, / its sampling "
        "wall); nutpie: `n_steps` of warmup and sampling / warm wall; grad evals: the total of one fit "
        "(median of the warm fits; PyStan: the restart run); raw: `jax.grad` of the potential in a jitted "
        "`fori_loop`, one thread.",
        "- ckpt overhead: median warm wall with checkpoint_dir vs without; run = `chainyard run --checkpoint-dir` "
        "(by time and at each chain's end, so the directory holds the finished job), worker = the service's workers "
        "(by time only: they store a finished chain's draws in Redis and delete its files). Same data and seed, "
        "draws identical: "
        + ", ".join(f"{r['model']} {fmt(r.get('checkpoint_draws_identical'))}" for r in report["rows"]
                    if r["contender"] == "chainyard" and not r.get("error")) + ").",
    ]
    if notes:
        lines += ["", "Failures:", *notes]
    return "\n".join(lines) + "\n"


def _vs(rows: list[dict[str, Any]], row: dict[str, Any], other: str) -> float | None:
    """row's ESS_bulk/s over that of contender `other` on the same model."""
    them = next((r for r in rows if r["model"] == row["model"] and r["contender"] == other), None)
    if them and them.get("ess_per_s") and row.get("ess_per_s"):
        return float(row["ess_per_s"] / them["ess_per_s"])
    return None


def _engine_hashes(report: dict[str, Any]) -> set[str]:
    hashes = set()
    for raw in report["raw"].values():
        c = raw.get("chainyard", {})
        for res in (c, c.get("restart_result", {})):
            if "engine_source" in res:
                hashes.add(res["engine_source"]["sha256"])
    return hashes


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": mem, "platform": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in ("jax", "jaxlib", "numpyro", "arviz", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def orchestrate(args: argparse.Namespace) -> None:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="chainyard-bench-logs-"))
    print(f"[bench] worker logs in {log_dir}", file=sys.stderr)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in BENCH_MODELS]
    if unknown:
        sys.exit(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(BENCH_MODELS)}")
    contenders = [c for c in args.contenders.split(",") if c]
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**machine_info(), "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
        "versions": versions(),
        "tree": tree_revision(),
        "settings": {"quick": args.quick, "warmup": args.warmup, "draws": args.draws, "repeats": args.repeats,
                     "chains": CHAINS, "seed": SEED, "grad_evals": args.grad_evals},
        "raw": {},
        "rows": [],
    }
    for model in models:
        raw = report["raw"].setdefault(model, {})
        for contender in contenders:
            try:
                if contender == "chainyard":
                    cache = Path(tempfile.mkdtemp(prefix="chainyard-bench-jaxcache-"))
                    try:
                        res = run_worker("chainyard", model, args, log_dir, mode="cold", cache_dir=cache)
                        if "error" not in res:
                            res["restart_result"] = run_worker("chainyard", model, args, log_dir, mode="restart",
                                                               cache_dir=cache)
                            if "error" in res["restart_result"]:
                                res["error"] = "restart: " + res["restart_result"]["error"]
                    finally:
                        shutil.rmtree(cache, ignore_errors=True)
                elif contender in ("pystan", "nutpie"):
                    res = (run_pystan if contender == "pystan" else run_nutpie)(model, args, log_dir)
                    if "versions" in res.get("cold", {}):
                        report["versions"].update(res["cold"]["versions"])
                else:
                    res = run_worker(contender, model, args, log_dir)
                raw[contender] = res
                row = summarize(model, contender, res)
            except Exception as exc:
                raw[contender] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
                row = {"model": model, "contender": contender, "error": raw[contender]["error"]}
            report["rows"].append(row)
            _write(report, out_dir)  # partial results survive an interrupted run
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    _write(report, out_dir)
    print((out_dir / "engine.md").read_text())


def _write(report: dict[str, Any], out_dir: Path) -> None:
    report["machine"].setdefault("loadavg_end", None)
    write_results(out_dir, "engine", report, markdown(report))


def write_results(out_dir: Path, name: str, report: dict[str, Any], table: str) -> None:
    """A benchmark's results: every number in `<name>.json`, the table in `<name>.md`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out_dir / f"{name}.md").write_text(table)


def run_snapshot(args: argparse.Namespace) -> int:
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", args.snapshot], capture_output=True, text=True,
                         check=True).stdout.strip()
    snap = Path(tempfile.mkdtemp(prefix=f"chainyard-bench-snap-{rev[:8]}-"))
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(snap)], input=archive, check=True)
        shutil.rmtree(snap / "bench", ignore_errors=True)
        shutil.copytree(BENCH, snap / "bench", ignore=shutil.ignore_patterns("results", "__pycache__"))
        argv = [a for a in sys.argv[1:]]
        i = argv.index("--snapshot")
        del argv[i:i + 2]
        cmd = [sys.executable, str(snap / "bench" / "engine.py"), *argv, "--out", str(Path(args.out).resolve())]
        print(f"[bench] snapshot of {rev[:12]} in {snap}", file=sys.stderr, flush=True)
        return subprocess.run(cmd, env={**os.environ, "CHAINYARD_BENCH_REV": rev}, check=False).returncode
    finally:
        shutil.rmtree(snap, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="200 warmup + 200 draws, 1 repeat (smoke test)")
    p.add_argument("--repeats", type=int, default=None, help="warm repeats; medians are reported (default 3)")
    p.add_argument("--out", default=str(BENCH / "results"))
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"comma-separated, of {', '.join(BENCH_MODELS)} (default: {','.join(MODELS)})")
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--draws", type=int, default=None)
    p.add_argument("--grad-evals", type=int, default=None)
    p.add_argument("--snapshot", metavar="REV",
                   help="benchmark `git archive REV` extracted to a tmp dir (with this bench/ copied in), so edits "
                        "to the work tree during the run cannot mix engine versions")
    # internal: worker processes
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--model", choices=sorted(BENCH_MODELS), help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="cold", choices=("cold", "restart"), help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.warmup = args.warmup if args.warmup is not None else (200 if args.quick else 1000)
    args.draws = args.draws if args.draws is not None else (200 if args.quick else 1000)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    args.grad_evals = args.grad_evals if args.grad_evals is not None else (1000 if args.quick else 10_000)
    if args.snapshot and not args.worker:
        sys.exit(run_snapshot(args))
    if args.worker:
        try:
            result = WORKERS[args.worker](args)
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        Path(args.result_file).write_text(json.dumps(result, indent=1, default=float))
        sys.exit(1 if "error" in result else 0)
    orchestrate(args)


if __name__ == "__main__":
    main()
