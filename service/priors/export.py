"""A refit's posterior draws -> the prior it publishes (numpy only; the API and workers both run this).

The exported variables are mapped to the unconstrained scale by the same bijections numpyro's `biject_to`
uses (real: identity, positive: log, unit: logit, interval(a, b): logit of the rescaled value), so a job
that uses the prior samples exactly the vector that was fitted. Two methods (design section 6):

- `mvn` (default): one multivariate normal on the concatenated unconstrained vector; keeps correlations.
- `marginal`: one family per variable chosen by its support (Normal for real, LogNormal for positive, Beta
  for the unit interval), fitted elementwise by moments; loses correlations.

`inflate` k multiplies the unconstrained covariance by k (a power prior with a0 = 1/k; for Beta the
concentrations are divided by k, which multiplies the variance by about k). `robust` mixes in a vague
component with the stated weight, as RBesT's `robustify` does: the same centre with each standard deviation
`scale` times wider (Beta: Beta(1, 1)).

The published export is the `fitted_priors` entry of service/language/fitted.py without the target
params: `members` name the exported variables; a job's `priors_from` maps them onto its own params.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

INTERVAL_RE = re.compile(r"^interval\((-?[0-9.eE+-]+), *(-?[0-9.eE+-]+)\)$")
MARGINAL_SUPPORTS = ("real", "positive", "unit")


@dataclass(frozen=True, kw_only=True)
class ExportSettings:
    """A prior definition's `export`."""

    params: tuple[str, ...]
    method: str = "mvn"
    inflate: float = 1.0
    robust_weight: float = 0.0
    robust_scale: float = 10.0


def unconstrain(values: np.ndarray, support: str) -> np.ndarray:
    """Constrained draws -> numpyro's unconstrained scale for `support` (its `biject_to` inverse)."""
    x = np.asarray(values, dtype=np.float64)
    if support == "real":
        return x
    if support == "positive":
        return np.log(x)
    if support == "unit":
        return np.log(x) - np.log1p(-x)
    match = INTERVAL_RE.match(support)
    if match:
        low, high = float(match.group(1)), float(match.group(2))
        u = (x - low) / (high - low)
        return np.log(u) - np.log1p(-u)
    raise ValueError(f"no unconstrained scale for support {support!r}")


def fit(draws: dict[str, np.ndarray], supports: dict[str, str], settings: ExportSettings) -> dict[str, Any]:
    """The export of `settings.params` from draws shaped (chain, draw, *shape)."""
    members = []
    columns = []
    for name in settings.params:
        value = np.asarray(draws[name], dtype=np.float64)
        shape = list(value.shape[2:])
        flat = unconstrain(value.reshape(value.shape[0] * value.shape[1], -1), supports[name])
        members.append({"name": name, "shape": shape, "support": supports[name]})
        columns.append(flat)
    u = np.concatenate(columns, axis=1)
    if not np.all(np.isfinite(u)):
        raise ValueError("draws on the unconstrained scale are not all finite (a value on its support's boundary)")
    mean = u.mean(axis=0)
    cov = np.atleast_2d(np.cov(u, rowvar=False))
    out: dict[str, Any] = {"method": settings.method, "members": members, "draws": int(u.shape[0]),
                           "inflate": settings.inflate,
                           "robust": ({"weight": settings.robust_weight, "scale": settings.robust_scale}
                                      if settings.robust_weight else None),
                           "mean": mean.tolist(), "cov": cov.tolist()}
    if settings.method == "mvn":
        tril, jitter = _cholesky(cov * settings.inflate)
        out["regularized"] = jitter
        components = [{"weight": 1.0 - settings.robust_weight, "loc": mean.tolist(), "scale_tril": tril.tolist()}]
        if settings.robust_weight:
            components.append({"weight": settings.robust_weight, "loc": mean.tolist(),
                               "scale_tril": (tril * settings.robust_scale).tolist()})
        out["components"] = components
    else:
        out["marginals"] = [_marginal(np.asarray(draws[name], dtype=np.float64), m, settings)
                            for name, m in zip(settings.params, members, strict=True)]
    return out


def _cholesky(cov: np.ndarray) -> tuple[np.ndarray, float]:
    """Cholesky factor of `cov`; a singular one (more variables than draws, a constant define) gets the
    smallest diagonal jitter, relative to its scale, that makes it positive definite (reported, not hidden)."""
    scale = float(np.mean(np.diag(cov))) if cov.size else 1.0
    scale = scale if scale > 0 and math.isfinite(scale) else 1.0
    jitter = 0.0
    for _ in range(12):
        try:
            tril = np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
            # a pivot below the first jitter's scale is rounding, not variance: [mu, 2 mu] can factor with a
            # pivot of 1e-8 on one machine and fail on another; with jitter j every pivot^2 is >= j
            if np.all(np.isfinite(tril)) and np.all(np.diag(tril) ** 2 >= scale * 1e-12):
                return tril, jitter
        except np.linalg.LinAlgError:
            pass
        jitter = scale * 1e-10 if jitter == 0 else jitter * 100
    raise ValueError("the covariance of the exported draws is not positive definite even with jitter")


def _marginal(value: np.ndarray, member: dict[str, Any], settings: ExportSettings) -> list[dict[str, Any]]:
    """One member's mixture components (weight, dist, args elementwise over its shape)."""
    x = value.reshape(value.shape[0] * value.shape[1], *value.shape[2:])
    k, w, wide = settings.inflate, settings.robust_weight, settings.robust_scale
    support = member["support"]
    if support in ("real", "positive"):
        u = x if support == "real" else np.log(x)
        loc, sd = u.mean(axis=0), np.maximum(u.std(axis=0, ddof=1), 1e-12)
        family = "Normal" if support == "real" else "LogNormal"
        main = {"dist": family, "args": {"loc": _plain(loc), "scale": _plain(sd * math.sqrt(k))}}
        vague = {"dist": family, "args": {"loc": _plain(loc), "scale": _plain(sd * math.sqrt(k) * wide)}}
    elif support == "unit":
        m, v = x.mean(axis=0), np.maximum(x.var(axis=0, ddof=1), 1e-300)
        concentration = np.maximum(m * (1 - m) / v - 1, 1e-6)
        main = {"dist": "Beta", "args": {"concentration1": _plain(m * concentration / k),
                                         "concentration0": _plain((1 - m) * concentration / k)}}
        vague = {"dist": "Beta", "args": {"concentration1": _plain(np.ones_like(m)),
                                          "concentration0": _plain(np.ones_like(m))}}
    else:
        raise ValueError(f"method marginal supports {', '.join(MARGINAL_SUPPORTS)} variables, not {support}")
    if not w:
        return [{"weight": 1.0, **main}]
    return [{"weight": 1.0 - w, **main}, {"weight": w, **vague}]


def _plain(value: np.ndarray) -> Any:
    return np.asarray(value, dtype=np.float64).tolist()
