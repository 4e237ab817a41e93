"""Refit cost: a hierarchical regression on a 10,000-row, 200-group dataset refitted and published as a prior.

    .venv/bin/python bench/refit.py [--repeats 3] [--out bench/results]

Runs a real local stack (Redis, uvicorn API, 2 worker processes), one tenant. The dataset `hospitals`
(hospital: string, x, y: float) is simulated with a fixed seed from y ~ Normal(alpha[hospital] + beta * x,
sigma), alpha ~ Normal(mu, tau), and appended through the client in 4 appends of 2,500 rows (their
throughput is reported). The prior `hospitals` is that model (alpha noncentered, dims [hospital]),
exporting mu, tau, beta, sigma as one MVN; sampler 4 chains x (1000 + 1000).

Each round re-PUTs the definition with `sampler.seed = round` (a refit of unchanged data and definition is
the same content-addressed job) and then measures, polling every 20 ms:

- refit wall: `POST /v1/priors/hospitals/refit` -> the prior's `latest` names a new version;
- sampling wall: the job's created_at -> all its chains seen `done`; ESS/s = min bulk ESS of the exported
  params (and of every variable) / sampling wall;
- time to publish: the published version's created_at (and the job's finished_at) minus the time all chains
  were seen done: assembly + gate + export + publish.

Round 0 (seed 0) warms the workers (compilation) and is not timed. Medians over rounds; every round's raw
numbers are in the JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as `python bench/refit.py`, this file would shadow the `service` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from cli.stack import Stack, free_port
from service.client import Client

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
NAME = "hospitals"
GROUPS, PER_GROUP, APPENDS = 200, 50, 4
TRUTH = {"mu": 2.0, "tau": 0.5, "beta": 0.7, "sigma": 2.0}
DATA_SEED = 20261212
EXPORTED = ["mu", "tau", "beta", "sigma"]
SAMPLER = {"chains": 4, "warmup": 1000, "draws": 1000}
POLL = 0.02
MODEL = {
    "spec": 1,
    "params": {
        "mu": "Normal(0, 5)",
        "tau": "HalfNormal(2)",
        "beta": "Normal(0, 5)",
        "sigma": "HalfNormal(5)",
        "alpha": {"dist": "Normal(mu, tau)", "dims": ["hospital"], "reparam": "noncentered"},
    },
    "observe": {"y": "Normal(alpha[hospital] + beta * x, sigma)"},
}


def simulate() -> dict[str, list[Any]]:
    """10,000 rows: 200 hospitals x 50 patients, rows shuffled so that every append holds many hospitals."""
    rng = np.random.default_rng(DATA_SEED)
    alpha = rng.normal(TRUTH["mu"], TRUTH["tau"], size=GROUPS)
    group = np.repeat(np.arange(GROUPS), PER_GROUP)
    x = rng.normal(0.0, 1.0, size=group.size)
    y = rng.normal(alpha[group] + TRUTH["beta"] * x, TRUTH["sigma"])
    order = rng.permutation(group.size)
    return {"hospital": [f"H{g:03d}" for g in group[order]], "x": x[order].round(6).tolist(),
            "y": y[order].round(6).tolist()}


def definition(seed: int, sampler: dict[str, int]) -> dict[str, Any]:
    return {"model": MODEL, "data_from": {"dataset": NAME, "columns": {"hospital": "hospital", "x": "x", "y": "y"}},
            "sampler": {**sampler, "seed": seed}, "export": {"params": EXPORTED, "method": "mvn"}}


def append(client: Client, data: dict[str, list[Any]]) -> dict[str, Any]:
    """The dataset in APPENDS appends; rows/s per append and overall."""
    client.put_dataset(NAME, {"hospital": "string", "x": "float", "y": "float"})
    n = len(data["y"])
    size = n // APPENDS
    walls = []
    for k in range(APPENDS):
        part = {c: v[k * size:(k + 1) * size if k < APPENDS - 1 else n] for c, v in data.items()}
        started = time.perf_counter()
        client.append_rows(NAME, columns=part)
        walls.append(time.perf_counter() - started)
    head = client.dataset(NAME)
    assert head["rows"] == n, head
    return {"appends": APPENDS, "rows_per_append": size, "rows": n, "wall_s": walls, "total_s": sum(walls),
            "rows_per_s": n / sum(walls), "median_rows_per_s": statistics.median(size / w for w in walls),
            "dataset_version": head["version"], "hash": head["hash"]}


def refit_round(client: Client, seed: int, sampler: dict[str, int]) -> dict[str, Any]:
    """One refit of definition(seed, sampler): its timings, diagnostics and outcome."""
    client.put_prior(NAME, definition(seed, sampler))
    before = client.prior(NAME)["latest"]
    started_wall, started = time.time(), time.perf_counter()
    job = client.refit(NAME)
    job_id = job["id"]
    chains_done: float | None = None
    polls = 0
    while True:
        polls += 1
        now = time.time()
        if chains_done is None:
            doc = client.get(job_id)
            if doc["chains"] and all(c["phase"] == "done" for c in doc["chains"]):
                chains_done = now
            elif doc["state"] in ("failed", "cancelled"):
                raise RuntimeError(f"refit job {job_id} {doc['state']}: {doc.get('error')}")
        head = client.prior(NAME)
        last = head.get("last_refit") or {}
        if head["latest"] != before or last.get("job") == job_id:
            refit_wall = time.perf_counter() - started
            break
        if time.perf_counter() - started > 1800:
            raise TimeoutError(job_id)
        time.sleep(POLL)
    doc = client.get(job_id)
    if chains_done is None:  # the job ended between two polls of its chains
        chains_done = float(doc["finished_at"])
    outcome = client.prior_refits(NAME)[0]
    assert outcome["job"] == job_id, outcome
    summary = client.summary(job_id)
    rows = {r["variable"]: r for r in summary["variables"]}
    totals = summary["totals"]
    sampling = chains_done - float(doc["created_at"])
    min_ess_exported = min(float(rows[p]["ess_bulk"]) for p in EXPORTED)
    result: dict[str, Any] = {
        "seed": seed, "job": job_id, "outcome": outcome["outcome"], "reasons": outcome["reasons"],
        "diagnostics": outcome["diagnostics"], "polls": polls,
        "refit_wall_s": refit_wall,
        "submit_to_created_s": float(doc["created_at"]) - started_wall,
        "queued_s": (float(doc["started_at"]) - float(doc["created_at"])) if doc.get("started_at") else None,
        "sampling_wall_s": sampling,
        "min_ess_bulk_exported": min_ess_exported,
        "min_ess_bulk_all": float(totals["min_ess_bulk"]),
        "min_ess_tail_all": float(totals["min_ess_tail"]),
        "max_rhat": float(totals["max_rhat"]), "divergences": int(totals["divergences"]),
        "ess_per_s_exported": min_ess_exported / sampling,
        "ess_per_s_all": float(totals["min_ess_bulk"]) / sampling,
        "min_ess_bulk_variable": min(rows, key=lambda v: rows[v]["ess_bulk"] or float("inf")),
        "finished_after_chains_s": float(doc["finished_at"]) - chains_done,
        "outcome_after_chains_s": float(outcome["at"]) - chains_done,
        "posterior_means": {p: rows[p]["mean"] for p in EXPORTED},
    }
    result.update(sampling_stats(client.netcdf(job_id)))
    if outcome["outcome"] == "succeeded":
        version = client.prior_version(NAME, int(outcome["version"]))
        result["version"] = int(outcome["version"])
        result["publish_after_chains_s"] = float(version["created_at"]) - chains_done
    return result


def read_idata(netcdf: bytes) -> Any:
    """A job's InferenceData from its netCDF bytes, loaded into memory."""
    import arviz as az

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fit.nc"
        path.write_bytes(netcdf)
        read: Any = az.from_netcdf  # untyped in ArviZ
        return read(str(path)).load()


