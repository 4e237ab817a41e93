"""One chain of a job: start (or resume from its newest checkpoint), then step block by block.

The kernel's state carries its own PRNG key and iteration counter, so where
blocks start and end does not change a single draw: a chain stopped after any
block and resumed from its checkpoint continues bit for bit; so the blocks of
a few seconds are written together, as one checkpoint (a kill runs them again).
Chain c of a job
always starts from `fold_in(PRNGKey(seed), c)` and runs as a single-chain
kernel, so its draws do not depend on which process runs it or what else runs
beside it.

How long a chain runs is not part of its identity: asked for more draws (a
longer `draws`, another round of `until`, an extension), it continues the same
sequence, from its checkpoint or from a snapshot of its state and draws stored
elsewhere (`ChainSnapshot`, e.g. with the job in Redis), so a chain run to 1000
draws and then to 2000 equals one run to 2000 from the start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from service.defaults import CHECKPOINT_SECONDS
from service.exceptions import CheckpointMismatchError
from service.language.ir import Model
from service.sampler import Role, SamplerSettings
from workers.checkpoint import ChainStore, Resumed
from workers.program import STAT_NAMES, Program, program_for
from workers.state import SamplerState, WarmStart

FIRST_BLOCK = 16
"""Iterations of a chain's first block (it includes compiling); later blocks are sized from the time taken."""


@dataclass(frozen=True)
class Progress:
    """One chain's position, reported after every block."""

    chain: int
    phase: str  # warmup | sampling | done
    iteration: int
    of: int
    divergences: int
    step_size: float
    block_warmup: int = 0
    """Warmup iterations in the block just run."""
    block_sampling: int = 0
    """Sampling iterations in the block just run."""
    block_gradients: int = 0
    """Gradient evaluations (leapfrog steps) in the block just run."""
    gradients: int = 0
    """Gradient evaluations of the chain so far, warmup included."""
    warmup_gradients: int = 0
    """Gradient evaluations of the chain's warmup so far."""


@dataclass
class ChainDraws:
    """Kept draws and sample stats of one chain, each (draw, *shape)."""

    draws: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    gradient_evaluations: int = 0


@dataclass(frozen=True)
class Block:
    """One finished block of a chain."""

    draws: dict[str, np.ndarray]
    """Kept draws of the block, (draw, *shape); empty along draw during warmup."""
    stats: dict[str, np.ndarray]
    """Sample stats of the kept draws (STAT_NAMES)."""
    progress: Progress
    """The chain's position after the block."""


@dataclass(frozen=True)
class ChainSnapshot:
    """A chain between blocks, everything needed to continue it anywhere: its full sampler state (by field
    path, `SamplerState.to_arrays()`), its progress, and all its kept draws and stats so far."""

    state: dict[str, np.ndarray]
    progress: Progress
    draws: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]


def chain_key(seed: int, chain: int) -> jax.Array:
    return _chain_key(np.int64(seed), np.int64(chain))


