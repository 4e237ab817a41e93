"""`sampler.adaptation: fisher`: nutpie's warmup, a diagonal mass matrix from positions *and* gradients.

The metric (Seyboldt, Carlson & Carpenter, arXiv:2603.18845; nuts-rs
`transform/adapt/diagonal.rs`): for each parameter the inverse mass matrix
(posterior variance estimate) is

    sqrt(Var(positions) / Var(gradients))

over the draws of the current estimation window. It is exact for a Gaussian
(Var(gradient) = 1 / Var(position) there) and, using the gradients' spread as
well as the positions', is already useful after a handful of draws, which the
positions' variance alone (Stan's estimate) is not. Elements whose ratio is not
finite or zero keep their previous value; the others are clipped to
`VARIANCE_BOUNDS`. No shrinkage towards a constant (nuts-rs applies none).

The schedule (nuts-rs `adapt_strategy.rs` defaults), for `warmup` = W iterations:

- start: inverse mass matrix 1 / |gradient| at the initial point (an element with a
  zero or non-finite gradient gets 1), then a step size search (below);
- every warmup draw that moved (its position differs from the previous one) until
  the last `FINAL_FRACTION` of warmup is added to two running estimators, the
  *current* one and the *background* one; the metric is re-estimated from the
  current one after every draw once it holds `MIN_DRAWS` draws;
- a *switch* makes the background estimator the current one and empties the
  background: in the first `EARLY_FRACTION` of warmup whenever the background holds
  `EARLY_WINDOW` draws, later whenever it holds the window size, which starts at
  `FIRST_WINDOW` (or the background count if larger) and grows by `GROWTH` after
  every switch; no switch whose next window would not end before the final
  phase;
- the final `FINAL_FRACTION` of warmup keeps the metric fixed and adapts only
  the step size.

The step size: numpyro's dual averaging (Stan's constants, target
`target_accept`), never restarted by a switch (the metric moves a little every
draw); restarted only after the two step size searches, at the start and at the
first metric estimate (there the metric moves from 1/|gradient| to the first
estimate). The last warmup iteration sets the step size to the dual averaging's
average, as numpyro and Stan do. A search starts from the current step size
and doubles (or halves) it until one leapfrog step from the current point, with
a fresh momentum, has acceptance below (at or above) the target; the result is
the last doubled (the first halved) step size whose acceptance reaches it. Its
leapfrog steps are gradient evaluations like the transitions' and are added to
`n_steps` of the iteration that ran them (the first iteration for the initial
search), so gradient counts stay complete.

numpyro's own adaptation is switched off for these chains (`adapt_step_size` and
`adapt_mass_matrix` false): its window counter still advances but adapts nothing.
Everything this adaptation carries is `FisherAdaptation`, part of the chain's
checkpointed `SamplerState`, and every step is a function of that state, the
iteration and the transition's result, so a chain resumed mid-warmup continues
bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from numpyro.infer.hmc_util import IntegratorState, dual_averaging, euclidean_kinetic_energy, velocity_verlet

from workers.state import FisherAdaptation, Moments

EARLY_FRACTION = 0.3
"""Share of warmup with the short early windows."""
FINAL_FRACTION = 0.15
"""Share of warmup at its end that adapts only the step size."""
EARLY_WINDOW = 10
"""Draws per estimation window in the early phase."""
FIRST_WINDOW = 80
"""Draws of the first window after the early phase."""
GROWTH = 1.5
"""Growth of the window after every later switch."""
MIN_DRAWS = 3
"""Draws the current estimator needs before the metric is estimated from it."""
VARIANCE_BOUNDS = (1e-10, 1e10)
"""Clip of every element of the inverse mass matrix (a variance in the unconstrained space)."""
SEARCH_MAX = 100
"""Doublings or halvings of one step size search at most."""
SEARCH_KEY = 0x5EA
"""fold_in constant that makes a search's momentum key from the adaptation's PRNG key."""

INT = jnp.int64
"""Counters' dtype (the engine runs with float64 / int64 enabled)."""

_ss_init, _ss_update = dual_averaging()


