"""Running a chain to its end, asking one stop policy at every block boundary.

A policy sees the chain's progress before each block (the first included) and
answers why to stop, or None to go on. A stop writes the checkpoint of the blocks
finished and not yet written, then raises `Stopped`, so the chain resumes from its
last finished block bit for bit.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

from service.exceptions import StopRequested
from workers.chain import Block, Chain, ChainDraws, Progress


class StopReason(StrEnum):
    """Why a chain stopped before its end."""

    CANCELLED = "cancelled"
    """The job was cancelled."""
    DELETED = "deleted"
    """The job was deleted."""
    TIMEOUT = "timeout"
    """The job ran past its deadline."""
    SHUTDOWN = "shutdown"
    """The process is shutting down (SIGTERM, Ctrl-C); the chain resumes from its checkpoint later."""


class StopPolicy(Protocol):
    def __call__(self, progress: Progress) -> StopReason | None:
        """Why the chain should stop before its next block, or None to run it."""


class Stopped(StopRequested):
    """A chain stopped at a block boundary; `reason` says why."""

    def __init__(self, reason: StopReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def run(chain: Chain, policy: StopPolicy | None = None,
        on_block: Callable[[Block], None] | None = None) -> ChainDraws:
    """Step `chain` until done; ask `policy` before every block (the first included) and raise Stopped
    with its reason when it answers one, its checkpoints on disk. `on_block` sees every block as it finishes (its
    checkpoint may be written with later blocks: `Chain.checkpoint_seconds`). Whatever is raised, the blocks
    finished are checkpointed first (a failing write does not hide the error)."""
    try:
        while not chain.done:
            reason = policy(chain.progress) if policy is not None else None
            if reason is not None:
                chain.flush()
                raise Stopped(reason, f"chain {chain.chain} stopped at iteration {chain.progress.iteration}: "
                                      f"{reason}")
            block = chain.step()
            if on_block is not None:
                on_block(block)
    except Exception:
        with contextlib.suppress(Exception):
            chain.flush()
        raise
    return chain.result()


def event_policy(event: threading.Event, reason: StopReason = StopReason.SHUTDOWN) -> StopPolicy:
    """Stop with `reason` once `event` is set (a signal handler sets it)."""

    def policy(progress: Progress) -> StopReason | None:
        return reason if event.is_set() else None

    return policy


def first_of(*policies: StopPolicy) -> StopPolicy:
    """The first reason any of `policies` gives, asked in order."""

    def policy(progress: Progress) -> StopReason | None:
        for p in policies:
            if (reason := p(progress)) is not None:
                return reason
        return None

    return policy
