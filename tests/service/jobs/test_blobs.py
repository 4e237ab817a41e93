"""Big values as chunk lists against a real Redis: bounded chunks, all-or-nothing for readers, nothing left
by a deleted job or a dead writer."""

from __future__ import annotations

import numpy as np
from redis import Redis

from service import keys
from service.codec import pack_block, pack_state, unpack_block
from service.jobs import blobs
from service.jobs.chains import ChainWriter
from service.jobs.store import JobStore
from tests.service.jobs.conftest import keys_of, submit_eight_schools

STATE = pack_state({"position": np.zeros(2)}, {"iteration": 10})
def test_a_value_is_stored_in_bounded_chunks_and_read_back(redis: Redis, store: JobStore) -> None:
    job_id = submit_eight_schools(store)
    blob = np.random.default_rng(1).bytes(10_000)
    key = keys.result_file(job_id, "netcdf")
    assert blobs.write(redis, job_id, key, blob, chunk_bytes=3000)
    assert [len(c) for c in redis.lrange(key, 0, -1)] == [3000, 3000, 3000, 1000]
    assert blobs.read(redis, key) == blob and b"".join(blobs.chunks(redis, key)) == blob
    assert blobs.write(redis, job_id, key, b"new", chunk_bytes=3000)  # replaced whole
    assert blobs.read(redis, key) == b"new"
    assert not [k for k in redis.scan_iter(match="*staging*")]


def test_staging_is_invisible_and_expires(redis: Redis, store: JobStore) -> None:
    job_id = submit_eight_schools(store)
    key = keys.result_file(job_id, "draws")
    staging = blobs.stage(redis, key, b"x" * 5000, chunk_bytes=1000)  # the writer dies here
    assert blobs.read(redis, key) is None
    assert 0 < redis.ttl(staging) <= blobs.STAGING_SECONDS


def test_nothing_is_kept_for_a_deleted_job(redis: Redis, store: JobStore) -> None:
    job_id = submit_eight_schools(store)
    store.delete("t", job_id)
    assert not blobs.write(redis, job_id, keys.result_file(job_id, "netcdf"), b"y" * 5000, chunk_bytes=1000)
    draws = pack_block({"mu": np.arange(50.0)}, {"diverging": np.zeros(50, bool)})
    assert not ChainWriter(redis, chunk_bytes=100).save(job_id, 0, draws, STATE, chains=2, iterations=50, divergences=0)
    assert keys_of(redis, job_id) == []


def test_a_chains_draws_are_chunked_and_whole_again_for_assembly(redis: Redis, store: JobStore) -> None:
    job_id = submit_eight_schools(store)
    draws = {"theta": np.random.default_rng(2).normal(size=(400, 8))}
    blob = pack_block(draws, {"diverging": np.zeros(400, bool)})
    ChainWriter(redis, chunk_bytes=4096).save(job_id, 0, blob, STATE, chains=2, iterations=800, divergences=0)
    parts = redis.lrange(keys.chain_draws(job_id, 0), 0, -1)
    assert len(parts) > 1 and max(len(p) for p in parts) <= 4096
    got, _ = unpack_block(blobs.read(redis, keys.chain_draws(job_id, 0)) or b"")
    assert np.array_equal(got["theta"], draws["theta"])
    assert redis.ttl(keys.chain_draws(job_id, 0)) == -1  # persisted while the job runs
