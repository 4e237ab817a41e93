"""Every write a worker makes about a chain, each one Lua script guarded by the job's existence.

A job deleted while one of its chains runs stays deleted: a guarded write finds no job record and writes
nothing. A write to a job that has ended (its keys have a retention TTL) gives the keys it writes the job's
TTL, so no key outlives its job.
"""

from __future__ import annotations

import time
from typing import Any

from service import keys
from service.codec import text
from service.defaults import CHUNK_BYTES
from service.jobs import blobs
from service.jobs.record import ChainPhase, JobState

_KEEP_TTL = """
local function keep_ttl(...)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then for _, k in ipairs({...}) do redis.call('PEXPIRE', k, ttl) end end
end
"""
"""Shared by the scripts: the keys just written expire with the job record KEYS[1]."""

_ATTEMPT = _KEEP_TTL + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[2], 'worker', ARGV[1])
local n = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
keep_ttl(KEYS[2])
return n
"""

_RESET = _KEEP_TTL + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
for i = 1, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
keep_ttl(KEYS[2])
return 1
"""

_REPORT = _KEEP_TTL + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[2], 'phase', ARGV[2], 'iteration', ARGV[3], 'of', ARGV[4], 'divergences', ARGV[5],
           'step_size', ARGV[6])
keep_ttl(KEYS[2], KEYS[3])
return state
"""

_SAVE = _KEEP_TTL + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[5], KEYS[7])
  return 0
end
local stored = tonumber(redis.call('HGET', KEYS[2], 'stored') or '0')
if stored <= tonumber(ARGV[2]) then
  redis.call('RENAME', KEYS[5], KEYS[3])
  redis.call('RENAME', KEYS[7], KEYS[6])
  redis.call('PERSIST', KEYS[3])
  redis.call('PERSIST', KEYS[6])
  redis.call('HSET', KEYS[2], 'phase', ARGV[1], 'iteration', ARGV[2], 'of', ARGV[2], 'divergences', ARGV[3],
             'stored', ARGV[2], 'gradients', ARGV[6], 'warmup_gradients', ARGV[7])
  keep_ttl(KEYS[2], KEYS[3], KEYS[6])
else
  redis.call('DEL', KEYS[5], KEYS[7])
end
for i = 8, #KEYS do
  if redis.call('HGET', KEYS[i], 'phase') ~= 'done' or redis.call('HGET', KEYS[i], 'stored') ~= ARGV[2] then
    return 1
  end
end
if redis.call('HGET', KEYS[1], 'state') == 'running' then redis.call('ZADD', KEYS[4], 'NX', ARGV[4], ARGV[5]) end
return 2
"""
"""Move a chain's staged draws and state onto their keys and store its final progress (which also repairs
progress writes lost in a Redis outage), unless draws of more iterations are stored already (a stale task of
an earlier round: they stay); 2 when every chain of the job is done at these iterations (the job is then due
for assembly), 1 otherwise, 0 if the job is gone (the staged values are dropped)."""

_FIELDS = _KEEP_TTL + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV))
keep_ttl(KEYS[2])
return 1
"""


class ChainWriter:
    """The worker side of a job's chains in Redis."""

    def __init__(self, redis: Any, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.r = redis
        self.chunk_bytes = chunk_bytes

    def start_attempt(self, job_id: str, chain: int, worker: str) -> int | None:
        """Count an attempt at a chain (by `worker`); the attempts so far, or None if the job is gone."""
        n = self.r.eval(_ATTEMPT, 2, keys.job(job_id), keys.chain(job_id, chain), worker)
        return int(n) if n is not None else None

    def reset_live(self, job_id: str, chain: int, blobs: list[bytes]) -> None:
        """A chain (re)starts: its live blocks are those restored from its checkpoint."""
        self.r.eval(_RESET, 2, keys.job(job_id), keys.live_blocks(job_id, chain), *blobs)

    def report_block(self, job_id: str, chain: int, blob: bytes, *, phase: ChainPhase, iteration: int, of: int,
                     divergences: int, step_size: float) -> JobState | None:
        """Push a block's draws and the chain's progress; the job's state now (None: the job was deleted)."""
        state = self.r.eval(_REPORT, 3, keys.job(job_id), keys.chain(job_id, chain), keys.live_blocks(job_id, chain),
                            blob, phase.value, iteration, of, divergences, repr(step_size))
        return JobState(text(state)) if state else None

    def save(self, job_id: str, chain: int, blob: bytes, state: bytes, *, chains: int, iterations: int,
             divergences: int, gradients: int = 0, warmup_gradients: int = 0) -> bool:
        """Store a chain's draws (in chunks), its sampler state (`codec.pack_state`) and final progress after a
        round, before its task is acknowledged; True when all `chains` of the job are stored at `iterations`
        (it is then due for assembly). Nothing stays if the job is gone."""
        staging = blobs.stage(self.r, keys.chain_draws(job_id, chain), blob, chunk_bytes=self.chunk_bytes)
        state_staging = blobs.stage(self.r, keys.chain_state(job_id, chain), state, chunk_bytes=self.chunk_bytes)
        every = [keys.chain(job_id, c) for c in range(chains)]
        done = self.r.eval(_SAVE, 7 + chains, keys.job(job_id), keys.chain(job_id, chain),
                           keys.chain_draws(job_id, chain), keys.ASSEMBLY_DUE, staging,
                           keys.chain_state(job_id, chain), state_staging, *every,
                           ChainPhase.DONE.value, iterations, divergences, repr(time.time()), job_id, gradients,
                           warmup_gradients)
        return int(done) == 2

    def stored(self, job_id: str, chain: int) -> tuple[bytes, bytes] | None:
        """A chain's stored draws and state (what its next round or an extension continues); None if either
        is missing."""
        draws = blobs.read(self.r, keys.chain_draws(job_id, chain))
        state = blobs.read(self.r, keys.chain_state(job_id, chain))
        return (draws, state) if draws is not None and state is not None else None

    def record_error(self, job_id: str, chain: int, error: str) -> None:
        """An attempt failed and will be retried: keep its error for the job's failure message."""
        self._fields(job_id, chain, error=error)

    def fail(self, job_id: str, chain: int, error: str) -> None:
        """The chain cannot run (its job fails)."""
        self._fields(job_id, chain, phase=ChainPhase.FAILED.value, error=error)

    def last_error(self, job_id: str, chain: int) -> str | None:
        value = self.r.hget(keys.chain(job_id, chain), "error")
        return text(value) if value is not None else None

    def _fields(self, job_id: str, chain: int, **fields: str) -> None:
        flat = [x for kv in fields.items() for x in kv]
        self.r.eval(_FIELDS, 2, keys.job(job_id), keys.chain(job_id, chain), *flat)
