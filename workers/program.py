"""The compiled NUTS block for one model structure, data shapes and sampler settings, and its cache.

Why not `MCMC.run`: called per job it re-traces and recompiles every time and
grows the process; here one compiled block function per (model structure, data
shapes, compiled settings) is reused by every chain and every later job.

A block runs up to `n` NUTS transitions (warmup included) in one `lax.scan` of
fixed length whose steps past `n` are skipped, so any block length runs the same
compiled code.

Warmup adaptation (`sampler.adaptation`): `stan` is numpyro's own (`warmup_adapter`:
dual averaging of the step size, Welford variance of the positions in Stan's
windows); `fisher` switches numpyro's off and adapts in the block's transition
instead (workers/fisher.py: nutpie's position/gradient variance metric and
schedule), carrying its state in `SamplerState.fisher`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.infer import init_to_feasible, init_to_median, init_to_sample, init_to_uniform
from numpyro.infer.hmc import hmc
from numpyro.infer.util import ParamInfo, initialize_model

from service.exceptions import InitializationError
from service.language.ir import Model
from service.sampler import Role, SamplerSettings
from workers import fisher
from workers.lower import lower
from workers.state import FisherAdaptation, SamplerState, WarmStart

STAT_NAMES = ("diverging", "n_steps", "tree_depth", "step_size", "energy", "lp", "acceptance_rate")
MAX_BLOCK_BYTES = 64 * 1024 * 1024
"""Bound on one block's output buffer; big models get shorter blocks."""
PROGRAM_CACHE_SIZE = 16
"""Programs kept compiled in a process; the least recently used beyond this are dropped."""
NO_VALID_START = (
    "initialization failed: log density is -inf (or its gradient not finite) at every tried point; "
    "check priors against the data and the init strategy"
)

EAGER_ATTEMPTS = 10
"""Starting points the eager trace tries when no start is valid, for numpyro's message: it checks distributions'
arguments only eagerly, and an argument can be invalid at one point only (an ODE solve that fails there gives a
NaN loc), not for the model (a constant scale of 0 fails at all of them)."""

_INIT_STRATEGIES = {
    "uniform": init_to_uniform,
    "median": init_to_median,
    "sample": init_to_sample,
    "feasible": init_to_feasible,
}


