"""Fitted priors lowered to numpyro: the log densities scipy computes, and samplers that recover them.

The log-density checks are exact to float64 rounding. The sampling checks compare Monte Carlo estimates
with exact values within 4 Monte Carlo standard errors, MCSE = sd / sqrt(ESS) of the averaged series (ArviZ's
`mcse(method="mean")`); with fixed seeds they are deterministic, and a correct sampler fails one comparison with
probability about 6e-5.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import scipy.special as sp
import scipy.stats as st

from service.language.ir import Model
from service.language.validate import validate
from service.sampler import SamplerSettings

pytestmark = pytest.mark.usefixtures("jax_ready")

LOC = [0.5, -1.0]
TRIL = [[1.0, 0.0], [0.3, 0.5]]
WIDE = [[2.0, 0.0], [-0.6, 1.5]]


def mvn_prior(components: list[dict[str, Any]], *, tau_support: str = "positive") -> dict[str, Any]:
    return {"source": "hospitals@3", "method": "mvn",
            "members": [{"param": "mu", "shape": [], "support": "real"},
                        {"param": "tau", "shape": [], "support": tau_support}],
            "components": components}


def spec(*priors: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"spec": 1, "params": {"mu": "Normal(0, 10)", "tau": "HalfNormal(5)"}, "fitted_priors": list(priors),
            **extra}


ONE = [{"weight": 1.0, "loc": LOC, "scale_tril": TRIL}]
TWO = [{"weight": 0.7, "loc": LOC, "scale_tril": TRIL}, {"weight": 0.3, "loc": [1.5, 0.0], "scale_tril": WIDE}]


def mixture_logpdf(z: np.ndarray, components: list[dict[str, Any]]) -> float:
    terms = [np.log(c["weight"]) + st.multivariate_normal(c["loc"], np.array(c["scale_tril"]) @
                                                          np.array(c["scale_tril"]).T).logpdf(z)
             for c in components]
    return float(sp.logsumexp(terms))


def log_joint(model: Model, values: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    import jax.numpy as jnp
    from numpyro.infer.util import log_density

    from workers.lower import lower

    lp, trace = log_density(lower(model), ({k: jnp.asarray(v) for k, v in model.data.items()},), {},
                            {k: jnp.asarray(v) for k, v in values.items()})
    return float(lp), trace


@pytest.mark.parametrize("components", [ONE, TWO], ids=["one", "mixture"])
def test_mvn_is_the_density_of_the_unconstrained_vector(components: list[dict[str, Any]]) -> None:
    model = validate(spec(mvn_prior(components)))
    z = np.array([0.2, -0.7])
    lp, trace = log_joint(model, {"_prior_0": z})
    assert lp == pytest.approx(mixture_logpdf(z, components), rel=1e-12)
    assert [n for n, s in trace.items() if s["type"] == "sample"] == ["_prior_0"]  # HalfNormal(5) is gone
    assert float(trace["mu"]["value"]) == z[0] and float(trace["tau"]["value"]) == pytest.approx(np.exp(z[1]))


@pytest.mark.parametrize("components", [ONE, TWO], ids=["one", "mixture"])
def test_the_density_on_the_params_carries_the_jacobian(components: list[dict[str, Any]]) -> None:
    """p(mu, tau) = N([mu, log tau]) / tau: the model's own map z -> (mu, tau), differentiated by JAX."""
    import jax
    import jax.numpy as jnp

    model = validate(spec(mvn_prior(components)))

    def params_of(z: Any) -> Any:
        _, trace = log_joint_traced(model, z)
        return jnp.stack([trace["mu"]["value"], trace["tau"]["value"]])

    for mu, tau in [(0.3, 0.4), (-1.2, 2.5), (2.0, 0.05)]:
        z = jnp.array([mu, np.log(tau)])
        assert np.allclose(params_of(z), [mu, tau], rtol=1e-12)
        log_det = float(jnp.linalg.slogdet(jax.jacfwd(params_of)(z))[1])
        got = log_joint(model, {"_prior_0": z})[0] - log_det
        assert got == pytest.approx(mixture_logpdf(np.array([mu, np.log(tau)]), components) - np.log(tau),
                                    rel=1e-10)


