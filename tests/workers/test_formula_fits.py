"""Formula models recover what simulated data were made from."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from service.language.validate import validate
from service.sampler import SamplerSettings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("jax_ready")]


def fit(doc: dict[str, Any], **settings: Any) -> dict[str, np.ndarray]:
    from workers.engine import Engine

    base = {"chains": 4, "warmup": 500, "draws": 500, "seed": 7}
    result = Engine().run(validate(doc), SamplerSettings(**{**base, **settings}))
    return result.draws


def varying_effects_data(seed: int = 2026) -> tuple[dict[str, Any], dict[str, Any]]:
    """~1000 rows, 40 groups of very different sizes, correlated intercepts and slopes."""
    rng = np.random.default_rng(seed)
    groups, n = 40, 1000
    sizes = rng.multinomial(n - 2 * groups, rng.dirichlet(np.full(groups, 0.7))) + 2
    g = np.repeat(np.arange(groups), sizes)
    x = rng.normal(size=g.size)
    truth = {"Intercept": 2.0, "x": -0.7, "sigma": 1.0, "1|g_sigma": 0.6, "x|g_sigma": 0.4, "rho": 0.3}
    cov = np.array([[0.36, 0.3 * 0.6 * 0.4], [0.3 * 0.6 * 0.4, 0.16]])
    effects = rng.multivariate_normal([0, 0], cov, size=groups)
    y = truth["Intercept"] + effects[g, 0] + (truth["x"] + effects[g, 1]) * x + rng.normal(0, 1.0, g.size)
    data = {"y": y.tolist(), "x": x.tolist(), "g": [f"g{i:02d}" for i in g]}
    return data, {**truth, "effects": effects, "sizes": sizes}


def test_varying_intercepts_and_slopes_cover_truth_and_shrink_small_groups() -> None:
    data, truth = varying_effects_data()
    draws = fit({"spec": 1, "formula": "y ~ 1 + x + (1 + x | g)", "data": data})
    for name in ("Intercept", "x", "sigma", "1|g_sigma", "x|g_sigma"):
        low, high = np.quantile(draws[name], [0.05, 0.95])
        assert low < truth[name] < high, (name, low, high, truth[name])
    # shrinkage: a group's estimate moves from its own data toward the population, more so when it has few rows
    y, x = np.asarray(data["y"]), np.asarray(data["x"])
    g = np.asarray([int(v[1:]) for v in data["g"]])
    residual = y - draws["Intercept"].mean() - draws["x"].mean() * x
    raw = np.array([residual[g == j].mean() for j in range(40)])
    pooled = draws["1|g"].mean(axis=(0, 1))
    sizes = truth["sizes"]
    usable = np.abs(raw) > 0.3
    shrink = 1 - pooled[usable] / raw[usable]
    order = np.argsort(sizes[usable])
    few, many = shrink[order[:8]].mean(), shrink[order[-8:]].mean()
    assert few > many + 0.2, (few, many)
    expected = 1.0 / (1.0 + sizes[usable] * 0.36)  # sigma^2 / (sigma^2 + n tau^2) with the true scales
    assert abs(few - expected[order[:8]].mean()) < 0.2 and abs(many - expected[order[-8:]].mean()) < 0.2


def test_formula_equals_hand_written_graph_within_mcse() -> None:
    data, _ = varying_effects_data(seed=3)
    priors = {"Intercept": "Normal(0, 5)", "x": "Normal(0, 2)", "1|g": {"sd": "HalfNormal(1)"},
              "sigma": "Exponential(1)"}
    formula = fit({"spec": 1, "formula": "y ~ 1 + x + (1 | g)", "data": data, "priors": priors}, seed=1)
    levels = sorted(set(data["g"]))
    graph = {
        "spec": 1,
        "data": {"yy": data["y"], "xx": data["x"], "gi": [levels.index(v) for v in data["g"]]},
        "coords": {"g": levels},
        "params": {
            "a0": "Normal(0, 5)",
            "b": "Normal(0, 2)",
            "tau": "HalfNormal(1)",
            "a": {"dist": "Normal(0, tau)", "dims": ["g"], "reparam": "noncentered"},
            "s": "Exponential(1)",
        },
        "observe": {"yy": "Normal(a0 + b * xx + a[gi], s)"},
    }
    hand = fit(graph, seed=2)
    pairs = {"Intercept": "a0", "x": "b", "1|g_sigma": "tau", "sigma": "s", "1|g": "a"}
    for left, right in pairs.items():
        a, b = formula[left], hand[right]
        tol = 4 * np.sqrt(_mcse_all(a) ** 2 + _mcse_all(b) ** 2)
        assert np.all(np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))) < tol), left


def _mcse_all(draws: np.ndarray) -> np.ndarray:
    return np.asarray(az.mcse(az.convert_to_dataset({"x": draws}), method="mean")["x"])


def _family_data(family: str, rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, float], str]:
    n = 600
    x = rng.normal(size=n)
    eta = 0.4 + 0.6 * x
    extra: dict[str, float] = {}
    formula = "y ~ x"
    data: dict[str, Any] = {"x": x.tolist()}
    if family == "gaussian":
        y = eta + rng.normal(0, 0.8, n)
        extra["sigma"] = 0.8
    elif family == "student_t":
        y = eta + 0.8 * rng.standard_t(5, n)
        extra["sigma"] = 0.8
    elif family == "bernoulli":
        y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    elif family == "binomial":
        data["n"] = [12] * n
        y = rng.binomial(12, 1 / (1 + np.exp(-eta)))
        formula = "p(y, n) ~ x"
    elif family == "poisson":
        y = rng.poisson(np.exp(eta))
    elif family == "negative_binomial":
        mu, phi = np.exp(eta), 3.0
        y = rng.poisson(rng.gamma(phi, mu / phi))
        extra["phi"] = phi
    elif family == "gamma":
        mu, alpha = np.exp(eta), 4.0
        y = rng.gamma(alpha, mu / alpha)
        extra["alpha"] = alpha
    else:  # beta
        mu, kappa = 1 / (1 + np.exp(-eta)), 10.0
        y = rng.beta(mu * kappa, (1 - mu) * kappa)
        extra["kappa"] = kappa
    data["y"] = y.tolist()
    return data, {"Intercept": 0.4, "x": 0.6, **extra}, formula


@pytest.mark.parametrize("family", ["gaussian", "student_t", "bernoulli", "binomial", "poisson",
                                    "negative_binomial", "gamma", "beta"])
def test_each_family_recovers_its_parameters(family: str) -> None:
    data, truth, formula = _family_data(family, np.random.default_rng(11))
    draws = fit({"spec": 1, "formula": formula, "family": family, "data": data}, chains=2, warmup=400, draws=400)
    for name, value in truth.items():
        z = (draws[name].mean() - value) / draws[name].std()
        assert abs(z) < 3.5, (family, name, draws[name].mean(), value)


def test_distributional_sigma_recovers_heteroscedasticity() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=800)
    y = 1 + 0.5 * x + rng.normal(0, np.exp(-0.3 + 0.6 * x))
    draws = fit({"spec": 1, "formula": "y ~ x", "sigma": "~ x", "data": {"y": y.tolist(), "x": x.tolist()}},
                chains=2, warmup=400, draws=400)
    for name, value in {"Intercept": 1.0, "x": 0.5, "sigma_Intercept": -0.3, "sigma_x": 0.6}.items():
        z = (draws[name].mean() - value) / draws[name].std()
        assert abs(z) < 3.5, (name, draws[name].mean(), value)


def test_nested_groups_fit() -> None:
    rng = np.random.default_rng(8)
    region = rng.integers(0, 4, 400)
    hospital = region * 5 + rng.integers(0, 5, 400)
    effects = rng.normal(0, 0.5, 4)[region] + rng.normal(0, 0.3, 20)[hospital]
    y = 1 + effects + rng.normal(0, 0.5, 400)
    data = {"y": y.tolist(), "region": [f"r{r}" for r in region], "hospital": [f"h{h:02d}" for h in hospital]}
    draws = fit({"spec": 1, "formula": "y ~ 1 + (1 | region/hospital)", "data": data}, chains=2, warmup=400,
                draws=400)
    assert draws["1|region"].shape[-1] == 4 and draws["1|region:hospital"].shape[-1] == 20
    assert abs(draws["sigma"].mean() - 0.5) < 4 * draws["sigma"].std()
