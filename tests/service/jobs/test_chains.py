"""Worker-side chain writes against a real Redis: guarded by the job's existence, expiring with the job."""

from __future__ import annotations

import numpy as np
from redis import Redis

from service import keys
from service.codec import pack_block, pack_state
from service.jobs.chains import ChainWriter
from service.jobs.record import ChainPhase, ChainProgress, JobState
from service.jobs.store import JobStore
from tests.service.jobs.conftest import keys_of, submit_eight_schools

STATE = pack_state({"position": np.zeros(2)}, {"iteration": 10})
BLOB = pack_block({"mu": np.zeros(3)}, {"diverging": np.zeros(3, bool)})


def every_write(writer: ChainWriter, job_id: str) -> None:
    """Each worker write, as the error paths and the sampling loop make them."""
    writer.start_attempt(job_id, 0, "worker-0")
    writer.reset_live(job_id, 0, [BLOB])
    writer.report_block(job_id, 0, BLOB, phase=ChainPhase.SAMPLING, iteration=5, of=10, divergences=0,
                        step_size=0.5)
    writer.record_error(job_id, 0, "RuntimeError: boom")
    writer.fail(job_id, 1, "initialization failed")
    writer.save(job_id, 1, BLOB, STATE, chains=2, iterations=10, divergences=0)


def test_writes_after_delete_leave_no_key(redis: Redis, store: JobStore) -> None:
    job_id = submit_eight_schools(store)
    assert keys_of(redis, job_id)
    store.delete("t", job_id)
    assert keys_of(redis, job_id) == []
    writer = ChainWriter(redis)
    every_write(writer, job_id)
    assert writer.start_attempt(job_id, 0, "w") is None
    assert writer.report_block(job_id, 0, BLOB, phase=ChainPhase.WARMUP, iteration=1, of=2, divergences=0,
                               step_size=1.0) is None
    assert writer.save(job_id, 0, BLOB, STATE, chains=2, iterations=10, divergences=0) is False
    assert keys_of(redis, job_id) == []


def test_writes_after_the_job_ended_expire_with_it(redis: Redis, store: JobStore) -> None:
    job_id = submit_eight_schools(store)
    redis.delete(keys.live_blocks(job_id, 0))  # as if never written before the job ended
    store.finish(job_id, JobState.CANCELLED, "cancelled by request")
    every_write(ChainWriter(redis), job_id)
    ttls = {k: redis.ttl(k) for k in keys_of(redis, job_id)}
    assert keys.live_blocks(job_id, 0).encode() in ttls and keys.chain_draws(job_id, 1).encode() in ttls
    assert all(0 < t <= 600 for t in ttls.values()), ttls


def test_progress_and_attempts_are_recorded(redis: Redis, store: JobStore) -> None:
    job_id = submit_eight_schools(store)
    writer = ChainWriter(redis)
    assert [writer.start_attempt(job_id, 1, "worker-1") for _ in range(3)] == [1, 2, 3]
    state = writer.report_block(job_id, 1, BLOB, phase=ChainPhase.SAMPLING, iteration=1500, of=2000,
                                divergences=2, step_size=0.25)
    assert state is JobState.QUEUED
    writer.record_error(job_id, 1, "OSError: no space left")
    chain = store.chains(store.get("t", job_id))[1]
    assert chain == ChainProgress(chain=1, phase=ChainPhase.SAMPLING, iteration=1500, of=2000, divergences=2,
                                  step_size=0.25, worker="worker-1", attempts=3, error="OSError: no space left")
    assert writer.last_error(job_id, 1) == "OSError: no space left"
    assert redis.llen(keys.live_blocks(job_id, 1)) == 1
    writer.reset_live(job_id, 1, [BLOB, BLOB])
    assert redis.llen(keys.live_blocks(job_id, 1)) == 2