def log_joint_traced(model: Model, z: Any) -> tuple[Any, dict[str, Any]]:
    from numpyro.infer.util import log_density

    from workers.lower import lower

    return log_density(lower(model), ({},), {}, {"_prior_0": z})  # type: ignore[no-any-return]


def test_an_interval_member_maps_through_sigmoid_and_affine() -> None:
    import jax
    import jax.numpy as jnp

    doc = spec(mvn_prior(ONE, tau_support="interval(-1, 3)"))
    doc["params"]["tau"] = "Uniform(-1, 3)"
    model = validate(doc)
    z = jnp.array([0.1, 0.4])
    lp, trace = log_joint(model, {"_prior_0": z})
    assert float(trace["tau"]["value"]) == pytest.approx(-1 + 4 * sp.expit(0.4), rel=1e-12)
    assert lp == pytest.approx(mixture_logpdf(np.asarray(z), ONE), rel=1e-12)
    dtau = jax.grad(lambda u: log_joint_traced(model, jnp.array([0.1, u]))[1]["tau"]["value"])(0.4)
    assert float(dtau) == pytest.approx(4 * sp.expit(0.4) * (1 - sp.expit(0.4)), rel=1e-10)


def test_marginals_are_their_families_and_elementwise_mixtures() -> None:
    doc = {"spec": 1, "params": {"p": "Beta(2, 2)", "s": "Exponential(1)",
                                 "b": {"dist": "Normal(0, 1)", "shape": [3]}},
           "fitted_priors": [{"source": "elicited@1", "method": "marginal",
                              "members": [{"param": "p", "shape": [], "support": "unit"},
                                          {"param": "s", "shape": [], "support": "positive"},
                                          {"param": "b", "shape": [3], "support": "real"}],
                              "marginals": [
                                  [{"weight": 1.0, "dist": "Beta",
                                    "args": {"concentration1": 13.9, "concentration0": 6.1}}],
                                  [{"weight": 0.9, "dist": "LogNormal", "args": {"loc": -1.0, "scale": 0.3}},
                                   {"weight": 0.1, "dist": "LogNormal", "args": {"loc": -1.0, "scale": 3.0}}],
                                  [{"weight": 0.6, "dist": "Normal", "args": {"loc": [0.1, 0.2, 0.3], "scale": 1}},
                                   {"weight": 0.4, "dist": "StudentT",
                                    "args": {"df": 3, "loc": 0.0, "scale": [1.0, 2.0, 3.0]}}]]}]}
    model = validate(doc)
    p, s, b = 0.62, 0.41, np.array([-0.5, 0.3, 2.0])
    lp, trace = log_joint(model, {"p": p, "s": s, "b": b})
    expected = st.beta(13.9, 6.1).logpdf(p)
    expected += np.log(0.9 * st.lognorm(0.3, scale=np.exp(-1)).pdf(s) + 0.1 * st.lognorm(3.0, scale=np.exp(-1)).pdf(s))
    expected += np.sum(np.log(0.6 * st.norm([0.1, 0.2, 0.3], 1).pdf(b) + 0.4 * st.t(3, 0, [1, 2, 3]).pdf(b)))
    assert lp == pytest.approx(expected, rel=1e-12)
    assert sorted(n for n, site in trace.items() if site["type"] == "sample") == ["b", "p", "s"]


@pytest.mark.parametrize(("family", "args", "scipy_dist"), [
    ("Gamma", {"concentration": 3.0, "rate": 2.0}, st.gamma(3.0, scale=0.5)),
    ("InverseGamma", {"concentration": 3.0, "rate": 2.0}, st.invgamma(3.0, scale=2.0)),
    ("HalfNormal", {"scale": 1.5}, st.halfnorm(scale=1.5)),
    ("Weibull", {"scale": 2.0, "concentration": 1.5}, st.weibull_min(1.5, scale=2.0)),
])
def test_every_elicited_positive_family_lowers_to_its_density(family: str, args: dict[str, float],
                                                              scipy_dist: Any) -> None:
    """Each family POST /v1/priors/elicit can save (service/priors/elicit.py) is a marginal prior a job can use."""
    doc = {"spec": 1, "params": {"s": "Exponential(1)"},
           "fitted_priors": [{"source": "expert@1", "method": "marginal",
                              "members": [{"param": "s", "shape": [], "support": "positive"}],
                              "marginals": [[{"weight": 1.0, "dist": family, "args": args}]]}]}
    lp, _ = log_joint(validate(doc), {"s": 1.3})
    assert lp == pytest.approx(scipy_dist.logpdf(1.3), rel=1e-10)


