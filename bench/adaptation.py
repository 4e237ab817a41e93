"""Warmup adaptation: `sampler.adaptation: stan` (numpyro's windowed Welford) against `fisher` (nutpie's
sqrt(Var(positions) / Var(gradients)) metric and schedule, workers/fisher.py), in one process.

    .venv/bin/python bench/adaptation.py [--seeds 3] [--models eight_schools,...] [--out bench/results]

For each model (the engine benchmark's examples: eight_schools, hierarchical_regression,
hierarchical_logistic) an untimed fit per adaptation compiles its program (seed 0); then, for sampler seeds
1..N, both adaptations fit 4 chains x (1000 warmup + 1000 draws) with the same seed, in alternating order
(stan first for odd seeds) so drift in the machine's load hits both alike. Per fit: total gradient
evaluations (sum of every iteration's n_steps, warmup included; fisher's step size searches are in them),
warmup gradients, min bulk ESS over every element of every param (ArviZ), ESS per 1000 gradients, wall
seconds (`fit.timings['wall']`, compile excluded by the untimed fit) and divergences. Reported: medians over
seeds per model and adaptation, and fisher / stan ratios of those medians.
Writes bench/results/adaptation.json (every fit) and adaptation.md (the table).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# run as `python bench/adaptation.py`, bench/service.py would shadow the `service` package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import datetime as dt
import os
import statistics
from typing import Any

import numpy as np

from bench.engine import MODELS, load_model, machine_info, min_ess_bulk, tree_revision, versions, write_results

CHAINS, WARMUP, DRAWS = 4, 1000, 1000
ADAPTATIONS = ("stan", "fisher")
METRICS = ("gradients", "warmup_gradients", "min_ess_bulk", "ess_per_1000_gradients", "wall_s", "divergences")
NUTPIE_REGRESSION_GRADIENTS = 112_000
"""nutpie's total gradients on hierarchical_regression, 4 x (1000 + 1000), as reported in issue 14 (not measured
here)."""


def one_fit(model: Any, adaptation: str, seed: int) -> dict[str, Any]:
    from service.sampler import SamplerSettings
    from workers.engine import Engine

    settings = SamplerSettings(chains=CHAINS, warmup=WARMUP, draws=DRAWS, seed=seed, adaptation=adaptation)
    fit = Engine(threads=0).run(model, settings)
    ess = min_ess_bulk({p.name: fit.draws[p.name] for p in model.params})
    gradients = int(fit.gradient_evaluations)
    return {
        "seed": seed,
        "adaptation": adaptation,
        "gradients": gradients,
        "warmup_gradients": int(fit.warmup_gradients),
        "sampling_gradients": int(np.asarray(fit.stats["n_steps"]).sum()),
        "min_ess_bulk": ess,
        "ess_per_1000_gradients": 1000 * ess / gradients,
        "wall_s": float(fit.timings["wall"]),
        "divergences": int(np.asarray(fit.stats["diverging"]).sum()),
        "step_size": [float(s["adapt_state/step_size"]) for s in fit.states],
    }


def summarize(fits: list[dict[str, Any]]) -> dict[str, Any]:
    medians = {a: {m: float(statistics.median(f[m] for f in fits if f["adaptation"] == a)) for m in METRICS}
               for a in ADAPTATIONS}
    ratios = {m: (medians["fisher"][m] / medians["stan"][m] if medians["stan"][m] else None) for m in METRICS}
    return {"median": medians, "fisher_over_stan": ratios}


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Warmup adaptation: stan vs fisher",
        "",
        f"- date: {report['date']}; git {str(report['revision'].get('git_head'))[:12]}"
        f"{' (dirty: ' + ', '.join(report['revision']['dirty']) + ')' if report['revision'].get('dirty') else ''}; "
        f"machine: {m['nproc']} cores, {m['cpu']}; load average at start {report['loadavg_start']}, end "
        f"{report['loadavg_end']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"- {CHAINS} chains x ({WARMUP} warmup + {DRAWS} draws); medians over sampler seeds "
        f"{report['seeds']} (both adaptations per seed, same process, after an untimed compiling fit each)",
        "",
        "| model | adaptation | total gradients | warmup gradients | min ESS_bulk | ESS / 1000 gradients | wall s | "
        "divergences |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name, res in report["models"].items():
        s = res["summary"]
        for a in ADAPTATIONS:
            v = s["median"][a]
            lines.append(f"| {name} | {a} | {fmt(v['gradients'])} | {fmt(v['warmup_gradients'])} | "
                         f"{fmt(v['min_ess_bulk'])} | {fmt(v['ess_per_1000_gradients'])} | {fmt(v['wall_s'])} | "
                         f"{fmt(v['divergences'])} |")
        r = s["fisher_over_stan"]
        lines.append(f"| {name} | **fisher / stan** | **{fmt(r['gradients'])}** | **{fmt(r['warmup_gradients'])}** | "
                     f"{fmt(r['min_ess_bulk'])} | **{fmt(r['ess_per_1000_gradients'])}** | {fmt(r['wall_s'])} | "
                     f"{fmt(r['divergences'])} |")
    lines += ["", "Per fit (seed: total gradients / min ESS_bulk / divergences):", "",
              "| model | adaptation | " + " | ".join(f"seed {s}" for s in report["seeds"]) + " |",
              "|---|---|" + "---|" * len(report["seeds"])]
    for name, res in report["models"].items():
        for a in ADAPTATIONS:
            cells = [f"{f['gradients']:,} / {f['min_ess_bulk']:.0f} / {f['divergences']}"
                     for f in sorted(res["fits"], key=lambda f: f["seed"]) if f["adaptation"] == a]
            lines.append(f"| {name} | {a} | " + " | ".join(cells) + " |")
    reg = report["models"].get("hierarchical_regression")
    if reg is not None:
        fisher = reg["summary"]["median"]["fisher"]["gradients"]
        lines += ["", f"hierarchical_regression, fisher: {fisher:,.0f} total gradients, against nutpie's "
                      f"~{NUTPIE_REGRESSION_GRADIENTS:,} reported in issue 14 (not measured here; its ESS is not "
                      "known here either)."]
    lines += ["", "Ratios are of the medians. Total gradients = sum of n_steps over every iteration of every chain, "
                  "warmup included (fisher's step size searches included); ESS / 1000 gradients = min ESS_bulk over "
                  "every element of every param / total gradients x 1000; wall = `fit.timings['wall']`, compile "
                  "excluded."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()

    from workers.jaxsetup import configure

    configure(None)
    seeds = list(range(1, args.seeds + 1))
    report: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                              "machine": machine_info(), "versions": versions(), "revision": tree_revision(),
                              "loadavg_start": [round(x, 2) for x in os.getloadavg()], "seeds": seeds,
                              "settings": {"chains": CHAINS, "warmup": WARMUP, "draws": DRAWS}, "models": {}}
    for name in args.models.split(","):
        model = load_model(name)
        for a in ADAPTATIONS:
            print(f"[adaptation] {name} {a}: compiling fit (seed 0, untimed)", file=sys.stderr)
            one_fit(model, a, 0)
        fits = []
        for seed in seeds:
            for a in ADAPTATIONS if seed % 2 else ADAPTATIONS[::-1]:
                f = one_fit(model, a, seed)
                fits.append(f)
                print(f"[adaptation] {name} {a} seed {seed}: {f['gradients']:,} gradients "
                      f"({f['warmup_gradients']:,} warmup), min ESS {f['min_ess_bulk']:.0f}, {f['wall_s']:.2f} s, "
                      f"{f['divergences']} divergences", file=sys.stderr)
        report["models"][name] = {"fits": fits, "summary": summarize(fits)}
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    write_results(Path(args.out), "adaptation", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
