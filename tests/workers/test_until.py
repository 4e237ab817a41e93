"""Sampling until converged, running on to more draws, and warm starts, in the engine (`chainyard run`).

Each is checked against a plain run: an `until` job equals the first n draws of one long run, n being the
first round whose draws pass; a run continued to more draws equals one asked for them from the start; a
warm start begins where the earlier job ended.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service import until
from service.exceptions import InitializationError
from service.language.validate import validate
from service.sampler import SamplerSettings, Until, parse_settings

pytestmark = pytest.mark.usefixtures("jax_ready")

NORMAL = {"spec": 1, "data": {"y": [0.3, -1.2, 0.8, 1.9, 0.1]}, "params": {"mu": "Normal(0, 10)"},
          "observe": {"y": "Normal(mu, 1)"}}
"""mu's posterior is exactly Normal(sum(y) / (n + 1/100), 1 / sqrt(n + 1/100))."""


def centered_eight_schools(eight_schools: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(eight_schools)
    spec["params"]["theta"] = {"dist": "Normal(mu, tau)", "dims": ["school"]}
    return spec


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_until_true_means_the_defaults_and_draws_is_the_minimum() -> None:
    settings = parse_settings({"until": True})
    assert settings.until is not None and settings.until.model_dump() == {
        "rhat": 1.01, "ess_bulk": 400, "ess_tail": 400, "max_draws": 20000, "check_every": 500}
    assert until.targets(parse_settings({"draws": 1000, "until": {"max_draws": 2200}})) == [1000, 1500, 2000, 2200]
    assert parse_settings({"until": False}).until is None
    assert until.targets(SamplerSettings(draws=300)) == [300]


@pytest.mark.parametrize("bad, path", [
    ({"until": {"max_draws": 10}, "draws": 100}, "sampler"),
    ({"until": {"rhat": 0.9}}, "sampler.until.rhat"),
    ({"until": {"check_every": 0}}, "sampler.until.check_every"),
    ({"until": {"ess": 100}}, "sampler.until.ess"),
    ({"warm_start": {"job": "not-a-job"}}, "sampler.warm_start.job"),
])
def test_bad_until_and_warm_start_settings_name_the_field(bad: dict[str, Any], path: str) -> None:
    from service.exceptions import SpecError

    with pytest.raises(SpecError) as caught:
        parse_settings(bad)
    assert [p.path for p in caught.value.problems] == [path], caught.value.problems


def test_until_stops_at_the_first_round_that_passes_and_equals_the_start_of_a_long_run() -> None:
    from workers.engine import Engine

    model = validate(NORMAL)
    rule = {"rhat": 1.01, "ess_bulk": 500, "ess_tail": 300, "check_every": 100, "max_draws": 2000}
    settings = SamplerSettings(chains=2, warmup=100, draws=100, seed=3, until=rule)
    fit = Engine().run(model, settings)
    long = Engine().run(model, settings.model_copy(update={"until": None, "draws": 2000}))
    # the decisions a reader takes from the long run's first n draws, round by round
    expected = []
    for n in until.targets(settings):
        decision = until.decide(settings.until, {k: v[:, :n] for k, v in long.draws.items()}, per_chain=n)
        expected.append(decision)
        if decision.stop:
            break
    assert fit.rounds == expected
    assert len(fit.rounds) >= 2, "the rule should not pass at the first round here"
    assert fit.rounds[-1].reason == "converged" and all(r.reason == "continue" for r in fit.rounds[:-1])
    n = fit.rounds[-1].draws
    same(fit.draws, {k: v[:, :n] for k, v in long.draws.items()})
    assert fit.stopped is not None and fit.stopped.startswith(f"converged at {n} draws per chain")


@pytest.mark.slow
def test_a_hard_model_runs_to_max_draws_and_says_why(eight_schools: dict[str, Any]) -> None:
    from workers.engine import Engine

    model = validate(centered_eight_schools(eight_schools))
    settings = SamplerSettings(chains=2, warmup=30, draws=100, seed=1,
                               until={"check_every": 100, "max_draws": 300})
    fit = Engine().run(model, settings)
    assert [r.draws for r in fit.rounds] == [100, 200, 300]
    assert [r.reason for r in fit.rounds] == ["continue", "continue", "max_draws"]
    assert fit.draws["tau"].shape == (2, 300)
    assert fit.stopped is not None and fit.stopped.startswith("max_draws reached (300 draws per chain) with ")
    assert "ESS" in fit.stopped and ("reparameterize" in fit.stopped)


def test_a_run_continued_in_its_checkpoint_directory_equals_the_longer_run(tmp_path: Path) -> None:
    from workers.engine import Engine

    model = validate(NORMAL)
    short = SamplerSettings(chains=2, warmup=50, draws=60, thin=3, seed=5)
    longer = short.model_copy(update={"draws": 140})
    Engine(max_block=25, block_seconds=0.001).run(model, short, checkpoint_dir=tmp_path)
    continued = Engine(max_block=25, block_seconds=0.001).run(model, longer, checkpoint_dir=tmp_path)
    fresh = Engine().run(model, longer)
    same(continued.draws, fresh.draws)
    same(continued.stats, fresh.stats)
    assert continued.draws["mu"].shape == (2, 47)  # every 3rd of 140, the first included
    assert continued.gradient_evaluations < fresh.gradient_evaluations  # only the extra iterations ran
    # asked for fewer draws than the directory holds: the first ones, as if it had stopped there
    again = Engine().run(model, short, checkpoint_dir=tmp_path)
    same(again.draws, {k: v[:, :20] for k, v in fresh.draws.items()})
    # until resumed from a directory of a shorter plain run decides as a fresh until run does
    rule = short.model_copy(update={"until": Until(check_every=30, max_draws=300, ess_bulk=100)})
    same(Engine().run(model, rule, checkpoint_dir=tmp_path).draws, Engine().run(model, rule).draws)


def test_a_warm_start_begins_at_the_earlier_chains_end(eight_schools: dict[str, Any]) -> None:
    from workers.engine import Engine
    from workers.state import WarmStart

    model = validate(eight_schools)
    first = Engine().run(model, SamplerSettings(chains=2, warmup=200, draws=50, seed=2))
    starts = [WarmStart.of(s) for s in first.states]
    # no warmup: sampling at the earlier step size and mass matrix, from its final position
    settings = SamplerSettings(chains=3, warmup=0, draws=20, seed=9, warm_start={"job": "j" + "1" * 24})
    warm = Engine().run(model, settings, warm=starts)
    for c in range(3):
        assert np.all(warm.stats["step_size"][c] == starts[c % 2].step_size)
        assert np.array_equal(warm.states[c]["adapt_state/inverse_mass_matrix"], starts[c % 2].inverse_mass_matrix)
    assert warm.warmup_gradients == 0
    # with warmup, adaptation goes on from there, and the run is deterministic
    adapting = settings.model_copy(update={"warmup": 60})
    a, b = Engine().run(model, adapting, warm=starts), Engine().run(model, adapting, warm=starts)
    same(a.draws, b.draws)
    assert a.warmup_gradients > 0
    # a state of another model's shape is refused with what differs
    other = validate({**eight_schools, "data": {"y": [1.0] * 4, "sigma": [1.0] * 4},
                      "coords": {"school": list("ABCD")}})
    with pytest.raises(InitializationError, match=r"warm start: position has shape \[10\], this model needs \[6\]"):
        Engine().run(other, settings, warm=starts)


@pytest.mark.slow
def test_stopping_by_the_rule_leaves_the_means_unbiased() -> None:
    """200 seeded `until` jobs on a posterior known exactly: (mean - truth) / MCSE is standard normal."""
    import arviz as az
    from scipy import stats

    from workers.engine import Engine

    y = np.asarray(NORMAL["data"]["y"])  # type: ignore[index]
    precision = len(y) + 1 / 100
    truth = y.sum() / precision
    model = validate(NORMAL)
    engine = Engine()
    z, rounds = [], []
    for seed in range(200):
        settings = SamplerSettings(chains=2, warmup=100, draws=100, seed=seed,
                                   until={"ess_bulk": 300, "ess_tail": 200, "check_every": 100, "max_draws": 600})
        fit = engine.run(model, settings)
        mu = fit.draws["mu"]
        z.append((mu.mean() - truth) / float(az.mcse(az.convert_to_dataset({"mu": mu}))["mu"]))
        rounds.append(len(fit.rounds))
    assert len(set(rounds)) > 1, "the rule should stop at different rounds across seeds"
    result = stats.kstest(z, "norm")
    print(f"KS statistic {result.statistic:.3f}, p = {result.pvalue:.3f}; rounds used: "
          f"{ {n: rounds.count(n) for n in sorted(set(rounds))} }")
    assert result.pvalue > 0.01