@dataclass(frozen=True)
class Schedule:
    """Where the phases of a warmup of `warmup` iterations begin (0-based iteration indices)."""

    warmup: int
    early_end: int
    """First iteration after the early phase."""
    final_start: int
    """First iteration of the final, step-size-only phase."""

    @classmethod
    def of(cls, warmup: int) -> Schedule:
        return cls(warmup, int(EARLY_FRACTION * warmup), warmup - int(FINAL_FRACTION * warmup))


def empty(dim: int, dtype: Any) -> Moments:
    zeros = jnp.zeros(dim, dtype)
    return Moments(jnp.zeros((), INT), zeros, zeros, zeros, zeros)


def add(m: Moments, z: jax.Array, g: jax.Array) -> Moments:
    """Welford's update of the running means and sums of squared deviations with one draw."""
    n = m.count + 1
    dz, dg = z - m.position_mean, g - m.gradient_mean
    zm, gm = m.position_mean + dz / n, m.gradient_mean + dg / n
    return Moments(n, zm, m.position_m2 + dz * (z - zm), gm, m.gradient_m2 + dg * (g - gm))


def metric(variance: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """numpyro's diagonal (inverse_mass_matrix, mass_matrix_sqrt, mass_matrix_sqrt_inv) for `variance`."""
    return variance, 1 / jnp.sqrt(variance), jnp.sqrt(variance)


def gradient_variance(gradient: jax.Array) -> jax.Array:
    """The starting inverse mass matrix: 1 / |gradient|, clipped; 1 where the gradient is 0 or not finite."""
    a = jnp.abs(gradient)
    ok = jnp.isfinite(a) & (a > 0)
    return jnp.where(ok, jnp.clip(1 / jnp.where(ok, a, 1.0), *VARIANCE_BOUNDS), 1.0)


def fisher_variance(m: Moments, previous: jax.Array) -> jax.Array:
    """sqrt(Var(positions) / Var(gradients)) of `m` (the 1/(n-1) factors cancel), clipped; `previous` where not
    finite or zero."""
    ratio = jnp.sqrt(m.position_m2 / m.gradient_m2)
    ok = jnp.isfinite(ratio) & (ratio > 0)
    return jnp.where(ok, jnp.clip(jnp.where(ok, ratio, 1.0), *VARIANCE_BOUNDS), previous)


def start(z: jax.Array, gradient: jax.Array) -> FisherAdaptation:
    """The adaptation state at a chain's first point, which both estimators hold already (as in nuts-rs)."""
    first = add(empty(z.shape[0], z.dtype), z, gradient)
    return FisherAdaptation(current=first, background=first, window=jnp.asarray(FIRST_WINDOW, INT),
                            updates=jnp.zeros((), INT), unreported_gradients=jnp.zeros((), INT))


def search_step_size(potential_fn: Any, state: Any, key: jax.Array, target: float) -> tuple[jax.Array, jax.Array]:
    """(step size, gradient evaluations) of the doubling/halving search from `state` (numpyro's HMCState) with its
    current step size and metric (see the module docstring)."""
    _, vv_update = velocity_verlet(potential_fn, euclidean_kinetic_energy)
    a = state.adapt_state
    inverse_mass, z = a.inverse_mass_matrix, state.z
    r = a.mass_matrix_sqrt * jax.random.normal(key, z.shape, z.dtype)
    h0 = state.potential_energy + euclidean_kinetic_energy(inverse_mass, r)

    def acceptance(eps: jax.Array) -> jax.Array:
        after = vv_update(eps, inverse_mass, IntegratorState(z, r, state.potential_energy, state.z_grad))
        dh = after.potential_energy + euclidean_kinetic_energy(inverse_mass, after.r) - h0
        return jnp.where(jnp.isfinite(dh), jnp.exp(jnp.minimum(-dh, 0.0)), 0.0)

    eps0 = a.step_size
    up = acceptance(eps0) >= target

    def more(c: tuple[Any, ...]) -> Any:
        _, _, n, done = c
        return (~done) & (n <= SEARCH_MAX)

    def step(c: tuple[Any, ...]) -> tuple[Any, ...]:
        eps, best, n, _ = c
        trial = jnp.where(up, 2 * eps, eps / 2)
        good = acceptance(trial) >= target
        done = jnp.where(up, ~good | (trial > 1e5), good | (trial < 1e-10))
        best = jnp.where(up, jnp.where(good, trial, best), trial)
        return trial, best, n + 1, done

    _, best, n, _ = jax.lax.while_loop(more, step, (eps0, eps0, jnp.asarray(1, INT), jnp.asarray(False)))
    return best, n


def restart(state: Any, step_size: jax.Array) -> Any:
    """`state` with step size `step_size` and the dual averaging restarted there (centre log(10 step size))."""
    a = state.adapt_state
    return state._replace(adapt_state=a._replace(
        step_size=step_size, ss_state=_ss_init(math.log(10) + jnp.log(step_size))))


def initial_search(potential_fn: Any, state: Any, f: FisherAdaptation, target: float) -> tuple[Any, FisherAdaptation]:
    """A fresh chain's first step size search (at its starting point and 1/|gradient| metric); its gradients are
    reported with the chain's first iteration."""
    eps, n = search_step_size(potential_fn, state, jax.random.fold_in(state.adapt_state.rng_key, SEARCH_KEY), target)
    return restart(state, eps), f._replace(unreported_gradients=n)


def adapt(schedule: Schedule, target: float, potential_fn: Any, before: Any, after: Any,
          f: FisherAdaptation) -> tuple[Any, FisherAdaptation]:
    """The state after warmup iteration `before.i` (numpyro's HMCState `after`, from `before`), adapted."""
    t = before.i
    owed = f.unreported_gradients
    f = f._replace(unreported_gradients=jnp.zeros_like(owed))
    a = after.adapt_state
    # step size: dual averaging on this transition's acceptance; the last warmup iteration takes the average
    ss = _ss_update(target - after.accept_prob, a.ss_state)
    step = jnp.where(t == schedule.warmup - 1, jnp.exp(ss[1]), jnp.exp(ss[0]))
    finfo = jnp.finfo(jnp.result_type(step))
    after = after._replace(adapt_state=a._replace(step_size=jnp.clip(step, finfo.tiny, finfo.max), ss_state=ss))

    mass_phase = t < schedule.final_start
    moved = mass_phase & jnp.any(after.z != before.z)
    current = jax.tree_util.tree_map(lambda x, y: jnp.where(moved, x, y), add(f.current, after.z, after.z_grad),
                                     f.current)
    background = jax.tree_util.tree_map(lambda x, y: jnp.where(moved, x, y),
                                        add(f.background, after.z, after.z_grad), f.background)
    early = t < schedule.early_end
    window = jnp.where(t == schedule.early_end, jnp.maximum(f.window, background.count), f.window)
    due = jnp.where(early, EARLY_WINDOW, window)
    grown = jnp.maximum(window + 1, jnp.round(window * GROWTH).astype(window.dtype))
    next_window = jnp.where(early, EARLY_WINDOW, grown)
    switch = mass_phase & (background.count >= due) & (next_window + t <= schedule.final_start)
    current = jax.tree_util.tree_map(lambda x, y: jnp.where(switch, x, y), background, current)
    background = jax.tree_util.tree_map(lambda x, y: jnp.where(switch, x, y), empty(after.z.shape[0], after.z.dtype),
                                        background)
    window = jnp.where(switch & ~early, next_window, window)

    update = mass_phase & (current.count >= MIN_DRAWS)
    a = after.adapt_state
    inverse_mass, sqrt, sqrt_inv = metric(fisher_variance(current, a.inverse_mass_matrix))
    after = after._replace(adapt_state=a._replace(
        inverse_mass_matrix=jnp.where(update, inverse_mass, a.inverse_mass_matrix),
        mass_matrix_sqrt=jnp.where(update, sqrt, a.mass_matrix_sqrt),
        mass_matrix_sqrt_inv=jnp.where(update, sqrt_inv, a.mass_matrix_sqrt_inv)))
    f = f._replace(current=current, background=background, window=window, updates=f.updates + update)

    def search(s: Any) -> tuple[Any, jax.Array]:
        eps, n = search_step_size(potential_fn, s, jax.random.fold_in(s.adapt_state.rng_key, SEARCH_KEY), target)
        return restart(s, eps), n

    first = update & (f.updates == 1)
    after, n = jax.lax.cond(first, search, lambda s: (s, jnp.zeros((), INT)), after)
    return after._replace(num_steps=(after.num_steps + n + owed).astype(after.num_steps.dtype)), f
