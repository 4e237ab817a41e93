"""Checkpointed NUTS for a whole job: every chain, several at once, each resumed from its checkpoint.

The pieces: `workers.program` compiles numpyro's kernel into one block function
per model structure and settings; `workers.chain` starts or resumes one chain and
steps it block by block, checkpointing every few seconds; `workers.stop` runs a chain to its
end and asks a stop policy at every block boundary. This module drives them for
`chainyard run`, the tests and the benchmarks.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service import until
from service.defaults import CHECKPOINT_SECONDS
from service.language.ir import Model
from service.sampler import SamplerSettings
from service.until import Round
from workers.chain import Block, Chain, ChainDraws, ChainSnapshot, Progress, chain_key, job_fingerprint
from workers.checkpoint import ChainStore, claim_directory
from workers.program import STAT_NAMES, Program, program_for
from workers.state import WarmStart
from workers.stop import event_policy, run

__all__ = ["STAT_NAMES", "BlockFn", "ChainDraws", "Engine", "Fit", "Program", "Progress", "ProgressFn",
           "StartFn", "chain_key", "job_fingerprint", "program_for"]

ProgressFn = Callable[[Progress], None]
BlockFn = Callable[[dict[str, np.ndarray], dict[str, np.ndarray], Progress], None]
"""Called after each block: (kept draws, sample stats, progress); raise to stop."""
StartFn = Callable[[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]], None]
"""Called once before sampling with the draws and stats of blocks restored from a checkpoint."""


@dataclass
class Fit:
    """A finished job: draws and stats stacked (chain, draw, *shape)."""

    model: Model
    settings: SamplerSettings
    seed: int
    draws: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    timings: dict[str, float] = field(default_factory=dict)
    gradient_evaluations: int = 0
    """Gradient evaluations run by this call (restored blocks not counted)."""
    warmup_gradients: int = 0
    """Gradient evaluations of the chains' warmups, restored blocks included."""
    rounds: list[Round] = field(default_factory=list)
    """The decisions of `until`, one per round (empty without it)."""
    stopped: str | None = None
    """Why sampling stopped, with `until`."""
    states: list[dict[str, np.ndarray]] = field(default_factory=list)
    """Each chain's final sampler state (`SamplerState.to_arrays()`): what a warm start or an extension needs."""


@dataclass(kw_only=True)
class Engine:
    """Runs jobs' chains; holds the knobs that do not change draws."""

    block_seconds: float = 1.0
    max_block: int = 1000
    threads: int = 0
    checkpoint_seconds: float = CHECKPOINT_SECONDS
    checkpoint_at_end: bool = True
    """`Chain.checkpoint_at_end`: a finished job's directory holds its whole chains (rerun returns them, a longer
    run continues them); False writes by time only, as the service's workers do."""

    def open_chain(self, model: Model, settings: SamplerSettings, *, seed: int, chain: int,
                   store: ChainStore | None = None, fingerprint: str = "", draws: int | None = None,
                   base: ChainSnapshot | None = None, warm: WarmStart | None = None) -> Chain:
        """Chain `chain` of a job, fresh (at `warm` if given) or resumed from `store` or `base`, to run to
        `draws` (default settings.draws)."""
        return Chain.open(model, settings, seed=seed, chain=chain, store=store, fingerprint=fingerprint,
                          block_seconds=self.block_seconds, max_block=self.max_block, draws=draws, base=base,
                          warm=warm, checkpoint_seconds=self.checkpoint_seconds,
                          checkpoint_at_end=self.checkpoint_at_end)

    def run_chain(
        self,
        model: Model,
        settings: SamplerSettings,
        *,
        seed: int,
        chain: int,
        store: ChainStore | None = None,
        fingerprint: str = "",
        progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
        on_block: BlockFn | None = None,
        on_start: StartFn | None = None,
    ) -> ChainDraws:
        """Run (or resume from `store`) one chain to the end; StopRequested at a block boundary."""
        opened = self.open_chain(model, settings, seed=seed, chain=chain, store=store, fingerprint=fingerprint)
        if on_start is not None:
            on_start([b.draws for b in opened.restored], [b.stats for b in opened.restored])

        def each(block: Block) -> None:
            if progress is not None:
                progress(block.progress)
            if on_block is not None:
                on_block(block.draws, block.stats, block.progress)

        return run(opened, event_policy(stop) if stop is not None else None, on_block=each)

    def run(
        self,
        model: Model,
        settings: SamplerSettings,
        *,
        checkpoint_dir: Path | None = None,
        progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
        warm: Sequence[WarmStart] | None = None,
    ) -> Fit:
        """Run every chain of a job, several at once on the CPU cores, resuming from checkpoints; with
        `settings.until`, in rounds, each ended by one decision from the draws so far. `warm`: chain c starts
        at warm[c % len(warm)] (a warm start). The chains' last checkpoints may still be being written when this
        returns (off the sampling thread; `ChainStore.flush` waits, and so does a rerun's load)."""
        started = time.perf_counter()
        seed = settings.seed
        fingerprint = ""
        if checkpoint_dir is not None:
            # an unseeded job resumed from its directory keeps the seed its first run chose
            manifest_seed = seed if seed is not None else _stored_seed(checkpoint_dir)
            seed = manifest_seed if manifest_seed is not None else secrets.randbelow(2**32)
            fingerprint = job_fingerprint(model, settings, seed)
            claim_directory(checkpoint_dir, {"job": fingerprint, "seed": seed})
        elif seed is None:
            seed = secrets.randbelow(2**32)
        threads = self.threads or os.cpu_count() or 1
        targets = until.targets(settings)

        def open_one(c: int) -> Chain:
            store = ChainStore(checkpoint_dir, c) if checkpoint_dir is not None else None
            return self.open_chain(model, settings, seed=seed, chain=c, store=store, fingerprint=fingerprint,
                                   draws=targets[0], warm=warm[c % len(warm)] if warm else None)

        def each(block: Block) -> None:
            if progress is not None:
                progress(block.progress)

        def advance(chain: Chain, draws: int) -> ChainDraws:
            chain.extend_to(draws)
            return run(chain, event_policy(stop) if stop is not None else None, on_block=each)

        rounds: list[Round] = []
        with ThreadPoolExecutor(max_workers=min(threads, settings.chains)) as pool:
            opened = list(pool.map(open_one, range(settings.chains)))
            for draws in targets:
                results = list(pool.map(advance, opened, [draws] * len(opened)))
                if settings.until is None:
                    break
                rounds.append(until.decide(settings.until, _stacked(results), per_chain=draws))
                if rounds[-1].stop:
                    break
        return Fit(
            model=model,
            settings=settings,
            seed=seed,
            draws=_stacked(results),
            stats={k: np.stack([c.stats[k] for c in results]) for k in STAT_NAMES},
            timings={"wall": time.perf_counter() - started},
            gradient_evaluations=sum(c.gradient_evaluations for c in results),
            warmup_gradients=sum(c.progress.warmup_gradients for c in opened),
            rounds=rounds,
            stopped=until.explain(rounds[-1], settings.until) if rounds and settings.until else None,
            states=[c.state.to_arrays() for c in opened],
        )


def _stacked(chains: list[ChainDraws]) -> dict[str, np.ndarray]:
    return {k: np.stack([c.draws[k] for c in chains]) for k in chains[0].draws}


def _stored_seed(checkpoint_dir: Path) -> int | None:
    path = checkpoint_dir / "job.json"
    if not path.exists():
        return None
    seed = json.loads(path.read_text()).get("seed")
    return int(seed) if seed is not None else None
