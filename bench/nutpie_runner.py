"""nutpie side of bench/engine.py: the PyMC models, sampled by nutpie (numba backend), under the separate
nutpie venv (nutpie >= 0.16.9 and PyMC 6 need Python >= 3.12), not the project's.

    /tmp/nutpie-venv/bin/python bench/nutpie_runner.py JOB.json RESULT.json

JOB.json: {"model": name, "datasets": [paths to Stan data JSON, as for bench/stan/<name>.stan], "params": [names],
           "num_chains", "num_warmup", "num_samples", "seed", "out_dir"}

In this one process: the PyMC model of the first dataset is built and compiled (`nutpie.compile_pymc_model`,
numba), timed, and sampled; every later dataset goes in with `CompiledModel.with_data` (no recompile, as a
nutpie user refits a model to new data of the same shapes) and is sampled. The kept draws of `params` go to
OUT_DIR/draws-<i>.npz as (chain, draw, *dims) arrays; ESS is computed by the caller with arviz. The models are
bench/stan/<name>.stan written in PyMC: the same priors, likelihood and names (transformed parameters as
pm.Deterministic; indices 0-based here).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np


def eight_schools(pm: Any, d: dict[str, Any]) -> Any:
    with pm.Model() as model:
        y, sigma = pm.Data("y", np.asarray(d["y"], float)), pm.Data("sigma", np.asarray(d["sigma"], float))
        mu = pm.Normal("mu", 0, 5)
        tau = pm.HalfCauchy("tau", 5)
        theta_decentered = pm.Normal("theta_decentered", 0, 1, shape=d["J"])
        theta = pm.Deterministic("theta", mu + tau * theta_decentered)
        pm.Normal("obs", theta, sigma, observed=y)
    return model


def hierarchical_regression(pm: Any, d: dict[str, Any]) -> Any:
    with pm.Model() as model:
        y, x = pm.Data("y", np.asarray(d["y"], float)), pm.Data("x", np.asarray(d["x"], float))
        county = pm.Data("county", np.asarray(d["county"], np.int64) - 1)
        mu_a, mu_b = pm.Normal("mu_a", 0, 5), pm.Normal("mu_b", 0, 5)
        sigma_a, sigma_b = pm.HalfNormal("sigma_a", 1), pm.HalfNormal("sigma_b", 1)
        a_decentered = pm.Normal("a_decentered", 0, 1, shape=d["J"])
        b_decentered = pm.Normal("b_decentered", 0, 1, shape=d["J"])
        sigma = pm.HalfNormal("sigma", 1)
        a = pm.Deterministic("a", mu_a + sigma_a * a_decentered)
        b = pm.Deterministic("b", mu_b + sigma_b * b_decentered)
        pm.Normal("obs", a[county] + b[county] * x, sigma, observed=y)
    return model


def hierarchical_logistic(pm: Any, d: dict[str, Any]) -> Any:
    with pm.Model() as model:
        y, X = pm.Data("y", np.asarray(d["y"], np.int64)), pm.Data("X", np.asarray(d["X"], float))
        g = pm.Data("g", np.asarray(d["g"], np.int64) - 1)
        mu_alpha, sigma_alpha = pm.Normal("mu_alpha", 0, 2), pm.HalfNormal("sigma_alpha", 1)
        alpha_decentered = pm.Normal("alpha_decentered", 0, 1, shape=d["J"])
        beta = pm.Normal("beta", 0, 1, shape=d["K"])
        alpha = pm.Deterministic("alpha", mu_alpha + sigma_alpha * alpha_decentered)
        pm.Bernoulli("obs", logit_p=alpha[g] + X @ beta, observed=y)
    return model


MODELS = {"eight_schools": eight_schools, "hierarchical_regression": hierarchical_regression,
          "hierarchical_logistic": hierarchical_logistic}
DATA = {"eight_schools": {"y": float, "sigma": float},
        "hierarchical_regression": {"y": float, "x": float, "county": np.int64},
        "hierarchical_logistic": {"y": np.int64, "X": float, "g": np.int64}}
"""The pm.Data of each model and their dtypes, replaced by `with_data` for a new dataset."""
INDICES = ("county", "g")
"""1-based in the Stan data, 0-based here."""


def data_values(name: str, d: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(d[k], dtype) - (1 if k in INDICES else 0) for k, dtype in DATA[name].items()}


def steps(trace: Any, group: str) -> int:
    return int(trace[group]["n_steps"].values.sum()) if group in trace.children else 0


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    result_path = Path(sys.argv[2])
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"versions": {}, "runs": []}
    for pkg in ("nutpie", "pymc", "pytensor", "numba"):
        try:
            result["versions"][pkg] = version(pkg)
        except Exception:
            result["versions"][pkg] = None
    try:
        import nutpie
        import pymc as pm

        name = job["model"]
        compiled = None
        for i, data_path in enumerate(job["datasets"]):
            data = json.loads(Path(data_path).read_text())
            t0 = time.perf_counter()
            if compiled is None:
                compiled = nutpie.compile_pymc_model(MODELS[name](pm, data), backend="numba")
            else:
                compiled = compiled.with_data(**data_values(name, data))
            t1 = time.perf_counter()
            trace = nutpie.sample(compiled, chains=job["num_chains"], tune=job["num_warmup"],
                                  draws=job["num_samples"], seed=job["seed"], progress_bar=False)
            t2 = time.perf_counter()
            arrays = {p: np.asarray(trace["posterior"][p].values) for p in job["params"]}
            npz = out_dir / f"draws-{i}.npz"
            np.savez(npz, **arrays)
            result["runs"].append({
                "dataset": str(data_path),
                "build_s": t1 - t0,
                "sample_s": t2 - t1,
                "leapfrog_total": steps(trace, "sample_stats") + steps(trace, "warmup_sample_stats"),
                "leapfrog_sampling": steps(trace, "sample_stats"),
                "divergences": int(trace["sample_stats"]["diverging"].values.sum()),
                "npz": str(npz),
            })
            result_path.write_text(json.dumps(result, indent=1))  # partial results survive a later failure
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    result_path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
