"""PyStan 3 side of bench/engine.py; runs under the separate PyStan venv, not the project's.

    /tmp/pystan-venv/bin/python bench/pystan_runner.py JOB.json RESULT.json

JOB.json: {"code": path to .stan, "datasets": [paths to Stan data JSON], "params": [names],
           "num_chains", "num_warmup", "num_samples", "seed", "save_warmup", "out_dir"}

For each dataset, in this one process: stan.build (the first one compiles the C++ unless
XDG_CACHE_HOME holds a built model; later ones load it from httpstan's cache) and
posterior.sample, each timed. The kept draws of `params` go to OUT_DIR/draws-<i>.npz as
(chain, draw, *dims) arrays; ESS is computed by the caller with arviz. Needs only numpy + pystan.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from importlib.metadata import version
from pathlib import Path

import numpy as np


def per_chain(flat: np.ndarray, dims: list[int], chains: int) -> np.ndarray:
    """PyStan's (*dims, draws*chains) with chains interleaved (flat = draw*chains + chain) -> (chain, draw, *dims)."""
    a = np.asarray(flat).reshape(*dims, -1, chains)
    return np.moveaxis(a, (-1, -2), (0, 1))


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    result_path = Path(sys.argv[2])
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    chains, warmup, samples = job["num_chains"], job["num_warmup"], job["num_samples"]
    save_warmup = bool(job.get("save_warmup", True))
    saved_warmup = warmup if save_warmup else 0
    result: dict = {"versions": {}, "runs": []}
    for pkg in ("pystan", "httpstan", "numpy"):
        try:
            result["versions"][pkg] = version(pkg)
        except Exception:
            result["versions"][pkg] = None
    try:
        import stan

        code = Path(job["code"]).read_text()
        for i, data_path in enumerate(job["datasets"]):
            data = json.loads(Path(data_path).read_text())
            t0 = time.perf_counter()
            posterior = stan.build(code, data=data, random_seed=job["seed"])
            t1 = time.perf_counter()
            fit = posterior.sample(num_chains=chains, num_warmup=warmup, num_samples=samples,
                                   save_warmup=save_warmup)
            t2 = time.perf_counter()
            arrays = {}
            for p in job["params"]:
                dims = list(fit.dims[fit.param_names.index(p)])
                arrays[p] = per_chain(fit[p], dims, chains)[:, saved_warmup:]
            leapfrog = per_chain(fit["n_leapfrog__"], [], chains)
            divergent = per_chain(fit["divergent__"], [], chains)[:, saved_warmup:]
            npz = out_dir / f"draws-{i}.npz"
            np.savez(npz, **arrays)
            result["runs"].append({
                "dataset": str(data_path),
                "build_s": t1 - t0,
                "sample_s": t2 - t1,
                "leapfrog_total": int(leapfrog.sum()) if save_warmup else None,
                "leapfrog_sampling": int(leapfrog[:, saved_warmup:].sum()),
                "divergences": int(divergent.sum()),
                "npz": str(npz),
            })
            result_path.write_text(json.dumps(result, indent=1))  # partial results survive a later failure
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    result_path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
