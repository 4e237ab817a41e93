"""The engine: deterministic, independent of placement and block size, resumable, compiles once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.exceptions import CheckpointMismatchError, InitializationError, StopRequested
from service.language.validate import validate
from service.sampler import SamplerSettings, parse_job

pytestmark = pytest.mark.usefixtures("jax_ready")

SMALL = {"chains": 3, "warmup": 150, "draws": 100, "seed": 11}


def assert_same_draws(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


@pytest.mark.parametrize("adaptation", ["stan", "fisher"])
def test_draws_do_not_depend_on_threads_blocks_or_placement(eight_schools: dict[str, Any], adaptation: str) -> None:
    from workers.engine import Engine

    model = validate(eight_schools)
    settings = SamplerSettings(**SMALL, adaptation=adaptation)
    reference = Engine(threads=1).run(model, settings)
    parallel = Engine(threads=3, max_block=7, block_seconds=0.001).run(model, settings)
    assert_same_draws(reference.draws, parallel.draws)
    assert_same_draws(reference.stats, parallel.stats)
    # chain 2 alone, as a worker holding just that task would run it
    alone = Engine(max_block=50).run_chain(model, settings, seed=11, chain=2)
    assert_same_draws({k: v[2] for k, v in reference.draws.items()}, alone.draws)
    # different chains really differ, and a different seed changes everything
    assert not np.array_equal(reference.draws["mu"][0], reference.draws["mu"][1])
    other = Engine().run(model, settings.model_copy(update={"seed": 12}))
    assert not np.array_equal(other.draws["mu"], reference.draws["mu"])


def test_second_fit_with_new_data_reuses_the_compiled_block(eight_schools: dict[str, Any]) -> None:
    from workers.engine import Engine, program_for

    settings = SamplerSettings(**SMALL)
    first = validate(eight_schools)
    Engine().run(first, settings)
    eight_schools["data"]["y"] = [v * 0.5 for v in eight_schools["data"]["y"]]
    eight_schools["data"]["sigma"] = [float(v) for v in eight_schools["data"]["sigma"]]
    eight_schools["data"]["y"] = [float(v) for v in eight_schools["data"]["y"]]
    second = validate(eight_schools)
    third_doc = {**eight_schools, "data": {"y": [1.0] * 8, "sigma": [2.0] * 8}}
    third = validate(third_doc)
    program = program_for(second, settings, max_block=1000)
    Engine().run(second, settings)
    Engine().run(third, settings)
    assert program is program_for(third, settings, max_block=1000)
    assert program.block._cache_size() == 1  # one trace/compile served both data sets


def test_defines_thin_and_keep(eight_schools: dict[str, Any]) -> None:
    from workers.engine import Engine

    model = validate(eight_schools)
    fit = Engine().run(model, SamplerSettings(chains=2, warmup=100, draws=10, thin=3, seed=5))
    assert fit.draws["theta"].shape == (2, 4, 8)
    assert fit.stats["diverging"].shape == (2, 4)
    tau = fit.draws["tau"]
    np.testing.assert_allclose(fit.draws["shrinkage"], 1 - tau / (tau + 10), rtol=1e-12)
    kept = Engine().run(model, SamplerSettings(chains=2, warmup=100, draws=10, seed=5, keep=["tau"]))
    assert set(kept.draws) == {"tau"}
    full = Engine().run(model, SamplerSettings(chains=2, warmup=100, draws=10, seed=5))
    assert np.array_equal(full.draws["tau"][:, ::3], fit.draws["tau"])  # thinning keeps iterations 0, 3, 6, 9
    assert np.array_equal(full.draws["tau"], kept.draws["tau"])


@pytest.mark.parametrize("adaptation", ["stan", "fisher"])
def test_stop_and_resume_is_bit_identical(eight_schools: dict[str, Any], tmp_path: Path, adaptation: str) -> None:
    from workers.checkpoint import read_block
    from workers.engine import Engine

    model = validate(eight_schools)
    settings = SamplerSettings(**SMALL, adaptation=adaptation)
    reference = Engine().run(model, settings)
    again = Engine().run(model, settings)  # determinism: the same seed, the same draws
    assert_same_draws(reference.draws, again.draws)
    assert_same_draws(reference.stats, again.stats)
    stop = threading.Event()
    seen: list[Any] = []

    def progress(p: Any) -> None:
        seen.append(p)
        if len(seen) == 5:
            stop.set()

    engine = Engine(threads=1, max_block=20, block_seconds=0.001)
    with pytest.raises(StopRequested):
        engine.run(model, settings, checkpoint_dir=tmp_path, progress=progress, stop=stop)
    blocks = sorted(tmp_path.glob("chain-*/block-*.npz"))
    assert 0 < len(blocks) < 3 * (250 // 20 + 1)
    assert all(p.iteration < settings.warmup for p in seen)  # stopped mid-warmup: the resume continues warmup
    resumed = Engine(threads=2, max_block=33).run(model, settings, checkpoint_dir=tmp_path)
    assert_same_draws(reference.draws, resumed.draws)
    assert_same_draws(reference.stats, resumed.stats)
    # a completed directory resumes to the same result without sampling again
    again = Engine().run(model, settings, checkpoint_dir=tmp_path)
    assert_same_draws(reference.draws, again.draws)
    # checkpoints are plain arrays: readable without pickle
    arrays, _ = read_block(blocks[0])
    assert "state/adapt_state/inverse_mass_matrix" in arrays
    assert ("state/fisher/current/gradient_m2" in arrays) is (adaptation == "fisher")


def test_unseeded_job_resumes_with_the_seed_it_chose(eight_schools: dict[str, Any], tmp_path: Path) -> None:
    from workers.engine import Engine

    model = validate(eight_schools)
    settings = SamplerSettings(chains=1, warmup=50, draws=20)
    first = Engine().run(model, settings, checkpoint_dir=tmp_path)
    second = Engine().run(model, settings, checkpoint_dir=tmp_path)
    assert first.seed == second.seed
    assert_same_draws(first.draws, second.draws)


def test_checkpoint_directory_of_another_job_is_refused(eight_schools: dict[str, Any], tmp_path: Path) -> None:
    from workers.engine import Engine

    model = validate(eight_schools)
    Engine().run(model, SamplerSettings(chains=1, warmup=20, draws=10, seed=1), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError, match="another job"):
        Engine().run(model, SamplerSettings(chains=1, warmup=20, draws=10, seed=2), checkpoint_dir=tmp_path)


def test_an_argument_invalid_at_some_starting_points_only_is_not_an_error() -> None:
    """A scale that is NaN for mu < 1 (sqrt of a negative number, as a failed ODE solve gives NaN): the eager trace
    of the first chain's start fails numpyro's argument check there, tries other points, and the jitted start
    looks for a valid point as for any non-finite density (population_pk failed like this)."""
    from workers.engine import Engine
    from workers.program import EAGER_ATTEMPTS

    model, settings = parse_job({
        "model": {"spec": 1, "data": {"y": [1.0, 2.0]}, "params": {"mu": "Normal(1.5, 1)"},
                  "observe": {"y": "Normal(0, sqrt(mu - 1))"}},
        "sampler": {"chains": 2, "warmup": 50, "draws": 50, "seed": 3},
    })
    result = Engine().run(model, settings)
    assert EAGER_ATTEMPTS > 1 and np.all(result.draws["mu"] > 1)


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        ("exp(1000 + mu)", "initialization failed: log density is -inf"),
        ("0 * exp(mu)", "initialization failed: Normal distribution got invalid scale"),
    ],
)
def test_impossible_model_fails_initialization_with_a_clear_message(scale: str, message: str) -> None:
    from workers.engine import Engine

    model, settings = parse_job({
        "model": {"spec": 1, "data": {"y": [1.0, 2.0]}, "params": {"mu": "Normal(0, 1)"},
                  "observe": {"y": f"Normal(mu, {scale})"}},
        "sampler": {"chains": 1, "warmup": 10, "draws": 10, "seed": 1},
    })
    with pytest.raises(InitializationError, match=message):
        Engine().run(model, settings)
