"""SamplerState: numpyro's HMCState by name, to plain arrays and back, refusing what does not fit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.exceptions import CheckpointMismatchError
from service.language.validate import validate
from service.sampler import SamplerSettings

pytestmark = pytest.mark.usefixtures("jax_ready")

FIELDS = {
    "iteration", "position", "gradient", "potential_energy", "energy", "trajectory_length", "num_steps",
    "accept_prob", "mean_accept_prob", "diverging", "rng_key",
    "adapt_state/step_size", "adapt_state/inverse_mass_matrix", "adapt_state/mass_matrix_sqrt",
    "adapt_state/mass_matrix_sqrt_inv", "adapt_state/window_idx", "adapt_state/rng_key",
    "adapt_state/step_size_adaptation/log_step_size", "adapt_state/step_size_adaptation/log_step_size_avg",
    "adapt_state/step_size_adaptation/gradient_avg", "adapt_state/step_size_adaptation/iterations",
    "adapt_state/step_size_adaptation/prox_center",
    "adapt_state/mass_matrix_adaptation/mean", "adapt_state/mass_matrix_adaptation/sum_squares",
    "adapt_state/mass_matrix_adaptation/samples_seen",
}
"""Every stored field of a NUTS state (momentum is None for NUTS and not stored), `adaptation: stan`."""
FISHER_FIELDS = {
    f"fisher/{window}/{moment}" for window in ("current", "background")
    for moment in ("count", "position_mean", "position_m2", "gradient_mean", "gradient_m2")
} | {"fisher/unreported_gradients", "fisher/updates", "fisher/window"}
"""The fisher adaptation's own fields, stored besides FIELDS with `adaptation: fisher` (the default)."""


def initial(spec: dict[str, Any], *, dense_mass: bool = False) -> tuple[Any, Any]:
    """A chain's initial state and the shapes a restore expects."""
    import jax.numpy as jnp

    from workers.chain import chain_key
    from workers.program import program_for

    model = validate(spec)
    program = program_for(model, SamplerSettings(warmup=20, draws=10, dense_mass=dense_mass), max_block=50)
    data = {k: jnp.asarray(v) for k, v in model.data.items()}
    return program.init(chain_key(1, 0), data), program.state_shapes(chain_key(1, 0), data)


@pytest.mark.parametrize("dense_mass", [False, True])
def test_state_round_trips_through_named_plain_arrays(eight_schools: dict[str, Any], dense_mass: bool) -> None:
    import jax

    from workers.state import SamplerState

    state, shapes = initial(eight_schools, dense_mass=dense_mass)
    arrays = state.to_arrays()
    assert set(arrays) == (FIELDS if dense_mass else FIELDS | FISHER_FIELDS)  # dense_mass adapts as stan
    assert all(type(a) is np.ndarray and a.dtype != object for a in arrays.values())
    dim = 10  # mu, tau and eight thetas, unconstrained
    assert arrays["position"].shape == (dim,)
    assert arrays["adapt_state/inverse_mass_matrix"].shape == ((dim, dim) if dense_mass else (dim,))
    assert arrays["rng_key"].dtype == np.uint32
    restored = SamplerState.from_arrays(arrays, like=shapes)
    assert restored.momentum is None
    same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), state, restored)
    assert all(jax.tree_util.tree_leaves(same))
    # renaming to numpyro's HMCState and back changes nothing
    assert SamplerState.from_numpyro(state.to_numpyro(), state.fisher) == state


def test_missing_unexpected_or_misshaped_fields_are_refused(eight_schools: dict[str, Any]) -> None:
    from workers.state import SamplerState

    state, shapes = initial(eight_schools)
    arrays = state.to_arrays()
    missing = {k: v for k, v in arrays.items() if k != "adapt_state/step_size"}
    with pytest.raises(CheckpointMismatchError, match="adapt_state/step_size missing"):
        SamplerState.from_arrays(missing, like=shapes)
    with pytest.raises(CheckpointMismatchError, match="0 unexpected"):
        SamplerState.from_arrays({**arrays, "0": np.zeros(3)}, like=shapes)
    misshaped = {**arrays, "position": np.zeros(3)}
    with pytest.raises(CheckpointMismatchError, match=r"position is float64\[3\], expected float64\[10\]"):
        SamplerState.from_arrays(misshaped, like=shapes)
    retyped = {**arrays, "iteration": np.float32(3)}
    with pytest.raises(CheckpointMismatchError, match=r"iteration is float32\[\], expected int64\[\]"):
        SamplerState.from_arrays(retyped, like=shapes)