def test_a_noncentered_member_is_sampled_as_the_prior_says() -> None:
    doc = {"spec": 1, "coords": {"g": ["a", "b"]}, "data": {"y": [0.3, -0.1]},
           "params": {"mu": "Normal(0, 1)",
                      "theta": {"dist": "Normal(mu, 2)", "dims": ["g"], "reparam": "noncentered"}},
           "observe": {"y": "Normal(theta, 1)"},
           "fitted_priors": [{"source": "x@1", "method": "mvn",
                              "members": [{"param": "theta", "shape": [2], "support": "real"}],
                              "components": [{"weight": 1, "loc": [1.0, 2.0], "scale_tril": [[0.5, 0], [0, 0.5]]}]}]}
    model = validate(doc)
    theta = np.array([0.8, 2.4])
    lp, trace = log_joint(model, {"mu": 0.2, "_prior_0": theta})
    assert "theta_decentered" not in trace
    expected = st.norm(0, 1).logpdf(0.2) + st.norm([1, 2], 0.5).logpdf(theta).sum() + \
        st.norm(theta, 1).logpdf([0.3, -0.1]).sum()
    assert lp == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("init", ["uniform", "median", "sample", "feasible"])
def test_every_init_strategy_starts_with_fitted_priors(init: str) -> None:
    import jax
    from numpyro.infer.util import initialize_model

    from workers.lower import lower
    from workers.program import _INIT_STRATEGIES

    doc = spec(mvn_prior(TWO))
    doc["params"]["p"] = "Beta(2, 2)"
    doc["fitted_priors"].append({"source": "e@1", "method": "marginal",
                                 "members": [{"param": "p", "shape": [], "support": "unit"}],
                                 "marginals": [[{"weight": 0.5, "dist": "Beta",
                                                 "args": {"concentration1": 2, "concentration0": 5}},
                                                {"weight": 0.5, "dist": "Beta",
                                                 "args": {"concentration1": 1, "concentration0": 1}}]]})
    info = initialize_model(jax.random.PRNGKey(3), lower(validate(doc)), model_args=({},),
                            init_strategy=_INIT_STRATEGIES[init]())
    assert sorted(info.param_info.z) == ["_prior_0", "p"]
    assert np.isfinite(float(info.param_info.potential_energy))


@pytest.mark.slow
def test_the_latent_vector_is_not_stored_and_draws_are_deterministic() -> None:
    from workers.engine import Engine

    model = validate(spec(mvn_prior(TWO)))
    settings = SamplerSettings(chains=2, warmup=100, draws=100, seed=5)
    first = Engine(threads=1).run(model, settings)
    again = Engine(threads=2, max_block=7, block_seconds=0.001).run(model, settings)
    assert sorted(first.draws) == ["mu", "tau"]
    assert first.draws["tau"].shape == (2, 100) and np.all(first.draws["tau"] > 0)
    for name in first.draws:
        assert np.array_equal(first.draws[name], again.draws[name]), name
    other = Engine().run(model, settings.model_copy(update={"seed": 6}))
    assert not np.array_equal(other.draws["mu"], first.draws["mu"])
    kept = Engine().run(model, settings.model_copy(update={"keep": ["tau"]}))
    assert sorted(kept.draws) == ["tau"]


