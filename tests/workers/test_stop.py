"""Stop policies: asked before every block, the reason carried by the exception, the chain resumable."""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.exceptions import StopRequested
from service.language.validate import validate
from service.sampler import SamplerSettings
from tests.workers.test_engine import SMALL, assert_same_draws

pytestmark = pytest.mark.usefixtures("jax_ready")

SETTINGS = SamplerSettings(**SMALL)  # 150 warmup + 100 draws


def at_iteration(k: int, reason: Any) -> Any:
    return lambda progress: reason if progress.iteration >= k else None


@pytest.mark.parametrize("every", [0.0, 60.0], ids=["every-block", "coalesced"])
@pytest.mark.parametrize(("k", "phase"), [(37, "warmup"), (180, "sampling")])
def test_a_policy_stop_is_resumed_bit_identically(eight_schools: dict[str, Any], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, k: int, phase: str,
                                                  every: float) -> None:
    """Checkpointed every block, or all blocks at the stop as one file (checkpoint_seconds not reached)."""
    from workers import program
    from workers.chain import Chain
    from workers.checkpoint import ChainStore
    from workers.engine import Engine
    from workers.stop import Stopped, StopReason, run

    model = validate(eight_schools)
    reference = Engine().run_chain(model, SETTINGS, seed=11, chain=1)
    store = ChainStore(tmp_path, 1)
    chain = Chain.open(model, SETTINGS, seed=11, chain=1, store=store, fingerprint="job", block_seconds=1.0,
                       max_block=20, checkpoint_seconds=every)
    assert chain.restored == [] and chain.progress.iteration == 0 and not chain.done
    with pytest.raises(Stopped) as info:
        run(chain, at_iteration(k, StopReason.TIMEOUT))
    assert isinstance(info.value, StopRequested) and info.value.reason is StopReason.TIMEOUT
    assert str(info.value) == f"chain 1 stopped at iteration {chain.progress.iteration}: timeout"
    assert k <= chain.progress.iteration < k + 20 and chain.progress.phase == phase
    assert len(chain.blocks) > 2 and len(store.blocks()) == (len(chain.blocks) if every == 0 else 1)

    # as in a new process: a program never used, and a resume that runs no init
    monkeypatch.setattr(program, "_programs", OrderedDict())
    monkeypatch.setattr(program.Program, "init", lambda *a: pytest.fail("a resume ran init"))
    resumed = Chain.open(model, SETTINGS, seed=11, chain=1, store=store, fingerprint="job", block_seconds=0.01,
                         max_block=33)
    unblocked = {"block_warmup": 0, "block_sampling": 0, "block_gradients": 0}  # the file's blocks, summed
    assert dataclasses.replace(resumed.progress, **unblocked) == dataclasses.replace(chain.progress, **unblocked)
    if every == 0:
        assert resumed.progress == chain.progress
    if every == 0:
        assert [b.progress for b in resumed.restored] == [b.progress for b in chain.blocks]
    else:  # one file: the blocks' draws end to end, their iterations and gradients summed
        (one,) = resumed.restored
        assert one.progress.block_warmup + one.progress.block_sampling == chain.progress.iteration
        assert one.progress.block_gradients == chain.progress.gradients
        for name, values in one.draws.items():
            assert np.array_equal(values, np.concatenate([b.draws[name] for b in chain.blocks])), name
    seen: list[Any] = []
    result = run(resumed, on_block=seen.append)
    assert resumed.done and seen[-1].progress.phase == "done" and seen[-1].progress.iteration == 250
    assert_same_draws(reference.draws, result.draws)
    assert_same_draws(reference.stats, result.stats)


def test_the_policy_is_asked_before_the_first_block(eight_schools: dict[str, Any]) -> None:
    from workers.chain import Chain
    from workers.stop import Stopped, StopReason, run

    chain = Chain.open(validate(eight_schools), SETTINGS, seed=11, chain=0, store=None, fingerprint="",
                       block_seconds=1.0, max_block=20)
    asked: list[Any] = []

    def cancel(progress: Any) -> StopReason:
        asked.append(progress)
        return StopReason.CANCELLED

    with pytest.raises(Stopped, match="stopped at iteration 0: cancelled") as info:
        run(chain, cancel)
    assert info.value.reason is StopReason.CANCELLED
    assert [p.iteration for p in asked] == [0] and chain.blocks == []


def test_event_policy_and_first_of() -> None:
    from workers.chain import Progress
    from workers.stop import StopReason, event_policy, first_of

    progress = Progress(0, "warmup", 5, 10, 0, 0.1)
    event = threading.Event()
    shutdown = event_policy(event)
    combined = first_of(at_iteration(6, StopReason.TIMEOUT), shutdown, at_iteration(0, StopReason.DELETED))
    assert shutdown(progress) is None
    assert combined(progress) is StopReason.DELETED
    event.set()
    assert shutdown(progress) is StopReason.SHUTDOWN
    assert combined(progress) is StopReason.SHUTDOWN
    assert first_of(at_iteration(6, StopReason.TIMEOUT))(progress) is None


@pytest.mark.parametrize("at_end", [True, False], ids=["run", "worker"])
def test_a_finished_chain_writes_its_end_only_when_asked(eight_schools: dict[str, Any], tmp_path: Path,
                                                         at_end: bool) -> None:
    """`chainyard run` keeps the whole chain in its directory; a worker (its files dropped once the draws are in
    Redis) writes by time only, and a rerun from what it left resumes or restarts to the same draws."""
    from workers.chain import Chain
    from workers.checkpoint import ChainStore
    from workers.stop import run

    model = validate(eight_schools)
    store = ChainStore(tmp_path, 0)
    chain = Chain.open(model, SETTINGS, seed=12, chain=0, store=store, fingerprint="job", block_seconds=1.0,
                       max_block=20, checkpoint_seconds=60.0, checkpoint_at_end=at_end)
    first = run(chain)
    store.flush()
    assert len(chain.blocks) > 2 and len(store.blocks()) == (1 if at_end else 0)
    again = Chain.open(model, SETTINGS, seed=12, chain=0, store=store, fingerprint="job", block_seconds=1.0,
                       max_block=20, checkpoint_seconds=60.0)
    assert again.done is at_end and len(again.restored) == (1 if at_end else 0)
    assert_same_draws(first.draws, run(again).draws)
