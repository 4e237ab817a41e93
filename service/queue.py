"""The chain queue: one Redis stream of chain tasks and its consumer group (style rule 13). Every stream verb
chainyard uses is here; the stream's lifetime is documented at `keys.TASKS`.

Delivery is at-least-once: a task stays pending with the worker that claimed it until `ack`, which the
worker calls only once the chain's draws are stored (or the chain need not run). A worker that dies leaves
its tasks pending; the same worker resumes them when it returns, another takes them after the visibility
timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from service import keys
from service.codec import text


@dataclass(frozen=True)
class Task:
    """One chain of one job, as delivered to a worker."""

    entry_id: str
    """The stream entry's id (what claim and ack name)."""
    job_id: str
    chain: int


@dataclass(frozen=True)
class Depth:
    waiting: int
    """Tasks not yet delivered to any worker."""
    pending: int
    """Tasks claimed by a worker and not yet acknowledged."""


class ChainQueue:
    """The stream `keys.TASKS` and its group `keys.GROUP`."""

    def __init__(self, redis: Any, *, visibility_timeout: float) -> None:
        self.r = redis
        self.visibility_ms = int(visibility_timeout * 1000)

    def ensure_group(self) -> None:
        """Create the stream and its group if they do not exist (every worker calls this at start)."""
        try:
            self.r.xgroup_create(keys.TASKS, keys.GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @staticmethod
    def put(pipe: Any, job_id: str, chains: int) -> None:
        """Queue a job's chains inside the caller's pipeline (so they appear with the job record or not at all)."""
        for c in range(chains):
            pipe.xadd(keys.TASKS, {"job": job_id, "chain": c})

    def claim_next(self, consumer: str, *, block_ms: int = 1000) -> Task | None:
        """The next task for `consumer`: its own pending task first (a restarted worker resumes its chains
        from its volume), then one idle past the visibility timeout (its worker is gone), then a new one
        (waiting up to block_ms). None if there is nothing to do."""
        own = self.r.xpending_range(keys.TASKS, keys.GROUP, min="-", max="+", count=1, consumername=consumer)
        if own:
            entry_id = text(own[0]["message_id"])
            entries = self.r.xrange(keys.TASKS, entry_id, entry_id)
            if entries:
                return _task(*entries[0])
            self.r.xack(keys.TASKS, keys.GROUP, entry_id)  # deleted meanwhile: nothing to resume
            return None
        claimed = self.r.xautoclaim(keys.TASKS, keys.GROUP, consumer, min_idle_time=self.visibility_ms,
                                    start_id="0-0", count=1)
        if claimed[1]:
            return _task(*claimed[1][0])
        fresh = self.r.xreadgroup(keys.GROUP, consumer, {keys.TASKS: ">"}, count=1, block=block_ms)
        if fresh and fresh[0][1]:
            return _task(*fresh[0][1][0])
        return None

    def keep_claimed(self, consumer: str, task: Task) -> None:
        """Reset the task's idle time, so that no other worker takes it for abandoned (call a few times per
        visibility timeout while its chain runs)."""
        self.r.xclaim(keys.TASKS, keys.GROUP, consumer, min_idle_time=0, message_ids=[task.entry_id], justid=True)

    def ack(self, task: Task) -> None:
        """The task is done: acknowledge and delete its entry, atomically (a crash leaves both or neither)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.xack(keys.TASKS, keys.GROUP, task.entry_id)
        pipe.xdel(keys.TASKS, task.entry_id)
        pipe.execute()

    def depth(self) -> Depth:
        """Waiting and pending tasks, from counts Redis keeps exactly (acknowledged entries are deleted, so
        every entry is waiting or pending), not from the group's `lag`, which Redis cannot always compute."""
        pipe = self.r.pipeline(transaction=True)
        pipe.xlen(keys.TASKS)
        pipe.xpending(keys.TASKS, keys.GROUP)
        length, pending = pipe.execute(raise_on_error=False)
        count = int(pending["pending"]) if isinstance(pending, dict) else 0  # no group yet: none pending
        return Depth(waiting=max(0, int(length) - count), pending=count)

    def length(self) -> int:
        """Entries in the stream: tasks not yet done."""
        return int(self.r.xlen(keys.TASKS))


def _task(entry_id: Any, fields: dict[Any, Any]) -> Task:
    decoded = {text(k): text(v) for k, v in fields.items()}
    return Task(entry_id=text(entry_id), job_id=decoded["job"], chain=int(decoded["chain"]))
