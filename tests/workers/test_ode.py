"""`ode` in real models: one-compartment and population pharmacokinetics, Lotka-Volterra.

The solved trajectories and log densities are compared with closed forms (the Bateman function of the
one-compartment model) and with scipy's solver at tight tolerances; a solve that fails is NaN, so no start
is valid; a fit recovers what simulated the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.integrate import solve_ivp

from service.exceptions import InitializationError
from service.language.loader import load_file
from service.language.validate import validate
from service.sampler import SamplerSettings
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.usefixtures("jax_ready")

ODES = EXAMPLES / "ode"


def bateman(dose: Any, ka: float, cl: Any, v: float, ts: np.ndarray) -> np.ndarray:
    """Central amount of the one-compartment model with first-order absorption, exactly."""
    k = np.atleast_1d(np.asarray(cl) / v)  # (subjects,)
    return np.asarray(dose) * ka / (ka - k) * (np.exp(-np.outer(ts, k)) - np.exp(-ka * ts)[:, None])


def trace(spec: dict[str, Any], values: dict[str, Any]) -> tuple[float, dict[str, np.ndarray]]:
    """The log joint density at constrained `values` and every deterministic site's value."""
    import jax.numpy as jnp
    from numpyro.infer.util import log_density

    from workers.lower import lower

    model = validate(spec)
    data = {k: jnp.asarray(v) for k, v in model.data.items()}
    total, sites = log_density(lower(model), (data,), {}, {k: jnp.asarray(v) for k, v in values.items()})
    return float(total), {k: np.asarray(s["value"]) for k, s in sites.items() if s["type"] == "deterministic"}


def test_one_compartment_amounts_equal_the_bateman_function() -> None:
    spec = load_file(ODES / "one_compartment.yaml")
    ts, dose = np.asarray(spec["data"]["ts"]), spec["data"]["dose"]
    ka, cl, v, sigma = 0.9, 3.5, 22.0, 0.2
    total, sites = trace(spec, {"ka": ka, "CL": cl, "V": v, "sigma": sigma})
    central = bateman(dose, ka, cl, v, ts)[:, 0]
    np.testing.assert_allclose(sites["amounts"][:, 1], central, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sites["amounts"][:, 0], dose * np.exp(-ka * ts), rtol=1e-5, atol=1e-6)
    want = (stats.lognorm.logpdf(ka, 0.5) + stats.lognorm.logpdf(cl, 0.5, scale=5) +
            stats.lognorm.logpdf(v, 0.5, scale=30) + stats.halfnorm.logpdf(sigma, scale=0.5) +
            stats.lognorm.logpdf(spec["data"]["conc"], sigma, scale=central / v).sum())
    assert total == pytest.approx(want, rel=1e-6)


def test_population_pk_solves_every_subject_at_once() -> None:
    spec = load_file(ODES / "population_pk.yaml")
    ts, dose = np.asarray(spec["data"]["ts"]), np.asarray(spec["data"]["dose"])
    eta = np.linspace(-0.4, 0.4, dose.size)
    # eta is noncentered: NUTS moves eta_decentered = eta / omega, standard normal
    values = {"ka": 1.3, "V": 28.0, "log_CL": 1.2, "omega": 0.3, "eta_decentered": eta / 0.3, "sigma": 0.2}
    total, sites = trace(spec, values)
    central = bateman(dose, 1.3, np.exp(1.2 + eta), 28.0, ts)  # (times, subjects)
    np.testing.assert_allclose(sites["amounts"][:, :, 1], central, rtol=1e-5, atol=1e-6)
    want = (stats.lognorm.logpdf(1.3, 0.5) + stats.lognorm.logpdf(28.0, 0.5, scale=30) +
            stats.norm.logpdf(1.2, np.log(5), 1) + stats.halfnorm.logpdf(0.3, scale=0.5) +
            stats.norm.logpdf(eta / 0.3).sum() + stats.halfnorm.logpdf(0.2, scale=0.5) +
            stats.lognorm.logpdf(spec["data"]["conc"], 0.2, scale=central / 28.0).sum())
    assert total == pytest.approx(want, rel=1e-6)


def test_lotka_volterra_trajectory_equals_scipys() -> None:
    spec = load_file(ODES / "lotka_volterra.yaml")
    ts = np.asarray(spec["data"]["ts"])
    theta = {"alpha": 0.6, "beta": 0.025, "gamma": 0.75, "delta": 0.02}
    values = {**theta, "z_init": np.array([30.0, 5.0]), "sigma": np.array([0.2, 0.3])}
    _, sites = trace(spec, values)

    def rhs(t: float, z: np.ndarray) -> list[float]:
        return [theta["alpha"] * z[0] - theta["beta"] * z[0] * z[1],
                -theta["gamma"] * z[1] + theta["delta"] * z[0] * z[1]]

    want = solve_ivp(rhs, (0.0, ts[-1]), [30.0, 5.0], t_eval=ts, rtol=1e-11, atol=1e-11).y.T
    np.testing.assert_allclose(sites["z"], want, rtol=1e-4)


def test_a_solve_that_fails_is_nan_and_no_start_is_valid() -> None:
    from workers.engine import Engine

    spec = load_file(ODES / "one_compartment.yaml")
    spec["define"]["amounts"]["expr"] = spec["define"]["amounts"]["expr"].replace("atol=1e-8", "max_steps=2")
    import jax.numpy as jnp

    from workers.lower import compile_expr

    model = validate(spec)
    env = {**{k: jnp.asarray(v) for k, v in model.data.items()}, "ka": 0.9, "CL": 3.5, "V": 22.0}
    assert np.all(np.isnan(np.asarray(compile_expr(model.variables["amounts"].expr)(env))))
    with pytest.raises(InitializationError, match="initialization failed"):
        Engine().run(validate(spec), SamplerSettings(chains=1, warmup=10, draws=10, seed=1))


@pytest.mark.slow
def test_the_one_compartment_fit_recovers_what_simulated_it() -> None:
    from workers.engine import Engine

    fit = Engine().run(validate(load_file(ODES / "one_compartment.yaml")),
                       SamplerSettings(chains=2, warmup=200, draws=200, seed=1))
    assert int(fit.stats["diverging"].sum()) == 0
    for name, truth in {"ka": 1.1, "CL": 4.0, "V": 25.0}.items():
        low, high = np.quantile(fit.draws[name], [0.005, 0.995])
        assert low < truth < high, (name, truth, low, high)
