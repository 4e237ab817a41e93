"""Warm start on new data: how much warmup a fit on new data of the same shapes saves by starting where an earlier
fit's chains ended, and whether its draws still match a cold fit.

    .venv/bin/python bench/warmstart.py [--rounds 3] [--out bench/results]

The model is the hierarchical regression (`examples/generate.py`, 900 rows, 85 counties, 175 parameters). Each
round fits, in one process, 4 chains each:

- A: cold, data seed 20, warmup 1000 + 1000 draws (the earlier job);
- B: cold, data seed 21 (new values, same shapes), warmup 1000 + 1000 draws;
- W: warm, data seed 21, warmup 150 + 1000 draws, chain c starting at A's chain c final position, step size and
  inverse mass matrix (`warm=[WarmStart.of(s) for s in A.states]`).

Round r uses sampler seeds A: 100 + r, B: 200 + r, W: 300 + r (B and W are independent). An untimed round 0
(seeds 100, 200, 300) compiles both programs (warmup is part of the compiled program). Reported, medians over
rounds: wall seconds, warmup gradients, total gradients, min bulk ESS over every element of every param, ESS/s
(min bulk ESS / wall) and W's warmup-gradient saving against B (1 - W / B); per round, whether every element's
mean and sd of W agree with B's within 4 combined MCSE (ArviZ mcse mean / sd), and which do not.
Writes bench/results/warmstart.json (every number) and warmstart.md (the table).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# run as `python bench/warmstart.py`, bench/service.py would shadow the `service` package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import contextlib
import datetime as dt
import importlib.util
import os
import platform
import statistics
import subprocess
from typing import Any

import numpy as np

from bench.engine import versions, write_results  # the same package list as the engine benchmark

CHAINS = 4
SOURCE_DATA_SEED, NEW_DATA_SEED = 20, 21
COLD_WARMUP, WARM_WARMUP, DRAWS = 1000, 150, 1000
MCSE_LIMIT = 4.0


def regression(seed: int) -> Any:
    from service.language.validate import validate

    spec = importlib.util.spec_from_file_location("chainyard_examples_generate", ROOT / "examples" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return validate(module.hierarchical_regression(seed=seed))


def elements(model: Any, draws: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every element of every param as (chain, draw), named `a[3]`."""
    out: dict[str, np.ndarray] = {}
    for p in model.params:
        x = np.asarray(draws[p.name])
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        if x.ndim == 2:
            out[p.name] = flat[:, :, 0]
        else:
            for i, idx in enumerate(np.ndindex(*x.shape[2:])):
                out[f"{p.name}[{','.join(map(str, idx))}]"] = flat[:, :, i]
    return out


