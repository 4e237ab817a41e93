"""Big values in Redis as lists of bounded chunks (one Redis value is at most 512 MB, and a big one stalls
the server while it is copied): a chain's draws and a finished job's files. A value is written to a staging
key with a TTL and renamed onto its key only once complete, by a script that checks the job still exists,
so readers see all of a value or none of it and no chunk outlives its job."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

from service import keys

STAGING_SECONDS = 3600
"""A staging key left by a writer that died expires after this long."""

_COMMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('DEL', KEYS[3]) else redis.call('RENAME', KEYS[2], KEYS[3]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[3], ttl) else redis.call('PERSIST', KEYS[3]) end
return 1
"""
"""KEYS: the job record, the staging key, the final key. An empty value leaves no staging key (RPUSH of
nothing), so it commits as a deletion of the final key."""


def stage(redis: Any, key: str, blob: bytes, *, chunk_bytes: int) -> str:
    """Write `blob` to a new staging key for `key`, one chunk per command (so no command carries more than
    `chunk_bytes`); the staging key's name, for `commit` (or a script that renames it itself)."""
    staging = keys.staging(key, secrets.token_hex(6))
    for start in range(0, len(blob), chunk_bytes):
        redis.rpush(staging, blob[start:start + chunk_bytes])
        if start == 0:
            redis.expire(staging, STAGING_SECONDS)
    return staging


def commit(redis: Any, job_id: str, staging: str, key: str) -> bool:
    """Rename a staged value onto `key` if the job still exists (False: it was deleted; nothing is left)."""
    return bool(redis.eval(_COMMIT, 3, keys.job(job_id), staging, key))


def write(redis: Any, job_id: str, key: str, blob: bytes, *, chunk_bytes: int) -> bool:
    """Store `blob` at `key` in chunks, atomically for readers; False if the job is gone."""
    return commit(redis, job_id, stage(redis, key, blob, chunk_bytes=chunk_bytes), key)


def read(redis: Any, key: str) -> bytes | None:
    """The whole value at `key`, or None if there is none."""
    parts = redis.lrange(key, 0, -1)
    return b"".join(bytes(p) for p in parts) if parts else None


def chunks(redis: Any, key: str) -> Iterator[bytes]:
    """The value at `key` chunk by chunk (a download holds one chunk at a time, not the whole file)."""
    for i in range(int(redis.llen(key))):
        part = redis.lindex(key, i)
        if part is None:  # deleted while read
            return
        yield bytes(part)
