"""Writes the simulated-data examples (fixed seeds, so the files are reproducible).

    python examples/generate.py            # rewrites examples/*.yaml below
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def hierarchical_regression(n: int = 900, groups: int = 85, seed: int = 20) -> dict[str, object]:
    """Radon-like: log radon ~ intercept and floor slope varying by county (unbalanced counties)."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(groups, 0.8))
    county = np.sort(rng.choice(groups, size=n, p=weights))
    county[:groups] = np.arange(groups)  # every county has at least one house
    x = rng.binomial(1, 0.3, size=n)  # 1 = measured in the basement... here: on the first floor
    a = rng.normal(1.5, 0.35, size=groups)
    b = rng.normal(-0.65, 0.3, size=groups)
    y = a[county] + b[county] * x + rng.normal(0, 0.75, size=n)
    return {
        "spec": 1,
        "data": {"y": np.round(y, 4).tolist(), "x": x.tolist(), "county": county.tolist()},
        "coords": {"county": [f"county_{i:02d}" for i in range(groups)]},
        "params": {
            "mu_a": "Normal(0, 5)",
            "mu_b": "Normal(0, 5)",
            "sigma_a": "HalfNormal(1)",
            "sigma_b": "HalfNormal(1)",
            "a": {"dist": "Normal(mu_a, sigma_a)", "dims": ["county"], "reparam": "noncentered"},
            "b": {"dist": "Normal(mu_b, sigma_b)", "dims": ["county"], "reparam": "noncentered"},
            "sigma": "HalfNormal(1)",
        },
        "observe": {"y": "Normal(a[county] + b[county] * x, sigma)"},
    }


def hierarchical_logistic(n: int = 5000, groups: int = 50, predictors: int = 5, seed: int = 21) -> dict[str, object]:
    """Binary outcome, intercept varying by group, 5 standardized predictors."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, size=n)
    X = rng.normal(size=(n, predictors))
    alpha = rng.normal(-0.5, 0.8, size=groups)
    beta = rng.normal(0, 0.7, size=predictors)
    p = 1 / (1 + np.exp(-(alpha[g] + X @ beta)))
    y = rng.binomial(1, p)
    return {
        "spec": 1,
        "data": {"y": y.tolist(), "X": np.round(X, 4).tolist(), "g": g.tolist()},
        "coords": {
            "group": [f"g{i:02d}" for i in range(groups)],
            "predictor": [f"x{i + 1}" for i in range(predictors)],
        },
        "params": {
            "mu_alpha": "Normal(0, 2)",
            "sigma_alpha": "HalfNormal(1)",
            "alpha": {"dist": "Normal(mu_alpha, sigma_alpha)", "dims": ["group"], "reparam": "noncentered"},
            "beta": {"dist": "Normal(0, 1)", "dims": ["predictor"]},
        },
        "observe": {"y": "BernoulliLogits(alpha[g] + X @ beta)"},
    }


def gp_regression(n: int = 50, seed: int = 23) -> dict[str, object]:
    """1-D Gaussian-process regression: y = f(x) + noise, f ~ GP(0, squared-exponential kernel)."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-5, 5, size=n))
    rho, alpha, sigma = 1.2, 1.5, 0.3
    k = alpha**2 * np.exp(-0.5 * np.subtract.outer(x, x) ** 2 / rho**2)
    f = np.linalg.cholesky(k + 1e-9 * np.eye(n)) @ rng.normal(size=n)
    y = f + rng.normal(0, sigma, size=n)
    return {
        "spec": 1,
        "data": {"x": np.round(x, 4).tolist(), "y": np.round(y, 4).tolist()},
        "params": {
            "rho": "InverseGamma(5, 5)",  # length scale
            "alpha": "HalfNormal(2)",  # marginal sd of f
            "sigma": "HalfNormal(1)",  # noise sd
        },
        "define": {
            # Cholesky factor of the covariance of y: kernel + noise variance on the diagonal
            "L": {"expr": "cholesky(add_diag(cov_exp_quad(x, alpha, rho), square(sigma)))", "keep": False},
        },
        "observe": {"y": "MultivariateNormal(0 * x, scale_tril=L)"},
    }


def radon(n: int = 919, counties: int = 85, seed: int = 22) -> dict[str, object]:
    """Radon-like (after Gelman & Hill's Minnesota radon): log radon ~ floor + (1 | county)."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(counties, 0.6))
    county = rng.choice(counties, size=n, p=weights)
    county[:counties] = np.arange(counties)
    floor = np.where(rng.random(n) < 0.17, "first", "basement")
    alpha = rng.normal(1.45, 0.33, size=counties)
    log_radon = alpha[county] - 0.66 * (floor == "first") + rng.normal(0, 0.73, size=n)
    names = [f"COUNTY_{i:02d}" for i in range(counties)]
    return {
        "spec": 1,
        "formula": "log_radon ~ floor + (1 | county)",
        "family": "gaussian",
        "data": {
            "log_radon": np.round(log_radon, 4).tolist(),
            "floor": floor.tolist(),
            "county": [names[c] for c in county],
        },
    }


def write(name: str, doc: dict[str, object], header: str) -> None:
    # YAML whose data columns are JSON arrays, one per line: readable model, compact data
    lines = [f"# {line}" for line in header.strip().splitlines()]
    lines.append("# Generated by examples/generate.py (simulated data, fixed seed).")
    doc = {"spec": doc["spec"], "name": name.removesuffix(".yaml"), **{k: v for k, v in doc.items() if k != "spec"}}
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines += [f"  {k}: {json.dumps(v, separators=(', ', ': '))}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    (HERE / name).write_text("\n".join(lines) + "\n")


def main() -> None:
    write("radon.yaml", radon(),
          "Radon-like data (simulated after Gelman & Hill's Minnesota radon survey), formula front end:\n"
          "log radon by floor of measurement, intercepts partially pooled over 85 counties.\n"
          "Run it:  chainyard run examples/radon.yaml\n"
          "See the graph spec it compiles to:  chainyard validate --graph examples/radon.yaml")
    write("hierarchical_regression.yaml", hierarchical_regression(),
          "Hierarchical linear regression: varying intercepts and slopes (900 rows, 85 counties).\n"
          "Run it:  chainyard run examples/hierarchical_regression.yaml")
    write("hierarchical_logistic.yaml", hierarchical_logistic(),
          "Hierarchical logistic regression: varying intercepts, 5 predictors (5000 rows, 50 groups).\n"
          "Run it:  chainyard run examples/hierarchical_logistic.yaml")
    write("gp_regression.yaml", gp_regression(),
          "Gaussian-process regression in 1-D (50 points): squared-exponential kernel, Cholesky factor,\n"
          "MultivariateNormal(..., scale_tril=L).\n"
          "Run it:  chainyard run examples/gp_regression.yaml")


if __name__ == "__main__":
    main()