def moments(draws: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per element (in `draws` order): mean, sd, their ArviZ MCSE and bulk ESS."""
    import arviz as az

    names = list(draws)
    ds = az.convert_to_dataset({f"v{i}": draws[n] for i, n in enumerate(names)})

    def per(result: Any) -> np.ndarray:
        return np.array([float(result[f"v{i}"]) for i in range(len(names))])

    stacked = np.stack([draws[n].reshape(-1) for n in names])
    return {
        "mean": stacked.mean(axis=1),
        "sd": stacked.std(axis=1, ddof=1),
        "mcse_mean": per(az.mcse(ds, method="mean")),
        "mcse_sd": per(az.mcse(ds, method="sd")),
        "ess_bulk": per(az.ess(ds, method="bulk")),
    }


def agreement(names: list[str], w: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, Any]:
    """|W - B| / sqrt(mcse_W^2 + mcse_B^2) for every element's mean and sd; those at or over MCSE_LIMIT."""
    out: dict[str, Any] = {}
    for what in ("mean", "sd"):
        z = np.abs(w[what] - b[what]) / np.sqrt(w[f"mcse_{what}"] ** 2 + b[f"mcse_{what}"] ** 2)
        bad = [i for i in range(len(names)) if not z[i] < MCSE_LIMIT]
        worst = int(np.argmax(z))
        out[what] = {
            "agree": not bad,
            "disagreeing": len(bad),
            "max_z": float(z[worst]),
            "max_z_element": names[worst],
            "elements": [{"element": names[i], "w": float(w[what][i]), "b": float(b[what][i]), "z": float(z[i])}
                         for i in bad],
        }
    return out


def record(fit: Any, m: dict[str, np.ndarray]) -> dict[str, Any]:
    wall = float(fit.timings["wall"])
    ess = float(m["ess_bulk"].min())
    return {
        "seed": fit.seed,
        "wall_s": wall,
        "warmup_gradients": int(fit.warmup_gradients),
        "gradients": int(fit.gradient_evaluations),
        "divergences": int(np.asarray(fit.stats["diverging"]).sum()),
        "step_size": [float(s["adapt_state/step_size"]) for s in fit.states],
        "min_ess_bulk": ess,
        "ess_per_s": ess / wall,
    }


def one_round(r: int, source: Any, new: Any) -> dict[str, Any]:
    from service.sampler import SamplerSettings
    from workers.engine import Engine
    from workers.state import WarmStart

    engine = Engine(threads=0)
    cold = SamplerSettings(chains=CHAINS, warmup=COLD_WARMUP, draws=DRAWS)
    a = engine.run(source, cold.model_copy(update={"seed": 100 + r}))
    b = engine.run(new, cold.model_copy(update={"seed": 200 + r}))
    warm = SamplerSettings(chains=CHAINS, warmup=WARM_WARMUP, draws=DRAWS, seed=300 + r,
                           warm_start={"job": "j" + "0" * 24})
    w = engine.run(new, warm, warm=[WarmStart.of(s) for s in a.states])
    ma, mb, mw = (moments(elements(f.model, f.draws)) for f in (a, b, w))
    names = list(elements(new, b.draws))
    out: dict[str, Any] = {"round": r, "A": record(a, ma), "B": record(b, mb), "W": record(w, mw),
                           "agreement": agreement(names, mw, mb)}
    out["warmup_saving"] = 1 - out["W"]["warmup_gradients"] / out["B"]["warmup_gradients"]
    return out


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("wall_s", "warmup_gradients", "gradients", "min_ess_bulk", "ess_per_s", "divergences")
    out: dict[str, Any] = {f: {k: _median([r[f][k] for r in rounds]) for k in keys} for f in ("A", "B", "W")}
    out["warmup_saving"] = _median([r["warmup_saving"] for r in rounds])
    out["all_agree"] = all(r["agreement"][w]["agree"] for r in rounds for w in ("mean", "sd"))
    return out


def fmt(x: float, digits: int = 3) -> str:
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def markdown(report: dict[str, Any]) -> str:
    s, m = report["summary"], report["machine"]
    lines = [
        "# Warm start on new data (hierarchical regression, 175 params)",
        "",
        f"- date: {report['date']}; git {str(report['git_head'])[:12]}; machine: {m['nproc']} cores, "
        f"{m['cpu']}; load average at start {m['loadavg_start']}, end {m['loadavg_end']}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}",
        f"- {CHAINS} chains each; A: cold, data seed {SOURCE_DATA_SEED}, {COLD_WARMUP} warmup + {DRAWS} draws; "
        f"B: cold, data seed {NEW_DATA_SEED}, {COLD_WARMUP} + {DRAWS}; W: warm from A's final states, data seed "
        f"{NEW_DATA_SEED}, {WARM_WARMUP} + {DRAWS}",
        f"- medians of {len(report['rounds'])} rounds (round r: sampler seeds A {100}+r, B {200}+r, W {300}+r), "
        "after an untimed compiling round",
        "",
        "| fit | wall s | warmup gradients | total gradients | min ESS_bulk | ESS_bulk/s | divergences |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    labels = {"A": "A cold, seed-20 data", "B": "B cold, seed-21 data", "W": "W warm (150 warmup), seed-21 data"}
    for f, label in labels.items():
        row = s[f]
        lines.append(f"| {label} | {fmt(row['wall_s'])} | {fmt(row['warmup_gradients'])} | {fmt(row['gradients'])} "
                     f"| {fmt(row['min_ess_bulk'], 4)} | {fmt(row['ess_per_s'])} | {fmt(row['divergences'])} |")
    lines += [
        "",
        f"Warmup-gradient saving of W against B (1 - W/B), median: **{100 * s['warmup_saving']:.1f} %**.",
        "",
        f"W against B, every element's mean and sd within {MCSE_LIMIT:g} combined MCSE "
        "(|W - B| < 4 sqrt(mcse_W² + mcse_B²), ArviZ mcse mean / sd):",
        "",
        "| round | warmup saving | means agree (disagreeing) | max z mean | sds agree (disagreeing) | max z sd |",
        "|--:|--:|---|--:|---|--:|",
    ]
    for r in report["rounds"]:
        g = r["agreement"]
        lines.append(
            f"| {r['round']} | {100 * r['warmup_saving']:.1f} % | {'yes' if g['mean']['agree'] else 'no'} "
            f"({g['mean']['disagreeing']}) | {g['mean']['max_z']:.2f} ({g['mean']['max_z_element']}) | "
            f"{'yes' if g['sd']['agree'] else 'no'} ({g['sd']['disagreeing']}) | {g['sd']['max_z']:.2f} "
            f"({g['sd']['max_z_element']}) |")
    bad = [(r["round"], what, e) for r in report["rounds"] for what in ("mean", "sd")
           for e in r["agreement"][what]["elements"]]
    if bad:
        lines += ["", "Disagreeing elements:", ""]
        lines += [f"- round {rd}, {what} of {e['element']}: W {e['w']:.4g}, B {e['b']:.4g}, z = {e['z']:.2f}"
                  for rd, what, e in bad]
    lines += ["", "Wall is `fit.timings['wall']` (the whole fit, warmup included); ESS/s = min bulk ESS / wall."]
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    return {"nproc": os.cpu_count(), "cpu": cpu, "platform": platform.platform(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()

    from workers.jaxsetup import configure

    configure(None)
    report: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
                              "versions": versions()}
    try:
        report["git_head"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                            text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        report["git_head"] = None
    source, new = regression(SOURCE_DATA_SEED), regression(NEW_DATA_SEED)
    if source.structure_key() != new.structure_key():
        raise RuntimeError("the new data's shapes differ from the source's")
    report["settings"] = {"chains": CHAINS, "cold_warmup": COLD_WARMUP, "warm_warmup": WARM_WARMUP, "draws": DRAWS,
                          "data_seeds": [SOURCE_DATA_SEED, NEW_DATA_SEED], "mcse_limit": MCSE_LIMIT,
                          "sampler_seeds": "round r: A 100+r, B 200+r, W 300+r; round 0 untimed"}
    print("[warmstart] round 0 (compiling, untimed)", file=sys.stderr)
    report["compile_round"] = one_round(0, source, new)
    report["rounds"] = []
    for r in range(1, args.rounds + 1):
        res = one_round(r, source, new)
        report["rounds"].append(res)
        print(f"[warmstart] round {r}: wall A {res['A']['wall_s']:.2f} B {res['B']['wall_s']:.2f} "
              f"W {res['W']['wall_s']:.2f} s; saving {100 * res['warmup_saving']:.1f} %; agree mean "
              f"{res['agreement']['mean']['agree']} sd {res['agreement']['sd']['agree']}", file=sys.stderr)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["summary"] = summarize(report["rounds"])
    write_results(Path(args.out), "warmstart", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