class Program:
    """The compiled pieces for one model structure, data shapes and sampler settings.

    NUTS runs on one flat vector of unconstrained parameters (numpyro's functional
    `hmc(potential_fn_gen=...)`), not on a dict of sites: every tree-building
    step then works on one array instead of one per site, which measured 1.5-3.4x
    more gradient evaluations per second than `NUTS(model)` on the examples.
    """

    def __init__(self, model: Model, settings: SamplerSettings, *, max_block: int) -> None:
        self.settings = settings
        self.fisher = settings.adaptation == "fisher" and settings.warmup > 0
        """Whether this program adapts with workers/fisher.py (without warmup there is nothing to adapt)."""
        self.model_fn = lower(model)
        self.init_strategy = _INIT_STRATEGIES[settings.init]()
        kept = model.kept(settings.keep)
        self.outputs = {n.name: n.output for n in kept}  # site name -> name in the draws
        per_iteration = 8 * (sum(int(np.prod(n.shape)) for n in kept) + len(STAT_NAMES) + 1)
        self.max_block = max(8, min(max_block, MAX_BLOCK_BYTES // per_iteration))
        self.block = jax.jit(self._block)
        self._lock = threading.Lock()
        self._compiled = False
        self._kernels: Any = None  # (sample_kernel, postprocess_gen, unravel, flat_potential), built by the first init
        self._init: Any = None
        self._warm: Any = None

    def init(self, key: jax.Array, data: dict[str, jax.Array]) -> SamplerState:
        """Initial state of a chain (jitted after the first), with strong dtypes like a restored state."""
        self._ensure_built(key, data)
        state, adaptation, valid = self._init(key, data)
        if not bool(valid):
            raise self._invalid_start(jax.random.split(key)[1], data)
        # through numpy: weakly typed scalars become strong, so fresh and restored states share one compiled block
        return SamplerState.from_numpyro(state, adaptation).map(lambda leaf: jnp.asarray(np.asarray(leaf)))

    def warm_init(self, key: jax.Array, data: dict[str, jax.Array], start: WarmStart) -> SamplerState:
        """Initial state at an earlier chain's final position, step size and inverse mass matrix; warmup (if any)
        adapts on from them. InitializationError if the start does not fit this model or its density is not
        finite there."""
        self._ensure_built(key, data)
        shapes = jax.eval_shape(self._init, key, data)[0]
        wanted = {"position": shapes.z, "inverse_mass_matrix": shapes.adapt_state.inverse_mass_matrix}
        for name, want in wanted.items():
            got = np.shape(getattr(start, name))
            if got != want.shape:
                raise InitializationError(f"warm start: {name} has shape {list(got)}, this model needs "
                                          f"{list(want.shape)}")
        state, adaptation, valid = self._warm(
            key, data, jnp.asarray(start.position, shapes.z.dtype),
            jnp.asarray(start.step_size, shapes.adapt_state.step_size.dtype),
            jnp.asarray(start.inverse_mass_matrix, wanted["inverse_mass_matrix"].dtype))
        if not bool(valid):
            raise InitializationError("warm start: the log density (or its gradient) is not finite at the earlier "
                                      "job's final position with this data")
        return SamplerState.from_numpyro(state, adaptation).map(lambda leaf: jnp.asarray(np.asarray(leaf)))

    def state_shapes(self, key: jax.Array, data: dict[str, jax.Array]) -> SamplerState:
        """Shapes and dtypes of a chain's state (`jax.ShapeDtypeStruct`s), without running anything."""
        self._ensure_built(key, data)
        state, adaptation, _ = jax.eval_shape(self._init, key, data)
        return SamplerState.from_numpyro(state, adaptation)

    def run_block(self, state: SamplerState, data: dict[str, jax.Array], n: int) -> tuple[SamplerState, Any]:
        """Up to `n` transitions from `state`: the state after them and their (draws, stats), max_block long."""
        if self._compiled:
            (after, adaptation), out = self.block((state.to_numpyro(), state.fisher), data, n)
            return SamplerState.from_numpyro(after, adaptation), out
        with self._lock:  # the first call traces and compiles; other chains wait for it
            (after, adaptation), out = self.block((state.to_numpyro(), state.fisher), data, n)
            jax.block_until_ready(out)
            self._compiled = True
            return SamplerState.from_numpyro(after, adaptation), out

    def _invalid_start(self, key: jax.Array, data: dict[str, jax.Array]) -> InitializationError:
        """Why no starting point was valid, for a model that has none: numpyro's argument checks run only
        eagerly, so the model is traced eagerly here, at up to EAGER_ATTEMPTS points, for their message."""
        first: ValueError | None = None
        for attempt in jax.random.split(key, EAGER_ATTEMPTS):
            try:
                initialize_model(attempt, self.model_fn, model_args=(data,), dynamic_args=True,
                                 init_strategy=self.init_strategy)
            except ValueError as exc:  # e.g. a scale that is 0 at every start
                first = first or exc
            except RuntimeError as exc:
                if "valid initial" not in str(exc):
                    raise
        if first is None:
            return InitializationError(NO_VALID_START)
        return InitializationError(f"initialization failed: {first}")

    def _ensure_built(self, key_init: jax.Array, data: dict[str, jax.Array]) -> None:
        with self._lock:
            if self._kernels is None:
                self._build(key_init, data)

    def _build(self, key: jax.Array, data: dict[str, jax.Array]) -> None:
        """Trace the model once, abstractly (nothing runs or compiles: numpyro's eager initialization compiled ~120
        tiny programs, most of a cold start), and build the flat NUTS kernels."""
        traced: dict[str, Any] = {}

        def trace(key: jax.Array, data: dict[str, jax.Array]) -> Any:
            info = initialize_model(key, self.model_fn, model_args=(data,), dynamic_args=True,
                                    init_strategy=self.init_strategy)
            # shapes and functions of the data only: no value of this trace is kept (supports that depend on
            # values make numpyro replay the model in postprocess_fn instead of keeping their transforms)
            traced["unravel"] = ravel_pytree(info.param_info.z)[1]
            traced["potential_gen"], traced["postprocess_gen"] = info.potential_fn, info.postprocess_fn
            return info.param_info.z

        jax.eval_shape(trace, key, data)
        unravel, potential_gen, postprocess_gen = traced["unravel"], traced["potential_gen"], traced["postprocess_gen"]

        def flat_potential(data: dict[str, jax.Array]) -> Any:
            potential = potential_gen(data)
            return lambda z: potential(unravel(z))

        init_kernel, sample_kernel = hmc(potential_fn_gen=flat_potential, algo="NUTS")
        settings, model_fn, strategy, use_fisher = self.settings, self.model_fn, self.init_strategy, self.fisher
        numpyro_adapts = not use_fisher  # fisher: numpyro's adaptation off, workers/fisher.py adapts instead

        def init(key: jax.Array, data: dict[str, jax.Array]) -> Any:
            key_state, key_init = jax.random.split(key)
            start = initialize_model(key_init, model_fn, model_args=(data,), dynamic_args=True,
                                     init_strategy=strategy).param_info
            z, grad = ravel_pytree(start.z)[0], ravel_pytree(start.z_grad)[0]
            state = init_kernel(
                ParamInfo(z, start.potential_energy, grad),
                num_warmup=settings.warmup,
                inverse_mass_matrix=fisher.gradient_variance(grad) if use_fisher else None,
                adapt_step_size=numpyro_adapts,
                adapt_mass_matrix=numpyro_adapts,
                dense_mass=settings.dense_mass,
                target_accept_prob=settings.target_accept,
                max_tree_depth=settings.max_tree_depth,
                model_args=(data,),
                rng_key=key_state,
            )
            adaptation = None
            if use_fisher:
                state, adaptation = fisher.initial_search(flat_potential(data), state, fisher.start(z, grad),
                                                          settings.target_accept)
            valid = jnp.isfinite(start.potential_energy) & jnp.all(jnp.isfinite(grad))
            return state, adaptation, valid

        def warm(key: jax.Array, data: dict[str, jax.Array], z: jax.Array, step_size: jax.Array,
                 inverse_mass_matrix: jax.Array) -> Any:
            key_state = jax.random.split(key)[0]
            potential, grad = jax.value_and_grad(flat_potential(data))(z)
            state = init_kernel(
                ParamInfo(z, potential, grad),
                num_warmup=settings.warmup,
                step_size=step_size,
                inverse_mass_matrix=inverse_mass_matrix,
                adapt_step_size=numpyro_adapts,
                adapt_mass_matrix=numpyro_adapts,
                dense_mass=settings.dense_mass,
                target_accept_prob=settings.target_accept,
                max_tree_depth=settings.max_tree_depth,
                model_args=(data,),
                rng_key=key_state,
            )
            # a warm start keeps the earlier step size: no initial search (the first estimate still has one)
            adaptation = fisher.start(z, grad) if use_fisher else None
            return state, adaptation, jnp.isfinite(potential) & jnp.all(jnp.isfinite(grad))

        self._init = jax.jit(init)
        self._warm = jax.jit(warm)
        self._kernels = (sample_kernel, postprocess_gen, unravel, flat_potential)

    def _block(self, carry: tuple[Any, FisherAdaptation | None], data: dict[str, jax.Array],
               n: jax.Array) -> tuple[Any, Any]:
        sample_kernel, postprocess_gen, unravel, flat_potential = self._kernels
        constrain = postprocess_gen(data)
        schedule, target, potential = fisher.Schedule.of(self.settings.warmup), self.settings.target_accept, None
        if self.fisher:
            potential = flat_potential(data)

        def transition(c: tuple[Any, FisherAdaptation | None]) -> tuple[Any, Any]:
            before, adaptation = c
            s = sample_kernel(before, (data,), {})
            if adaptation is not None:
                s, adaptation = jax.lax.cond(
                    before.i < schedule.warmup,
                    lambda s, f: fisher.adapt(schedule, target, potential, before, s, f),
                    lambda s, f: (s, f), s, adaptation)
            values = constrain(unravel(s.z))
            stats = {
                "i": s.i,
                "diverging": s.diverging,
                "n_steps": s.num_steps,
                "step_size": s.adapt_state.step_size,
                "energy": s.energy,
                "lp": -s.potential_energy,
                "acceptance_rate": s.accept_prob,
            }
            return (s, adaptation), ({out: values[site] for site, out in self.outputs.items()}, stats)

        empty = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(transition, carry)[1])

        def step(c: Any, j: jax.Array) -> tuple[Any, Any]:
            # steps past n cost a branch, not a transition: one compiled block serves every length
            return jax.lax.cond(j < n, transition, lambda c: (c, empty), c)

        return jax.lax.scan(step, carry, jnp.arange(self.max_block))


_programs: OrderedDict[tuple[Any, ...], Program] = OrderedDict()
_programs_lock = threading.Lock()


def program_for(model: Model, settings: SamplerSettings, *, max_block: int) -> Program:
    """A cached Program: a second fit of the same structure, shapes and compiled settings compiles nothing."""
    key = (model.structure_key(), tuple(settings.values(Role.COMPILED).items()), max_block)
    with _programs_lock:
        program = _programs.get(key)
        if program is None:
            program = _programs[key] = Program(model, settings, max_block=max_block)
            while len(_programs) > PROGRAM_CACHE_SIZE:
                _programs.popitem(last=False)
        _programs.move_to_end(key)
        return program