def sampling_stats(netcdf: bytes) -> dict[str, Any]:
    """Leapfrog steps of the sampling phase (all chains) and the adapted step sizes: why seeds differ in time."""
    stats = read_idata(netcdf).sample_stats
    steps = np.asarray(stats["n_steps"].values)
    return {"leapfrog_steps_sampling": int(steps.sum()), "mean_tree_depth": float(stats["tree_depth"].values.mean()),
            "step_size_per_chain": [float(v) for v in np.asarray(stats["step_size"].values)[:, -1]]}


def breakdown(netcdf: bytes) -> dict[str, Any]:
    """The publishing steps redone in this process on a refit's InferenceData (median of 3 each): the summary
    (ArviZ over every variable: the gate's input), the netCDF file the job stores, the MVN export."""
    from service.priors.export import ExportSettings, fit
    from service.results import summary, write_netcdf

    idata = read_idata(netcdf)
    draws = {p: np.asarray(idata.posterior[p].values) for p in EXPORTED}
    supports = {"mu": "real", "tau": "positive", "beta": "real", "sigma": "positive"}
    with tempfile.TemporaryDirectory() as tmp:
        steps: dict[str, Callable[[], object]] = {
            "summary_s": lambda: summary(idata),
            "netcdf_s": lambda: write_netcdf(idata, Path(tmp) / "again.nc"),
            "export_s": lambda: fit(draws, supports, ExportSettings(params=tuple(EXPORTED))),
        }
        out: dict[str, Any] = {"netcdf_bytes": len(netcdf), "variables": len(summary(idata)["variables"])}
        for name, step in steps.items():
            walls = []
            for _ in range(3):
                started = time.perf_counter()
                step()
                walls.append(time.perf_counter() - started)
            out[name] = statistics.median(walls)
    return out


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def median(rounds: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rounds if r.get(key) is not None]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    parser.add_argument("--warmup", type=int, default=SAMPLER["warmup"], help="per chain (smoke tests: fewer)")
    parser.add_argument("--draws", type=int, default=SAMPLER["draws"], help="per chain")
    args = parser.parse_args()
    sampler = {**SAMPLER, "warmup": args.warmup, "draws": args.draws}
    tmp = Path(tempfile.mkdtemp(prefix="chainyard-bench-refit-"))
    print(f"stack files and logs under {tmp}", flush=True)
    stack = Stack(data_dir=tmp / "stack", port=free_port(), workers=2, token=TOKEN,
                  overrides={"compile_cache_dir": tmp / "jax-cache"})
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average_before": list(os.getloadavg()),
        "settings": {**sampler, "workers": 2, "repeats": args.repeats, "poll_s": POLL, "groups": GROUPS,
                     "rows_per_group": PER_GROUP, "data_seed": DATA_SEED, "truth": TRUTH, "exported": EXPORTED,
                     "model": MODEL},
    }
    stack.start()
    try:
        with Client(stack.url, TOKEN) as client:
            results["append"] = append(client, simulate())
            print("append", {k: v for k, v in results["append"].items() if k != "hash"}, flush=True)
            started = time.perf_counter()
            results["warmup_round"] = refit_round(client, 0, sampler)
            results["warmup_round"]["wall_s"] = time.perf_counter() - started
            print("warm-up", results["warmup_round"], flush=True)
            rounds = []
            for r in range(1, args.repeats + 1):
                rounds.append(refit_round(client, r, sampler))
                print(f"round {r}", rounds[-1], flush=True)
            netcdf = client.netcdf(rounds[-1]["job"])
    finally:
        stack.stop()
    results["breakdown"] = breakdown(netcdf)
    print("breakdown", results["breakdown"], flush=True)
    results["rounds"] = rounds
    results["load_average_after"] = list(os.getloadavg())
    keys = ["refit_wall_s", "sampling_wall_s", "min_ess_bulk_exported", "min_ess_bulk_all", "ess_per_s_exported",
            "ess_per_s_all", "leapfrog_steps_sampling", "publish_after_chains_s", "finished_after_chains_s",
            "submit_to_created_s", "queued_s"]
    results["median"] = {k: median(rounds, k) for k in keys}
    results["outcomes"] = [r["outcome"] for r in rounds]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "refit.json").write_text(json.dumps(results, indent=1))
    (args.out / "refit.md").write_text(report(results))
    print(json.dumps(results["median"], indent=1))


