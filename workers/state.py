"""A chain's NUTS state as named, plain arrays: what a checkpoint stores and a resume reads back.

`SamplerState` mirrors numpyro's `HMCState` field for field (same order, and
the conversion only renames: no value changes), with names in our words and a
doc per field. Stored, every array is named by its field path,
`adapt_state/inverse_mass_matrix`; reading maps the names back onto the fields of
an expected state (the shapes a model's program gives) and refuses a missing,
unexpected or misshaped one, so a checkpoint never depends on a structure
remembered from an earlier run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.hmc import HMCState
from numpyro.infer.hmc_util import HMCAdaptState

from service.exceptions import CheckpointMismatchError


class StepSizeAdaptation(NamedTuple):
    """Dual averaging of the log step size during warmup (numpyro's `dual_averaging` state)."""

    log_step_size: Any
    """The current iterate x_t: log of the step size tried next."""
    log_step_size_avg: Any
    """The weighted average of the iterates; its exp is the step size after warmup."""
    gradient_avg: Any
    """Running average of (target acceptance - acceptance)."""
    iterations: Any
    """Iterations since the adaptation last restarted (at the end of every slow window; with `adaptation: fisher`
    after each step size search)."""
    prox_center: Any
    """The point the iterates shrink towards: log(10 * step size) at the restart."""


class MassMatrixAdaptation(NamedTuple):
    """Welford's running (co)variance of the positions in the current window (numpyro's `welford_covariance`);
    unused (zeros) with `adaptation: fisher`."""

    mean: Any
    """Running mean of the positions, (dim,)."""
    sum_squares: Any
    """Sum of squared deviations: (dim,) for a diagonal mass matrix, (dim, dim) for a dense one."""
    samples_seen: Any
    """Positions seen in the window."""


class AdaptState(NamedTuple):
    """Warmup adaptation (numpyro's `HMCAdaptState`); fixed after warmup."""

    step_size: Any
    """Integrator step size for the next iteration."""
    inverse_mass_matrix: Any
    """Inverse mass matrix (the posterior (co)variance estimate) for the next iteration."""
    mass_matrix_sqrt: Any
    """Square root of the mass matrix (Cholesky factor when dense): scales the momentum draws."""
    mass_matrix_sqrt_inv: Any
    """Inverse of `mass_matrix_sqrt`."""
    step_size_adaptation: StepSizeAdaptation
    """Dual averaging state of the step size."""
    mass_matrix_adaptation: MassMatrixAdaptation
    """Welford state of the mass matrix's current window."""
    window_idx: Any
    """Index of the warmup window the chain is in (Stan's schedule: a fast window, doubling slow ones, a fast one);
    with `adaptation: fisher` it still counts Stan's windows but nothing adapts at their ends."""
    rng_key: Any
    """PRNG key of the step size search at the end of each slow window."""


class Moments(NamedTuple):
    """Welford's running means and sums of squared deviations of positions and gradients over one window."""

    count: Any
    """Draws seen."""
    position_mean: Any
    """Mean of the positions, (dim,)."""
    position_m2: Any
    """Sum of squared deviations of the positions from their mean, (dim,)."""
    gradient_mean: Any
    """Mean of the gradients of the potential, (dim,)."""
    gradient_m2: Any
    """Sum of squared deviations of the gradients, (dim,)."""


class FisherAdaptation(NamedTuple):
    """What `sampler.adaptation: fisher` carries besides numpyro's state (workers/fisher.py): two estimators of
    positions and gradients, the window size and counters."""

    current: Moments
    """The estimator the metric is computed from after every draw."""
    background: Moments
    """Draws since the last switch; becomes `current` at the next one."""
    window: Any
    """Draws the background needs for the next switch after the early phase."""
    updates: Any
    """Metric estimates so far (the first one is followed by a step size search)."""
    unreported_gradients: Any
    """Gradients of the initial step size search, reported with the first iteration's `n_steps`."""


class SamplerState(NamedTuple):
    """Everything a NUTS chain carries from one iteration to the next (numpyro's `HMCState`, and with
    `sampler.adaptation: fisher` the `FisherAdaptation`).

    A chain restored from these arrays continues bit for bit.
    """

    iteration: Any
    """Iterations run so far, warmup included."""
    position: Any
    """Current point in the unconstrained parameter space, a flat (dim,) vector."""
    gradient: Any
    """Gradient of the potential energy at `position`."""
    potential_energy: Any
    """Negative log density (up to a constant) at `position`."""
    energy: Any
    """Potential plus kinetic energy of the last transition."""
    momentum: Any
    """Momentum carried over; None for NUTS, which draws a new one every iteration (not stored)."""
    trajectory_length: Any
    """Integration time of static HMC; unused by NUTS."""
    num_steps: Any
    """Leapfrog steps (gradient evaluations) of the last transition."""
    accept_prob: Any
    """Acceptance probability of the last transition."""
    mean_accept_prob: Any
    """Mean acceptance probability since warmup began or ended."""
    diverging: Any
    """Whether the last transition diverged."""
    adapt_state: AdaptState
    """Step size, mass matrix and their adaptation."""
    rng_key: Any
    """PRNG key of the next transition: the chain's randomness lives here, not in any global."""
    fisher: FisherAdaptation | None = None
    """The fisher adaptation's own state; None (not stored) with `adaptation: stan` or without warmup."""

    @classmethod
    def from_numpyro(cls, state: Any, fisher: FisherAdaptation | None = None) -> SamplerState:
        """Rename numpyro's `HMCState` (and add the fisher adaptation's state); values are not touched."""
        a = state.adapt_state
        adapt = AdaptState(
            step_size=a.step_size,
            inverse_mass_matrix=a.inverse_mass_matrix,
            mass_matrix_sqrt=a.mass_matrix_sqrt,
            mass_matrix_sqrt_inv=a.mass_matrix_sqrt_inv,
            step_size_adaptation=StepSizeAdaptation(*a.ss_state),
            mass_matrix_adaptation=MassMatrixAdaptation(*a.mm_state),
            window_idx=a.window_idx,
            rng_key=a.rng_key,
        )
        return cls(
            iteration=state.i,
            position=state.z,
            gradient=state.z_grad,
            potential_energy=state.potential_energy,
            energy=state.energy,
            momentum=state.r,
            trajectory_length=state.trajectory_length,
            num_steps=state.num_steps,
            accept_prob=state.accept_prob,
            mean_accept_prob=state.mean_accept_prob,
            diverging=state.diverging,
            adapt_state=adapt,
            rng_key=state.rng_key,
            fisher=fisher,
        )

    def to_numpyro(self) -> Any:
        """The numpyro `HMCState` the kernel steps (`fisher` is not part of it)."""
        a = self.adapt_state
        adapt = HMCAdaptState(
            step_size=a.step_size,
            inverse_mass_matrix=a.inverse_mass_matrix,
            mass_matrix_sqrt=a.mass_matrix_sqrt,
            mass_matrix_sqrt_inv=a.mass_matrix_sqrt_inv,
            ss_state=tuple(a.step_size_adaptation),
            mm_state=tuple(a.mass_matrix_adaptation),
            window_idx=a.window_idx,
            rng_key=a.rng_key,
        )
        return HMCState(
            i=self.iteration,
            z=self.position,
            z_grad=self.gradient,
            potential_energy=self.potential_energy,
            energy=self.energy,
            r=self.momentum,
            trajectory_length=self.trajectory_length,
            num_steps=self.num_steps,
            accept_prob=self.accept_prob,
            mean_accept_prob=self.mean_accept_prob,
            diverging=self.diverging,
            adapt_state=adapt,
            rng_key=self.rng_key,
        )

    def map(self, fn: Callable[[Any], Any]) -> SamplerState:
        """Apply `fn` to every array (fields that are None stay None)."""
        return jax.tree_util.tree_map(fn, self)  # type: ignore[no-any-return]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays named by field path (`adapt_state/step_size`); None fields are left out."""
        return {field_path(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(self)[0]}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], *, like: SamplerState) -> SamplerState:
        """The state named by `arrays`, shaped as `like` (a state or its `jax.ShapeDtypeStruct`s).

        Raises CheckpointMismatchError naming every field that is missing, unexpected, or of another
        shape or dtype than `like`'s.
        """
        expected = {field_path(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(like)[0]}
        problems = [f"{name} missing" for name in expected if name not in arrays]
        problems += [f"{name} unexpected" for name in arrays if name not in expected]
        for name, want in expected.items():
            got = arrays.get(name)
            if got is not None and (got.shape != want.shape or got.dtype != want.dtype):
                problems.append(f"{name} is {got.dtype}{list(got.shape)}, expected {want.dtype}{list(want.shape)}")
        if problems:
            raise CheckpointMismatchError("sampler state does not match the model: " + "; ".join(problems))
        return jax.tree_util.tree_map_with_path(  # type: ignore[no-any-return]
            lambda path, _: jnp.asarray(arrays[field_path(path)]), like)


@dataclass(frozen=True)
class WarmStart:
    """Where an earlier chain ended: what a warm start takes from its final sampler state."""

    position: np.ndarray
    step_size: np.ndarray
    inverse_mass_matrix: np.ndarray

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> WarmStart:
        """From a stored state (`SamplerState.to_arrays()` names)."""
        try:
            return cls(position=np.asarray(arrays["position"]),
                       step_size=np.asarray(arrays["adapt_state/step_size"]),
                       inverse_mass_matrix=np.asarray(arrays["adapt_state/inverse_mass_matrix"]))
        except KeyError as exc:
            raise CheckpointMismatchError(f"warm start: the stored state has no {exc.args[0]}") from None


def field_path(path: tuple[Any, ...]) -> str:
    """`adapt_state/step_size` for the key path of `state.adapt_state.step_size`."""
    return "/".join(str(getattr(key, "name", key)) for key in path)
