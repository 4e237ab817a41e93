"""Results: ArviZ InferenceData and the summary (design section 5). No JAX here."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

with warnings.catch_warnings():  # ArviZ 0.23 announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

from service.language.ir import Model

RHAT_MAX = 1.01
"""Vehtari et al. (2021): R-hat below 1.01 before trusting a fit."""
ESS_PER_CHAIN_MIN = 100
"""Vehtari et al. (2021): bulk and tail ESS above 100 per chain."""
HDI_PROB = 0.94
"""ArviZ's default: the summary reports hdi_3% and hdi_97%."""


def to_inference_data(model: Model, draws: dict[str, np.ndarray], stats: dict[str, np.ndarray],
                      attrs: dict[str, Any] | None = None) -> az.InferenceData:
    """Posterior with the model's dims and coords, sample_stats, observed_data."""
    variables = model.variables
    dims = {name: list(variables[name].dims) for name in draws}
    coords: dict[str, Any] = {k: v for k, v in model.coords.items()}
    for obs in model.observes:
        dims[obs.name] = [f"{obs.name}_dim_{i}" for i in range(len(obs.shape))]
    observed = {obs.name: model.data[obs.name] for obs in model.observes}
    return az.from_dict(
        posterior=draws,
        sample_stats={k: v for k, v in stats.items()},
        observed_data=observed,
        coords=coords,
        dims=dims,
        attrs={"inference_library": "chainyard", **(attrs or {})},
    )


def write_netcdf(idata: az.InferenceData, path: str | Path) -> None:
    idata.to_netcdf(str(path), engine="h5netcdf")


def summary(idata: Any) -> dict[str, Any]:
    """Per-variable rows from ArviZ (rank-normalized R-hat, bulk/tail ESS, MCSE, HDI) and totals."""
    with warnings.catch_warnings():  # constant elements (a correlation's diagonal) have no R-hat: NaN, not noise
        warnings.simplefilter("ignore", RuntimeWarning)
        table = az.summary(idata, kind="all", hdi_prob=HDI_PROB, round_to="none")
    chains = idata.posterior.sizes["chain"]
    rows: list[dict[str, Any]] = [
        {"variable": str(name), **{str(k): _number(v) for k, v in row.items()}}
        for name, row in table.iterrows()
    ]
    diverging = idata.sample_stats["diverging"]
    divergences = int(diverging.sum())
    tree_depth = idata.sample_stats.get("tree_depth")
    rhat = [r["r_hat"] for r in rows if r["r_hat"] is not None]
    ess_bulk = [r["ess_bulk"] for r in rows if r["ess_bulk"] is not None]
    ess_tail = [r["ess_tail"] for r in rows if r["ess_tail"] is not None]
    totals: dict[str, Any] = {
        "chains": int(chains),
        "draws_per_chain": int(idata.posterior.sizes["draw"]),
        "divergences": divergences,
        "max_rhat": max(rhat) if rhat else None,
        "min_ess_bulk": min(ess_bulk) if ess_bulk else None,
        "min_ess_tail": min(ess_tail) if ess_tail else None,
    }
    notes: list[str] = []
    if divergences:
        n = int(diverging.size)
        notes.append(f"{divergences} of {n} transitions after warmup diverged; consider a higher target_accept "
                        "or reparameterizing (noncentered group effects)")
    if chains < 2:
        notes.append("R-hat needs at least 2 chains; convergence was not checked")
    bad_rhat = [r["variable"] for r in rows if r["r_hat"] is not None and r["r_hat"] >= RHAT_MAX]
    if bad_rhat:
        notes.append(f"r_hat >= {RHAT_MAX} for {len(bad_rhat)} variable(s) ({_some(bad_rhat)}); the chains "
                        "have not mixed")
    threshold = ESS_PER_CHAIN_MIN * chains
    low_ess = [r["variable"] for r in rows
               if min(r["ess_bulk"] or math.inf, r["ess_tail"] or math.inf) < threshold]
    if low_ess:
        notes.append(f"ess_bulk or ess_tail below {threshold} ({ESS_PER_CHAIN_MIN} per chain) for "
                        f"{len(low_ess)} variable(s) ({_some(low_ess)}); run more draws")
    if tree_depth is not None and "max_tree_depth" in idata.attrs:
        saturated = int((tree_depth >= int(idata.attrs["max_tree_depth"])).sum())
        if saturated:
            notes.append(f"{saturated} transitions hit max_tree_depth; sampling may be inefficient")
    totals["warnings"] = notes
    return {"variables": rows, "totals": totals}


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _some(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


__all__ = ["summary", "to_inference_data", "write_netcdf"]
