"""The chain queue (style rule 13): every Redis verb on chain tasks is here; the keys' lifetimes are documented
at `keys.TASKS`.

Two stages, so that tenants are served fairly:
- queued: each tenant's tasks wait in its own list (`keys.tenant_queue`), in submission order;
- dispatched: a few tasks at a time move to the stream `keys.TASKS` (consumer group `keys.GROUP`), taken
  round-robin over the tenants with queued tasks (`keys.TENANT_RING`), skipping a tenant at its running-chains
  quota. The stream holds at most `window` undelivered tasks, so one tenant's backlog of hundreds of jobs
  waits in its own list and another tenant's job is next after at most `window` tasks: it starts as soon as
  a worker finishes the chain it runs.

Delivery from the stream is at-least-once: a task stays pending with the worker that claimed it until `ack`,
which the worker calls only once the chain's draws are stored (or the chain need not run). A worker that dies
leaves its tasks pending; the same worker resumes them when it returns, another takes them after the
visibility timeout. Dispatching, acknowledging and the per-tenant counts change together in Lua scripts.
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
    tenant: str = ""


@dataclass(frozen=True)
class Depth:
    waiting: int
    """Tasks not yet delivered to any worker: queued per tenant, or dispatched and not yet claimed."""
    pending: int
    """Tasks claimed by a worker and not yet acknowledged."""


_ENQUEUE = """
for i = 1, #ARGV - 1 do redis.call('RPUSH', KEYS[1], ARGV[i]) end
if not redis.call('LPOS', KEYS[2], ARGV[#ARGV]) then redis.call('RPUSH', KEYS[2], ARGV[#ARGV]) end
return 1
"""
"""KEYS: the tenant's queue, the ring; ARGV: the tasks ('job:chain'), then the tenant."""

_DISPATCH = """
local waiting = redis.call('XLEN', KEYS[1])
local ok, info = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[2])
if ok then waiting = waiting - info[1] end
local window = tonumber(ARGV[1])
local added = 0
local visits = redis.call('LLEN', KEYS[2])
while waiting < window and visits > 0 do
  visits = visits - 1
  local tenant = redis.call('LMOVE', KEYS[2], KEYS[2], 'LEFT', 'RIGHT')
  local queue = ARGV[3] .. tenant
  local limit = tonumber(redis.call('HGET', KEYS[4], tenant) or '0')
  local inflight = tonumber(redis.call('HGET', KEYS[3], tenant) or '0')
  if redis.call('LLEN', queue) == 0 then
    redis.call('LREM', KEYS[2], 0, tenant)
  elseif limit == 0 or inflight < limit then
    local task = redis.call('LPOP', queue)
    local sep = string.find(task, ':', 1, true)
    redis.call('XADD', KEYS[1], '*', 'job', string.sub(task, 1, sep - 1), 'chain', string.sub(task, sep + 1),
               'tenant', tenant)
    redis.call('HINCRBY', KEYS[3], tenant, 1)
    waiting = waiting + 1
    added = added + 1
    if redis.call('LLEN', queue) == 0 then redis.call('LREM', KEYS[2], 0, tenant) end
    visits = redis.call('LLEN', KEYS[2])
  end
end
return added
"""
"""KEYS: stream, ring, in-flight counts, running limits; ARGV: window, group, the tenant-queue key prefix.
(The tenant queues' names are built in the script: chainyard runs on one Redis, not a cluster.)"""

_ACK = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if acked == 1 and ARGV[3] ~= '' then
  if redis.call('HINCRBY', KEYS[2], ARGV[3], -1) <= 0 then redis.call('HDEL', KEYS[2], ARGV[3]) end
end
return acked
"""
"""KEYS: stream, in-flight counts; ARGV: group, entry id, tenant."""


class ChainQueue:
    """The tenants' task lists, the round-robin ring and the stream of dispatched tasks."""

    def __init__(self, redis: Any, *, visibility_timeout: float, window: int = 1) -> None:
        self.r = redis
        self.visibility_ms = int(visibility_timeout * 1000)
        self.window = window

    def ensure_group(self) -> None:
        """Create the stream and its group if they do not exist (every worker calls this at start)."""
        try:
            self.r.xgroup_create(keys.TASKS, keys.GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @staticmethod
    def put(pipe: Any, tenant: str, job_id: str, chains: int) -> None:
        """Queue a job's chains inside the caller's pipeline (so they appear with the job record or not at
        all); call `dispatch` after the pipeline ran."""
        pipe.eval(_ENQUEUE, 2, keys.tenant_queue(tenant), keys.TENANT_RING,
                  *[f"{job_id}:{c}" for c in range(chains)], tenant)

    @staticmethod
    def limit(pipe: Any, tenant: str, running_chains: int) -> None:
        """The most chains of `tenant` dispatched at once (0: no limit), as of its latest submission."""
        pipe.hset(keys.TENANT_LIMITS, tenant, running_chains)

    @staticmethod
    def drop(pipe: Any, tenant: str, job_id: str, chains: int) -> None:
        """Remove a job's chains that are still queued (it ended before they ran)."""
        for c in range(chains):
            pipe.lrem(keys.tenant_queue(tenant), 0, f"{job_id}:{c}")

    def queued(self, tenant: str) -> int:
        """A tenant's chains not yet dispatched."""
        return int(self.r.llen(keys.tenant_queue(tenant)))

    def in_flight(self, tenant: str) -> int:
        """A tenant's chains dispatched and not yet acknowledged (waiting in the stream or running)."""
        return int(self.r.hget(keys.TENANT_INFLIGHT, tenant) or 0)

    def dispatch(self) -> int:
        """Move queued tasks to the stream, round-robin over tenants, until `window` wait there; how many."""
        return int(self.r.eval(_DISPATCH, 4, keys.TASKS, keys.TENANT_RING, keys.TENANT_INFLIGHT, keys.TENANT_LIMITS,
                               self.window, keys.GROUP, keys.tenant_queue("")))

    def claim_next(self, consumer: str, *, block_ms: int = 1000) -> Task | None:
        """The next task for `consumer`: its own pending task first (a restarted worker resumes its chains
        from its volume), then one idle past the visibility timeout (its worker is gone), then a newly
        dispatched one (waiting up to block_ms). None if there is nothing to do."""
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
        self.dispatch()
        fresh = self.r.xreadgroup(keys.GROUP, consumer, {keys.TASKS: ">"}, count=1, block=block_ms)
        if fresh and fresh[0][1]:
            self.dispatch()  # refill the window for the next idle worker
            return _task(*fresh[0][1][0])
        return None

    def keep_claimed(self, consumer: str, task: Task) -> None:
        """Reset the task's idle time, so that no other worker takes it for abandoned (call a few times per
        visibility timeout while its chain runs)."""
        self.r.xclaim(keys.TASKS, keys.GROUP, consumer, min_idle_time=0, message_ids=[task.entry_id], justid=True)

    def ack(self, task: Task) -> None:
        """The task is done: acknowledge and delete its entry and count it out of its tenant's in-flight
        chains, atomically (a crash leaves all or nothing); then dispatch the next."""
        self.r.eval(_ACK, 2, keys.TASKS, keys.TENANT_INFLIGHT, keys.GROUP, task.entry_id, task.tenant)
        self.dispatch()

    def depth(self) -> Depth:
        """Waiting and pending tasks, from counts Redis keeps exactly (acknowledged entries are deleted, so
        every stream entry is waiting or pending), not from the group's `lag`, which Redis cannot always
        compute (after deletions, or an AOF reload)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.xlen(keys.TASKS)
        pipe.xpending(keys.TASKS, keys.GROUP)
        pipe.lrange(keys.TENANT_RING, 0, -1)
        length, pending, ring = pipe.execute(raise_on_error=False)
        count = int(pending["pending"]) if isinstance(pending, dict) else 0  # no group yet: none pending
        queued = 0
        if ring:
            lengths = self.r.pipeline()
            for tenant in ring:
                lengths.llen(keys.tenant_queue(text(tenant)))
            queued = sum(int(n) for n in lengths.execute())
        return Depth(waiting=max(0, int(length) - count) + queued, pending=count)

    def length(self) -> int:
        """Entries in the stream: tasks dispatched and not yet done."""
        return int(self.r.xlen(keys.TASKS))


def _task(entry_id: Any, fields: dict[Any, Any]) -> Task:
    decoded = {text(k): text(v) for k, v in fields.items()}
    return Task(entry_id=text(entry_id), job_id=decoded["job"], chain=int(decoded["chain"]),
                tenant=decoded.get("tenant", ""))
