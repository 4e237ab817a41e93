"""`sampler.adaptation: fisher` (workers/fisher.py): the metric's estimate, its state, and a fit's end metric."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.language.validate import validate
from service.sampler import SamplerSettings

pytestmark = pytest.mark.usefixtures("jax_ready")

SCALES = [0.01, 1.0, 30.0]
WIDE = {"spec": 1, "data": {"s": SCALES}, "params": {"x": {"dist": "Normal(0, s)", "shape": [3]}}}
"""Independent normals of very different scales: the Fisher estimate is exact for a Gaussian."""


def test_fisher_variance_is_exact_for_gaussian_draws() -> None:
    import jax.numpy as jnp

    from workers import fisher

    rng = np.random.default_rng(0)
    var = np.array([1e-4, 1.0, 900.0])
    m = fisher.empty(3, jnp.float64)
    zs = rng.normal(0, np.sqrt(var), size=(50, 3))
    for z in zs:
        m = fisher.add(m, jnp.asarray(z), jnp.asarray(z / var))  # the potential's gradient at z
    np.testing.assert_allclose(np.asarray(fisher.fisher_variance(m, jnp.ones(3))), var, rtol=1e-9)
    assert int(m.count) == 50  # Welford's sums are numpy's
    np.testing.assert_allclose(np.asarray(m.position_m2) / 49, np.var(zs, axis=0, ddof=1), rtol=1e-9)


def test_invalid_elements_keep_the_previous_value_and_the_start_is_one_over_the_gradient() -> None:
    import jax.numpy as jnp

    from workers import fisher

    m = fisher.empty(2, jnp.float64)
    m = fisher.add(fisher.add(m, jnp.array([1.0, 2.0]), jnp.array([0.5, 3.0])),
                   jnp.array([1.0, 4.0]), jnp.array([0.5, 1.0]))  # element 0 never moved: 0 / 0
    got = np.asarray(fisher.fisher_variance(m, jnp.array([7.0, 7.0])))
    assert got[0] == 7.0 and np.isclose(got[1], 1.0)
    start = np.asarray(fisher.gradient_variance(jnp.array([4.0, -0.5, 0.0, jnp.inf, 1e-30])))
    np.testing.assert_array_equal(start, [0.25, 2.0, 1.0, 1.0, fisher.VARIANCE_BOUNDS[1]])


def test_schedule_phases() -> None:
    from workers.fisher import Schedule

    assert Schedule.of(1000) == Schedule(1000, 300, 850)
    assert Schedule.of(150) == Schedule(150, 45, 128)


def test_a_fit_ends_warmup_with_the_posterior_variances_and_keeps_its_state_apart(
        eight_schools: dict[str, Any]) -> None:
    from workers.engine import Engine

    fit = Engine().run(validate(WIDE), SamplerSettings(chains=2, warmup=300, draws=200, seed=3,
                                                       adaptation="fisher"))
    for state in fit.states:
        ratio = state["adapt_state/inverse_mass_matrix"] / np.square(SCALES)
        assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio
        assert int(state["fisher/updates"]) > 0 and int(state["fisher/unreported_gradients"]) == 0
    assert np.std(fit.draws["x"], axis=(0, 1)) == pytest.approx(SCALES, rel=0.2)
    # stan's state has no fisher fields (its checkpoints are as before)
    stan = Engine().run(validate(eight_schools), SamplerSettings(chains=1, warmup=20, draws=5, seed=3,
                                                                 adaptation="stan"))
    assert not any(k.startswith("fisher/") for k in stan.states[0])


def test_without_warmup_fisher_is_plain_nuts(eight_schools: dict[str, Any]) -> None:
    from workers.engine import Engine

    model = validate(eight_schools)
    a = Engine().run(model, SamplerSettings(chains=1, warmup=0, draws=20, seed=3, adaptation="fisher"))
    b = Engine().run(model, SamplerSettings(chains=1, warmup=0, draws=20, seed=3))
    assert np.array_equal(a.draws["mu"], b.draws["mu"])


def test_a_warm_start_adapts_on_from_an_earlier_fit(eight_schools: dict[str, Any]) -> None:
    from workers.engine import Engine
    from workers.state import WarmStart

    model = validate(eight_schools)
    first = Engine().run(model, SamplerSettings(chains=2, warmup=200, draws=50, seed=3))
    warm = SamplerSettings(chains=2, warmup=60, draws=100, seed=4, adaptation="fisher",
                           warm_start={"job": "j" + "0" * 24})
    fit = Engine().run(model, warm, warm=[WarmStart.of(s) for s in first.states])
    assert all(np.all(np.isfinite(v)) for v in fit.draws.values())
    assert all(int(s["fisher/updates"]) > 0 for s in fit.states)