def test_the_last_chain_stored_makes_the_job_due_for_assembly(redis: Redis, store: JobStore) -> None:
    job_id = submit_eight_schools(store)
    store.mark_running(job_id)
    writer = ChainWriter(redis)
    writer.report_block(job_id, 0, BLOB, phase=ChainPhase.SAMPLING, iteration=1200, of=2000, divergences=1,
                        step_size=0.5)  # a later progress write was lost (a Redis outage)
    assert writer.save(job_id, 0, BLOB, STATE, chains=2, iterations=2000, divergences=3) is False
    assert store.due_for_assembly(older_than=0) == []
    assert writer.save(job_id, 1, BLOB, STATE, chains=2, iterations=2000, divergences=0) is True
    assert store.due_for_assembly(older_than=0) == [job_id]
    assert store.due_for_assembly(older_than=60) == []  # give its own assembler time first
    chain = store.chains(store.get("t", job_id))[0]
    assert (chain.phase, chain.iteration, chain.of, chain.divergences) == (ChainPhase.DONE, 2000, 2000, 3)
    store.finish(job_id, JobState.FAILED, "x")
    assert store.due_for_assembly(older_than=0) == []


def test_a_stale_save_of_fewer_iterations_keeps_the_later_round(redis: Redis, store: JobStore) -> None:
    """A task of an earlier round finishing late (its worker was presumed dead) does not overwrite draws and state
    stored by a later round, and does not make the job look done at its iterations."""
    job_id = submit_eight_schools(store)
    store.mark_running(job_id)
    writer = ChainWriter(redis)
    later = pack_state({"position": np.ones(2)}, {"iteration": 3000})
    assert writer.save(job_id, 0, BLOB, later, chains=2, iterations=3000, divergences=0) is False
    assert writer.save(job_id, 1, BLOB, STATE, chains=2, iterations=2000, divergences=0) is False
    assert writer.save(job_id, 0, BLOB, STATE, chains=2, iterations=2000, divergences=0) is False
    stored = writer.stored(job_id, 0)
    assert stored is not None and stored[1] == later
    assert store.chains(store.get("t", job_id))[0].stored == 3000
    assert writer.save(job_id, 1, BLOB, later, chains=2, iterations=3000, divergences=0, gradients=70,
                       warmup_gradients=30) is True
    chain = store.chains(store.get("t", job_id))[1]
    assert (chain.stored, chain.gradients, chain.warmup_gradients) == (3000, 70, 30)


def test_a_restarted_worker_takes_over_the_assembly_lock_its_killed_incarnation_held(
        redis: Redis, redis_server: str, store: JobStore) -> None:
    """Only a store owned by the lock holder's name, in another process (a worker restarted under its name after
    a kill mid-assembly), takes a held lock; anyone else waits for it to expire (ASSEMBLE_LOCK_SECONDS)."""
    job_id = submit_eight_schools(store, warmup=5, draws=20)
    store.mark_running(job_id)
    rng = np.random.default_rng(0)
    writer = ChainWriter(redis)
    for c in range(2):
        draws = {"mu": rng.normal(size=20), "tau": rng.exponential(size=20), "theta": rng.normal(size=(20, 8))}
        blob = pack_block(draws, {"diverging": np.zeros(20, bool)})
        writer.save(job_id, c, blob, STATE, chains=2, iterations=25, divergences=0)
    lock = keys.assembling(job_id)
    redis.set(lock, "worker-0/0123456789abcdef", ex=keys.ASSEMBLE_LOCK_SECONDS)  # the killed worker-0's
    settings = store.settings
    for other in (store, JobStore(redis, settings, owner="worker-1"), JobStore(redis, settings, owner="worker")):
        assert other.assemble(job_id) is False
        assert redis.get(lock) == b"worker-0/0123456789abcdef"
    redis.set(lock, "worker-0/x/0123456789abcdef", ex=keys.ASSEMBLE_LOCK_SECONDS)  # a worker named worker-0/x
    assert JobStore(redis, settings, owner="worker-0").assemble(job_id) is False
    redis.set(lock, "worker-0/0123456789abcdef", ex=keys.ASSEMBLE_LOCK_SECONDS)
    assert store.get("t", job_id).state is JobState.RUNNING
    restarted = JobStore(redis, settings, owner="worker-0")
    assert restarted.assemble(job_id) is True
    assert store.get("t", job_id).state is JobState.SUCCEEDED
    assert redis.exists(lock) == 0