def mcse_mean(series: np.ndarray) -> float:
    """sd / sqrt(ESS) of a (chain, draw) series."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return float(az.mcse(az.convert_to_dataset({"x": series}), method="mean")["x"])


@pytest.mark.slow
@pytest.mark.parametrize("components", [ONE, TWO], ids=["one", "mixture"])
def test_sampling_recovers_the_prior_mean_and_covariance(components: list[dict[str, Any]]) -> None:
    """Without observations the draws of (mu, log tau) are the prior: mean and covariance within 4 MCSE."""
    from workers.engine import Engine

    fit = Engine().run(validate(spec(mvn_prior(components))), SamplerSettings(chains=4, warmup=500, draws=2000,
                                                                              seed=2026))
    assert int(fit.stats["diverging"].sum()) == 0
    u = np.stack([fit.draws["mu"], np.log(fit.draws["tau"])], axis=-1)  # (chain, draw, 2)
    weights = np.array([c["weight"] for c in components])
    locs = np.array([c["loc"] for c in components])
    mean = weights @ locs
    cov = sum(w * (np.array(c["scale_tril"]) @ np.array(c["scale_tril"]).T + np.outer(m - mean, m - mean))
              for w, c, m in zip(weights, components, locs, strict=True))
    for i in range(2):
        assert abs(u[..., i].mean() - mean[i]) < 4 * mcse_mean(u[..., i]), (i, u[..., i].mean(), mean[i])
    centred = u - mean  # the exact mean: each product's average estimates the covariance without bias
    for i in range(2):
        for j in range(i + 1):
            product = centred[..., i] * centred[..., j]
            assert abs(product.mean() - cov[i, j]) < 4 * mcse_mean(product), (i, j, product.mean(), cov[i, j])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mvn", "marginal"])
def test_conjugate_normal_posterior_with_a_fitted_prior(method: str) -> None:
    """y_i ~ Normal(mu, 1) with a Normal(m0, s0) fitted prior: the exact posterior, whatever mu declares."""
    from workers.engine import Engine

    rng = np.random.default_rng(7)
    m0, s0, n = 2.0, 0.5, 20
    y = rng.normal(1.2, 1.0, size=n)
    member = {"param": "mu", "shape": [], "support": "real"}
    prior: dict[str, Any] = {"source": "trial@4", "method": method, "members": [member]}
    if method == "mvn":
        prior["components"] = [{"weight": 1.0, "loc": [m0], "scale_tril": [[s0]]}]
    else:
        prior["marginals"] = [[{"weight": 1.0, "dist": "Normal", "args": {"loc": m0, "scale": s0}}]]
    doc = {"spec": 1, "data": {"y": y.tolist()}, "params": {"mu": "Normal(50, 0.1)"},  # would dominate if it applied
           "observe": {"y": "Normal(mu, 1)"}, "fitted_priors": [prior]}
    fit = Engine().run(validate(doc), SamplerSettings(chains=4, warmup=500, draws=1000, seed=2026))
    precision = 1 / s0**2 + n
    post_mean, post_sd = (m0 / s0**2 + y.sum()) / precision, precision**-0.5
    mu = fit.draws["mu"]
    assert abs(mu.mean() - post_mean) < 4 * mcse_mean(mu), (mu.mean(), post_mean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    mcse_sd = float(az.mcse(az.convert_to_dataset({"x": mu}), method="sd")["x"])
    assert abs(mu.std(ddof=1) - post_sd) < 4 * mcse_sd, (mu.std(ddof=1), post_sd)


@pytest.mark.slow
def test_the_mvn_prior_samples_what_a_multivariate_normal_param_does() -> None:
    """Same seed, same density on the same unconstrained vector: the same chain, draw for draw."""
    from workers.engine import Engine

    settings = SamplerSettings(chains=2, warmup=200, draws=300, seed=9)
    fitted = Engine().run(validate(spec(mvn_prior(ONE))), settings)
    plain = Engine().run(validate({"spec": 1, "data": {"loc": LOC, "L": TRIL},
                                   "params": {"z": "MultivariateNormal(loc, scale_tril=L)"}}), settings)
    assert np.array_equal(fitted.draws["mu"], plain.draws["z"][..., 0])
    np.testing.assert_allclose(np.log(fitted.draws["tau"]), plain.draws["z"][..., 1], rtol=0, atol=1e-12)