def busy_note(results: dict[str, Any]) -> list[str]:
    """A warning line when other work ran on the machine (load average above 0.5 before the stack started)."""
    before, cpus = results["load_average_before"][0], results["machine"]["cpus"]
    if before <= 0.5:
        return []
    return [f"**Measured while other work ran on the machine** (1-minute load average {before:.2f} on {cpus} cores "
            "before the stack started): wall times and ESS/s are pessimistic and noisy; treat differences under "
            "~20 % between rounds as noise.", ""]


def report(results: dict[str, Any]) -> str:
    m, a, rounds, s = results["median"], results["append"], results["rounds"], results["settings"]

    def f(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        "# Refit benchmark",
        "",
        f"- date: {results['date']}; commit {results['commit']}; machine: {results['machine']['cpus']} cores, "
        f"{results['machine']['platform']}; load average before/after: "
        f"{results['load_average_before'][0]:.2f} / {results['load_average_after'][0]:.2f}",
        f"- stack: Redis + API + 2 workers, one tenant; dataset {a['rows']} rows, {GROUPS} hospitals x {PER_GROUP}",
        "- model: y ~ Normal(alpha[hospital] + beta * x, sigma), alpha ~ Normal(mu, tau) noncentered; export "
        "mu, tau, beta, sigma (mvn); default gate",
        f"- sampler: {s['chains']} chains x ({s['warmup']} warmup + {s['draws']} draws); round k uses seed k; "
        "one warm-up round (seed 0) "
        f"untimed; medians of {len(rounds)} rounds; polling every {int(POLL * 1000)} ms",
        "",
        *busy_note(results),
        f"Appends: {a['appends']} x {a['rows_per_append']} rows in {a['total_s']:.2f} s = "
        f"**{a['rows_per_s']:.0f} rows/s** (median per append {a['median_rows_per_s']:.0f} rows/s).",
        "",
        "| | refit wall s | sampling wall s | min ESS_bulk exported | ESS/s exported | min ESS_bulk all | "
        "ESS/s all | leapfrog steps (sampling) | publish after chains done s | job finished after chains done s | "
        "outcome |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        f"| **median** | {f(m['refit_wall_s'])} | {f(m['sampling_wall_s'])} | {f(m['min_ess_bulk_exported'], 0)} | "
        f"{f(m['ess_per_s_exported'], 1)} | {f(m['min_ess_bulk_all'], 0)} | {f(m['ess_per_s_all'], 1)} | "
        f"{f(m['leapfrog_steps_sampling'], 0)} | {f(m['publish_after_chains_s'], 3)} | "
        f"{f(m['finished_after_chains_s'], 3)} | |",
    ]
    for r in rounds:
        lines.append(
            f"| seed {r['seed']} | {f(r['refit_wall_s'])} | {f(r['sampling_wall_s'])} | "
            f"{f(r['min_ess_bulk_exported'], 0)} | {f(r['ess_per_s_exported'], 1)} | {f(r['min_ess_bulk_all'], 0)} | "
            f"{f(r['ess_per_s_all'], 1)} | {r['leapfrog_steps_sampling']} | {f(r.get('publish_after_chains_s'), 3)} | "
            f"{f(r['finished_after_chains_s'], 3)} | {r['outcome']} |")
    w, b = results["warmup_round"], results["breakdown"]
    truth = s["truth"]
    lines += ["", f"Gate inputs over the timed rounds: max R-hat {max(r['max_rhat'] for r in rounds):.4f}, "
              f"min tail ESS {min(r['min_ess_tail_all'] for r in rounds):.0f}, "
              f"divergences {sum(r['divergences'] for r in rounds)}; the smallest bulk ESS is "
              f"{'/'.join(sorted({r['min_ess_bulk_variable'] for r in rounds}))}. Posterior means (seed "
              f"{rounds[-1]['seed']}) vs the simulation's truth: "
              + ", ".join(f"{p} {rounds[-1]['posterior_means'][p]:.3f} ({truth[p]})" for p in EXPORTED) + "."]
    failed = [r for r in [w, *rounds] if r["outcome"] != "succeeded"]
    if failed:
        lines += ["", "**Gate failures** (nothing published; the outcome was recorded "
                      f"{statistics.median(r['outcome_after_chains_s'] for r in failed):.2f} s after the chains were "
                      "done, median): " + "; ".join(f"seed {r['seed']}: {', '.join(r['reasons'])}" for r in failed)]
    lines += [
        "",
        f"Where the publish latency goes (the last round's InferenceData, {b['variables']} summary rows, "
        f"{b['netcdf_bytes'] / 1e6:.1f} MB netCDF; each step redone in the benchmark process after the stack "
        f"stopped, median of 3): ArviZ summary {b['summary_s']:.2f} s, netCDF file {b['netcdf_s']:.2f} s, MVN "
        f"export {1000 * b['export_s']:.1f} ms.",
        "",
        f"Warm-up round (compiles the model in each worker; untimed in the table): refit wall "
        f"{w['refit_wall_s']:.1f} s, outcome {w['outcome']}.",
        "",
        "- *leapfrog steps*: gradient evaluations of the sampling phase, all chains (each seed adapts its own step "
        "size, so its trajectories and time differ; the same seed reproduces the same draws).",
        "- *refit wall*: `POST /v1/priors/hospitals/refit` until `GET /v1/priors/hospitals` names the new version.",
        "- *sampling wall*: the job's `created_at` until all chains were seen `done` (queueing, dispatch, warmup "
        "and sampling); ESS/s divides min bulk ESS (exported params, or every variable) by it.",
        "- *publish after chains done*: the published version's `created_at` minus the moment all chains were seen "
        "done (assembly of the results, summary, gate, MVN export, the publishing script); *job finished*: the "
        "job's `finished_at` minus the same (set just after publishing). That moment is observed by polling, so it "
        "is late by up to one poll interval plus one request: the true latencies are larger than shown by at most "
        "that (~20-40 ms).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