@jax.jit
def _chain_key(seed: jax.Array, chain: jax.Array) -> jax.Array:
    """One compile instead of an eager one per operation (seeds are below 2**32)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), chain)


def job_fingerprint(model: Model, settings: SamplerSettings, seed: int) -> str:
    """Identity of a job's chains: model, data and every setting that changes a chain's draws."""
    relevant = settings.values(Role.COMPILED, Role.DRAWS)  # not Role.LENGTH: a longer run continues this one
    text = json.dumps({"model": model.fingerprint(), "settings": relevant, "seed": seed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(kw_only=True)
class Chain:
    """A chain between blocks: its compiled program, its sampler state, and where its blocks are checkpointed."""

    program: Program
    data: dict[str, jax.Array]
    settings: SamplerSettings
    chain: int
    state: SamplerState
    """Sampler state after the last block run or restored."""
    progress: Progress
    """Position now (after restore or the last step)."""
    store: ChainStore | None
    fingerprint: str
    block_seconds: float
    total: int
    """Iterations to run to, warmup included (`extend_to` moves it)."""
    restored: list[Block] = field(default_factory=list)
    """Blocks restored from the checkpoint or a snapshot (empty on a fresh start)."""
    blocks: list[Block] = field(default_factory=list)
    """Blocks run by this Chain."""
    gradient_evaluations: int = 0
    """Gradient evaluations of the blocks run by this Chain."""
    next_size: int = FIRST_BLOCK
    """Iterations of the next block."""
    checkpoint_seconds: float = CHECKPOINT_SECONDS
    """Least time between two checkpoint writes (0: every block)."""
    checkpoint_at_end: bool = True
    """Write the blocks not yet written when the chain is done, so its directory holds the whole chain (a rerun
    returns it, a longer run continues it). The service's workers do not: they store a finished chain's draws in
    Redis and delete its files, so a kill before that reruns at most checkpoint_seconds of sampling."""
    _pending: list[tuple[Block, dict[str, np.ndarray]]] = field(default_factory=list, init=False)
    """Blocks run since the last checkpoint write, each with the sampler state after it."""
    _written_at: float = field(default_factory=time.monotonic, init=False)
    _files: int = field(default=0, init=False)
    """Block files in the store: one per restored block, then one per write."""

    def __post_init__(self) -> None:
        self._files = len(self.restored)

    @classmethod
    def open(cls, model: Model, settings: SamplerSettings, *, seed: int, chain: int, store: ChainStore | None,
             fingerprint: str, block_seconds: float, max_block: int, draws: int | None = None,
             base: ChainSnapshot | None = None, warm: WarmStart | None = None,
             checkpoint_seconds: float = CHECKPOINT_SECONDS, checkpoint_at_end: bool = True) -> Chain:
        """The chain, to run to `draws` draws (default `settings.draws`): resumed from the newer of its newest
        checkpoint in `store` and `base`, else started fresh (at `warm`'s position, step size and inverse mass
        matrix if given). InitializationError / CheckpointMismatchError."""
        program = program_for(model, settings, max_block=max_block)
        data = {k: jnp.asarray(v) for k, v in model.data.items()}
        key = chain_key(seed, chain)
        total = settings.warmup + (draws if draws is not None else settings.draws)
        resumed = store.load() if store is not None else None
        common: dict[str, Any] = dict(program=program, data=data, settings=settings, chain=chain, store=store,
                                      fingerprint=fingerprint, block_seconds=block_seconds, total=total,
                                      next_size=min(FIRST_BLOCK, program.max_block),
                                      checkpoint_seconds=checkpoint_seconds, checkpoint_at_end=checkpoint_at_end)
        if base is not None and (resumed is None or base.progress.iteration > int(resumed.meta["iteration"])):
            try:
                state = SamplerState.from_arrays(base.state, like=program.state_shapes(key, data))
            except CheckpointMismatchError as exc:
                raise CheckpointMismatchError(f"chain {chain}'s stored state: {exc}") from None
            if int(state.iteration) != base.progress.iteration:
                raise CheckpointMismatchError(f"chain {chain}'s stored state and progress disagree on the iteration")
            block = Block(draws=base.draws, stats=base.stats, progress=base.progress)
            if store is not None:  # the snapshot becomes block 0, so a kill in this run resumes from here
                store.clear()
                store.save(0, base.state, base.draws, base.stats, _meta(fingerprint, chain, base.progress))
            return cls(state=state, progress=_towards(base.progress, settings.warmup, total), restored=[block],
                       **common)
        if resumed is None:
            state = program.warm_init(key, data, warm) if warm is not None else program.init(key, data)
            start = Progress(chain, "warmup" if settings.warmup else "sampling", 0, total, 0,
                             float(state.adapt_state.step_size))
            return cls(state=state, progress=start, **common)
        assert store is not None
        state, restored = _restore(resumed, program.state_shapes(key, data), store, fingerprint)
        return cls(state=state, progress=_towards(restored[-1].progress, settings.warmup, total), restored=restored,
                   **common)

    @property
    def done(self) -> bool:
        """All warmup and draws iterations run."""
        return self.progress.iteration >= self.total

    def extend_to(self, draws: int) -> None:
        """Run on to `draws` draws (a next round, an extension): the same sequence continues."""
        self.total = self.settings.warmup + draws
        self.progress = _towards(self.progress, self.settings.warmup, self.total)

    def step(self) -> Block:
        """Run one block (sized to aim at block_seconds), checkpoint it to the store (with the blocks before it not
        yet written, once checkpoint_seconds have passed since the last write, or the chain is done and
        checkpoint_at_end), return it."""
        if self.done:
            raise RuntimeError(f"chain {self.chain} is done")
        warmup, total, thin = self.settings.warmup, self.total, self.settings.thin
        todo = min(self.next_size, total - self.progress.iteration)
        started = time.perf_counter()
        state, (out, raw) = self.program.run_block(self.state, self.data, todo)
        out, raw = jax.device_get((out, raw))
        arrays = state.to_arrays()
        elapsed = time.perf_counter() - started
        iteration = raw["i"][:todo] - 1  # 0-based index of each transition
        kept = (iteration >= warmup) & ((iteration - warmup) % thin == 0)
        draws = {k: v[:todo][kept] for k, v in out.items()}
        stats = _stats(raw, todo, kept)
        steps = raw["n_steps"][:todo]
        gradients = int(steps.sum())
        in_warmup = int((iteration < warmup).sum())
        done = int(iteration[-1]) + 1
        before = self.progress
        progress = Progress(self.chain, _phase(done, warmup, total), done, total,
                            before.divergences + int(stats["diverging"].sum()), float(raw["step_size"][todo - 1]),
                            block_warmup=in_warmup, block_sampling=todo - in_warmup, block_gradients=gradients,
                            gradients=before.gradients + gradients,
                            warmup_gradients=before.warmup_gradients + int(steps[iteration < warmup].sum()))
        block = Block(draws=draws, stats=stats, progress=progress)
        self.state, self.progress = state, progress
        self.blocks.append(block)
        if self.store is not None:
            self._pending.append((block, arrays))
            if (self.done and self.checkpoint_at_end) or time.monotonic() - self._written_at >= self.checkpoint_seconds:
                self.checkpoint()
        self.gradient_evaluations += gradients
        # aim blocks at block_seconds; grow at most 8x at a time (the first block includes compiling)
        self.next_size = int(max(1, min(self.program.max_block, self.next_size * 8,
                                        todo * self.block_seconds / max(elapsed, 1e-6))))
        return block

    def checkpoint(self) -> None:
        """Queue the blocks run since the last write as one block file (written off this thread): their draws and
        stats concatenated, the state and position after the last, their iterations and gradients summed."""
        if self.store is None or not self._pending:
            return
        blocks = [b for b, _ in self._pending]
        last = blocks[-1].progress
        progress = dataclasses.replace(last, block_warmup=sum(b.progress.block_warmup for b in blocks),
                                       block_sampling=sum(b.progress.block_sampling for b in blocks),
                                       block_gradients=sum(b.progress.block_gradients for b in blocks))
        draws = {k: np.concatenate([b.draws[k] for b in blocks]) for k in blocks[-1].draws}
        stats = {k: np.concatenate([b.stats[k] for b in blocks]) for k in blocks[-1].stats}
        self.store.save(self._files, self._pending[-1][1], draws, stats,
                        _meta(self.fingerprint, self.chain, progress))
        self._files += 1
        self._pending.clear()
        self._written_at = time.monotonic()

    def flush(self) -> None:
        """Checkpoint the blocks not yet written and wait until they are on disk."""
        if self.store is not None:
            self.checkpoint()
            self.store.flush()

    def result(self) -> ChainDraws:
        """The kept draws and stats up to `total` (restored and run), concatenated; a chain restored from a
        longer run gives the first ones only, as if it had stopped there. Its last checkpoints may still be
        being written (a reload waits for them)."""
        blocks = [*self.restored, *self.blocks]
        n = self.settings.kept(self.total - self.settings.warmup)
        return ChainDraws(
            draws={k: np.concatenate([b.draws[k] for b in blocks])[:n] for k in self.program.outputs.values()},
            stats={k: np.concatenate([b.stats[k] for b in blocks])[:n] for k in STAT_NAMES},
            gradient_evaluations=self.gradient_evaluations,
        )

    def snapshot(self) -> ChainSnapshot:
        """State, progress and every kept draw so far: what continues this chain on another machine."""
        blocks = [*self.restored, *self.blocks]
        return ChainSnapshot(
            state=self.state.to_arrays(), progress=self.progress,
            draws={k: np.concatenate([b.draws[k] for b in blocks]) for k in self.program.outputs.values()},
            stats={k: np.concatenate([b.stats[k] for b in blocks]) for k in STAT_NAMES})


def _phase(done: int, warmup: int, total: int) -> str:
    return "done" if done >= total else ("warmup" if done < warmup else "sampling")


def _towards(progress: Progress, warmup: int, total: int) -> Progress:
    """`progress` of a chain now running to `total` iterations."""
    return dataclasses.replace(progress, of=total, phase=_phase(progress.iteration, warmup, total))


def _meta(fingerprint: str, chain: int, progress: Progress) -> dict[str, Any]:
    return {"job": fingerprint, "chain": chain, "iteration": progress.iteration,
            "progress": dataclasses.asdict(progress)}


def _restore(resumed: Resumed, shapes: SamplerState, store: ChainStore,
             fingerprint: str) -> tuple[SamplerState, list[Block]]:
    """The state and blocks of a checkpoint, checked against the job and the model's state shapes."""
    if resumed.meta.get("job") != fingerprint:
        raise CheckpointMismatchError(f"{store.dir}: checkpoint of another job")
    try:
        state = SamplerState.from_arrays(resumed.state, like=shapes)
        progress = [Progress(**meta["progress"]) for meta in resumed.metas]
    except CheckpointMismatchError as exc:
        raise CheckpointMismatchError(f"{store.dir}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise CheckpointMismatchError(f"{store.dir}: block metadata without a valid progress record") from exc
    blocks = [Block(draws=d, stats=s, progress=p)
              for d, s, p in zip(resumed.draws, resumed.stats, progress, strict=True)]
    if int(state.iteration) != blocks[-1].progress.iteration:
        raise CheckpointMismatchError(f"{store.dir}: sampler state and block metadata disagree on the iteration")
    return state, blocks


def _stats(raw: dict[str, np.ndarray], todo: int, kept: np.ndarray) -> dict[str, np.ndarray]:
    out = {k: np.asarray(raw[k][:todo][kept]) for k in STAT_NAMES if k in raw}
    # NUTS tree depth from the number of leapfrog steps, as ArviZ's from_numpyro does
    out["tree_depth"] = np.floor(np.log2(np.maximum(out["n_steps"], 1))).astype(np.int64) + 1
    return out
