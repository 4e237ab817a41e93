"""Jobs in Redis: submit, read and list, cancel and delete, the state machine, and serving results.

Shared by the API and the workers; nothing here imports JAX. Keys come from `service.keys`, the queue's
verbs from `service.queue`, worker-side chain writes from `service.jobs.chains`.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from redis import Redis
from redis.exceptions import WatchError

from service import keys, metrics, until
from service.codec import pack, text, unpack_state
from service.config import Settings
from service.exceptions import ConflictError, NotFoundError, Problem, SpecError
from service.jobs import blobs
from service.jobs.assemble import Results, assemble, stack_chains
from service.jobs.pinned import PinnedModel
from service.jobs.quotas import Quotas, check_queued, count_submission
from service.jobs.record import ChainPhase, ChainProgress, JobRecord, JobState
from service.live import LiveDiagnostics
from service.priors import use
from service.priors.publish import Publisher
from service.priors.refs import RefitOf, refit_to_json
from service.priors.versions import Versions
from service.queue import ChainQueue
from service.sampler import MAX_ITERATIONS, SamplerSettings, check_cost, parse_job
from service.until import Round

log = logging.getLogger("chainyard.jobs")

_GUARDED_HSET = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV))
return 1
"""
"""HSET KEYS[2] only while the job record KEYS[1] exists (a job deleted meanwhile stays deleted)."""

_TAKE_ASSEMBLY = """
local held = redis.call('GET', KEYS[1])
if held and not (ARGV[2] ~= '' and string.sub(held, 1, #ARGV[2]) == ARGV[2] and held ~= ARGV[1]
                 and not string.find(held, '/', #ARGV[2] + 1, true)) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""
"""Take the assembly lock KEYS[1] as ARGV[1] for ARGV[3] seconds: when it is free, or when it is held under the
owner prefix ARGV[2] (non-empty; `name/`) by another process of that name, a dead earlier incarnation of this
worker (`name/token`, not `name/more/token`: a worker named `name/more`)."""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
"""Delete KEYS[1] only while it holds ARGV[1] (a lock that expired and was taken by another stays theirs)."""

PROCESS_TOKEN = secrets.token_hex(8)
"""This process's incarnation, in the locks it holds."""

RERUN = frozenset({JobState.CANCELLED, JobState.FAILED})
"""A seeded request identical to a job in one of these states runs it again (same id) instead of returning it."""


@dataclass(frozen=True)
class JobPage:
    """One page of a tenant's jobs, newest first."""

    jobs: list[tuple[JobRecord, list[ChainProgress]]]
    total: int


class JobStore:
    def __init__(self, redis: Redis, settings: Settings, *, owner: str | None = None) -> None:
        """`owner`: a worker's name, unique among live workers (a StatefulSet pod's), in the assembly locks this
        store takes; a restarted worker of that name takes over the locks its killed incarnation held instead
        of waiting for them to expire. Without one (the API, the CLI) locks only expire."""
        self.r: Any = redis  # redis-py's annotations do not follow decode_responses
        self.settings = settings
        self.owner = owner
        self._lock_prefix = f"{owner}/" if owner else ""
        self._lock_value = f"{self._lock_prefix}{PROCESS_TOKEN}"
        self.queue = ChainQueue(redis, visibility_timeout=settings.visibility_timeout,
                                window=settings.dispatch_window)
        self.quotas = Quotas(settings)
        self.live = LiveDiagnostics(redis, interval=settings.diagnostics_interval,
                                    linger=settings.metrics_linger_seconds, cpu_share=settings.diagnostics_cpu_share)
        self.versions = Versions(redis)
        self.publisher = Publisher(redis)

    # -- submit -----------------------------------------------------------------------------------

    def submit(self, tenant: str, *, model: dict[str, Any], sampler: dict[str, Any] | None, name: str | None,
               labels: dict[str, str], refit: RefitOf | None = None) -> tuple[JobRecord, bool]:
        """Validate, pin the model, create the job and queue its chains; (record, created). With a seed, an
        identical request from the same tenant returns the existing job (content-addressed id). Over a quota
        of the tenant's: QuotaExceededError (counted before validating, so a flood costs little). A model's
        `priors_from` is resolved here and pinned; `refit` marks a prior's refit (published when it ends)."""
        quota = self.quotas.of(tenant)
        count_submission(self.r, tenant, quota)
        model, pins = self.resolve_priors(tenant, model)
        validated, settings = parse_job({"model": model, "sampler": sampler, "name": name, "labels": labels},
                                        limits=self.settings.cost_limits())
        self._check_iterations(settings, "sampler")
        canonical = json.dumps({"model": model, "sampler": settings.model_dump(), "name": name, "labels": labels,
                                **({"refit": refit_to_json(refit)} if refit is not None else {})},
                               sort_keys=True, default=str)
        if settings.seed is not None:
            job_id = "j" + hashlib.sha256(f"{tenant}\n{canonical}".encode()).hexdigest()[:24]
        else:
            job_id = "j" + secrets.token_hex(12)
            settings = settings.model_copy(update={"seed": secrets.randbelow(2**32)})
        pinned = PinnedModel.of(validated)
        now = time.time()
        spec_name = model.get("name")
        record = JobRecord(
            id=job_id, tenant=tenant, name=name, labels=labels, state=JobState.QUEUED, sampler=settings,
            model_name=spec_name if isinstance(spec_name, str) else None, model_fingerprint=pinned.fingerprint,
            structure=validated.structure_key(), layout=validated.parameter_layout(), created_at=now,
            deadline=now + self.settings.job_timeout_seconds,
            priors=pins, refit=refit,
        )
        warm = self._warm_states(tenant, record) if settings.warm_start is not None else None
        existing = self.read(job_id)
        if existing is not None and existing.tenant == tenant and existing.state not in RERUN:
            return existing, False  # an identical seeded request: free, whatever the quotas
        check_queued(self.queue, tenant, quota, settings.chains)
        if existing is not None and existing.tenant == tenant:
            self.delete(tenant, job_id)  # asking again for a cancelled or failed job runs it again
        if not self.r.hsetnx(keys.job(job_id), "id", job_id):
            existing = self.read(job_id)  # a concurrent identical request created it meanwhile
            if existing is not None and existing.tenant == tenant:
                return existing, False
        if warm is not None:  # before the tasks exist: a worker finds it with the job's first chain
            blobs.write(self.r, job_id, keys.job_warm(job_id), warm, chunk_bytes=self.settings.chunk_bytes)
        pipe = self.r.pipeline()
        pipe.hset(keys.job(job_id), mapping=record.to_hash())
        pipe.set(keys.job_model(job_id), pinned.text)
        pipe.zadd(keys.tenant_jobs(tenant), {job_id: now})
        pipe.zadd(keys.jobs_in_state(JobState.QUEUED), {job_id: "+inf"})
        for c in range(settings.chains):
            pipe.hset(keys.chain(job_id, c), mapping=ChainProgress(chain=c, of=record.iterations).to_hash())
        self.queue.limit(pipe, tenant, quota.running_chains)
        self.queue.put(pipe, tenant, job_id, settings.chains)
        pipe.execute()
        self.queue.dispatch()
        return record, True

    def _check_iterations(self, settings: SamplerSettings, path: str) -> None:
        iterations = settings.chains * (settings.warmup + settings.most_draws)
        if iterations > self.settings.max_iterations_per_job:
            what = "until.max_draws" if settings.until is not None else "draws"
            raise SpecError([Problem(path, f"chains x (warmup + {what}) = {iterations} is over this server's "
                                           f"limit of {self.settings.max_iterations_per_job}")])

    def can_warm_start(self, tenant: str, source_id: str, layout: str, dense_mass: bool) -> bool:
        """Whether a job of `tenant` with this layout could warm-start from job `source_id` now (the nightly
        refits ask before they do)."""
        source = self.read(source_id)
        return (source is not None and source.tenant == tenant and source.state == JobState.SUCCEEDED
                and source.layout == layout and source.sampler.dense_mass == dense_mass
                and all(self.r.exists(keys.chain_state(source_id, c)) for c in range(source.chains)))

    def _warm_states(self, tenant: str, record: JobRecord) -> bytes:
        """The final chain states of the job `sampler.warm_start` names, checked against the new job, as one
        blob to copy with it (`keys.job_warm`)."""
        assert record.sampler.warm_start is not None
        path = "sampler.warm_start.job"
        source_id = record.sampler.warm_start.job
        source = self.read(source_id)
        if source is None or source.tenant != tenant:
            raise SpecError([Problem(path, f"no job {source_id}")])
        if source.state != JobState.SUCCEEDED:
            raise SpecError([Problem(path, f"job {source_id} is {source.state}; a warm start needs a succeeded job")])
        if source.layout != record.layout:
            raise SpecError([Problem(path, f"job {source_id} has other parameters (names, shapes, distributions or "
                                           "parameterization); a warm start needs the same parameters")])
        if source.sampler.dense_mass != record.sampler.dense_mass:
            raise SpecError([Problem("sampler.dense_mass", f"job {source_id} ran with dense_mass="
                                                           f"{str(source.sampler.dense_mass).lower()}; a warm start "
                                                           "keeps its mass matrix, so it must match")])
        arrays: dict[str, Any] = {"chains": np.asarray(source.chains)}
        for c in range(source.chains):
            value = blobs.read(self.r, keys.chain_state(source_id, c))
            if value is None:
                raise SpecError([Problem(path, f"job {source_id}'s chain states are not stored (it ran before "
                                               "they were kept, or was deleted meanwhile)")])
            state, _ = unpack_state(value)
            arrays.update({f"{c}/{k}": v for k, v in state.items()})
        return pack(arrays)

    def resolve_priors(self, tenant: str, model: Any) -> tuple[Any, tuple[Any, ...]]:
        """`priors_from` -> the spec's `fitted_priors` and the pinned versions (problems at `model.…`)."""
        if not isinstance(model, dict) or "priors_from" not in model:
            return model, ()
        try:
            return use.resolve(model, lambda prior, number: self.versions.read(tenant, prior, number))
        except SpecError as exc:
            raise SpecError([Problem(f"model.{p.path}".rstrip("."), p.message) for p in exc.problems]) from None

    # -- read -------------------------------------------------------------------------------------

    def read(self, job_id: str) -> JobRecord | None:
        """A job's record, whoever owns it (workers, assembly); None if there is none."""
        raw = self.r.hgetall(keys.job(job_id))
        if not raw or b"tenant" not in raw:
            return None
        return JobRecord.from_hash(raw)

    def get(self, tenant: str, job_id: str) -> JobRecord:
        """A tenant's job; NotFoundError for another tenant's (the same answer, so ids leak nothing)."""
        record = self.read(job_id)
        if record is None or record.tenant != tenant:
            raise NotFoundError(f"job {job_id} not found")
        return record

    def pinned(self, job_id: str) -> PinnedModel | None:
        """The model pinned at submit."""
        value = self.r.get(keys.job_model(job_id))
        return PinnedModel.load(text(value)) if value is not None else None

    def chains(self, record: JobRecord) -> list[ChainProgress]:
        pipe = self.r.pipeline()
        for c in range(record.chains):
            pipe.hgetall(keys.chain(record.id, c))
        return [ChainProgress.from_hash(c, raw, of=record.iterations) for c, raw in enumerate(pipe.execute())]

    def list(self, tenant: str, *, state: JobState | None, label: str | None, offset: int, limit: int) -> JobPage:
        """A page of a tenant's jobs, newest first. `label` is `key=value` (that value) or `key` (has the label,
        any value). The filters read two fields of every record (state, labels: one pipeline); whole records and
        their chains are read for the page only."""
        ids = [text(i) for i in self.r.zrevrange(keys.tenant_jobs(tenant), 0, -1)]
        pipe = self.r.pipeline()
        for job_id in ids:
            pipe.hmget(keys.job(job_id), "state", "labels")
        key, has_value, value = label.partition("=") if label else ("", "", "")
        matched, gone = [], []
        for job_id, (raw_state, raw_labels) in zip(ids, pipe.execute(), strict=True):
            if raw_state is None:
                gone.append(job_id)  # expired or deleted
                continue
            if state and text(raw_state) != state.value:
                continue
            if label:
                labels = json.loads(text(raw_labels or b"{}"))
                if key not in labels or (has_value and labels[key] != value):
                    continue
            matched.append(job_id)
        if gone:
            self.r.zrem(keys.tenant_jobs(tenant), *gone)
        page = []
        for job_id in matched[offset:offset + limit]:
            record = self.read(job_id)
            if record is not None:
                page.append((record, self.chains(record)))
        return JobPage(jobs=page, total=len(matched))

    # -- cancel, delete ---------------------------------------------------------------------------

    def cancel(self, tenant: str, job_id: str) -> JobRecord:
        record = self.get(tenant, job_id)
        if not record.state.terminal:
            self.finish(job_id, JobState.CANCELLED, "cancelled by request")
            record = self.get(tenant, job_id)
        return record

    def delete(self, tenant: str, job_id: str) -> None:
        """Cancel if it runs, then remove every key of the job (its queued tasks are acknowledged by the
        workers that find the job gone)."""
        record = self.get(tenant, job_id)
        if not record.state.terminal:
            self.finish(job_id, JobState.CANCELLED, "deleted")
        pipe = self.r.pipeline()
        pipe.delete(*keys.job_keys(job_id, record.chains))
        pipe.zrem(keys.tenant_jobs(tenant), job_id)
        pipe.zrem(keys.DIAGNOSTICS_INDEX, job_id)
        pipe.zrem(keys.ASSEMBLY_DUE, job_id)
        for state in JobState:
            pipe.zrem(keys.jobs_in_state(state), job_id)
        pipe.execute()

    # -- the state machine: queued -> running -> succeeded | failed | cancelled ----------------------

    def mark_running(self, job_id: str) -> None:
        """The first chain of a queued job started."""
        key = keys.job(job_id)
        with self.r.pipeline() as pipe:
            try:
                pipe.watch(key)
                if pipe.hget(key, "state") == JobState.QUEUED.value.encode():
                    pipe.multi()
                    pipe.hset(key, mapping={"state": JobState.RUNNING.value, "started_at": repr(time.time())})
                    pipe.zrem(keys.jobs_in_state(JobState.QUEUED), job_id)
                    pipe.zadd(keys.jobs_in_state(JobState.RUNNING), {job_id: "+inf"})
                    pipe.execute()
                else:
                    pipe.unwatch()
            except WatchError:  # a concurrent cancel, or another chain started it
                pass

    def finish(self, job_id: str, state: JobState, error: str | None = None) -> bool:
        """Move a job to a terminal state once; start its retention clock. False if it already ended."""
        key = keys.job(job_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.hgetall(key)
                    if not raw or b"tenant" not in raw:
                        pipe.unwatch()
                        return False
                    record = JobRecord.from_hash(raw)
                    if record.state.terminal:
                        pipe.unwatch()
                        return False
                    now = time.time()
                    pipe.multi()
                    mapping = {"state": state.value, "finished_at": repr(now)}
                    if error:
                        mapping["error"] = error
                    pipe.hset(key, mapping=mapping)
                    for k in keys.job_keys(job_id, record.chains):
                        pipe.expire(k, self.settings.retention_seconds)
                    pipe.zrem(keys.jobs_in_state(record.state), job_id)
                    pipe.zadd(keys.jobs_in_state(state), {job_id: now + self.settings.retention_seconds})
                    pipe.zrem(keys.ASSEMBLY_DUE, job_id)
                    self.queue.drop(pipe, record.tenant, job_id, record.chains)
                    pipe.execute()
                    break
                except WatchError:  # someone else changed the state meanwhile; look again
                    continue
        metrics.JOB_DURATION.labels(outcome=state.value).observe(max(0.0, now - record.created_at))
        self.live.end(job_id, state)
        if record.refit is not None and state != JobState.SUCCEEDED:
            self.publisher.failed(job=job_id, tenant=record.tenant, refit=record.refit,
                                  reason=f"the refit job {state.value}: {error or state.value}")
        return True

    # -- results ----------------------------------------------------------------------------------

    def summary(self, tenant: str, job_id: str) -> dict[str, Any]:
        """The summary of a succeeded job (assembled here if its chains are all stored)."""
        self._ready(tenant, job_id)
        value = self.r.hget(keys.result(job_id), "summary")
        if value is None:  # deleted meanwhile
            raise NotFoundError(f"job {job_id} not found")
        summary: dict[str, Any] = json.loads(value)
        return summary

    def result_file(self, tenant: str, job_id: str, name: str) -> tuple[int, Iterator[bytes]]:
        """One of keys.RESULT_FILES of a succeeded job: (size in bytes, its chunks, read one at a time)."""
        self._ready(tenant, job_id)
        size = int(self.r.hget(keys.result(job_id), f"{name}_bytes") or 0)
        return size, blobs.chunks(self.r, keys.result_file(job_id, name))

    def stored_file(self, job_id: str, name: str) -> bytes | None:
        """A result file whole, whoever owns the job (tests, benchmarks)."""
        return blobs.read(self.r, keys.result_file(job_id, name))

    def _ready(self, tenant: str, job_id: str) -> None:
        record = self.get(tenant, job_id)
        if self.r.hexists(keys.result(job_id), "summary"):
            return
        if record.state == JobState.RUNNING and self.assemble(job_id):
            return
        raise ConflictError(f"job {job_id} is {record.state}; results exist once it has succeeded")

    def assemble(self, job_id: str) -> bool:
        """Build and store a job's results once all its chains are stored; idempotent, whichever process calls.

        A job whose assembly raises fails with the reason; one whose assembler keeps dying (counted per
        attempt, like a chain's) fails after Settings.max_attempts instead of being retried forever."""
        record = self.read(job_id)
        if record is None or record.state.terminal:
            return False
        chains = self.chains(record)
        if not all(c.phase == ChainPhase.DONE and c.stored == record.iterations for c in chains):
            return False  # a chain of this round is not stored yet
        lock = keys.assembling(job_id)
        if not self.r.eval(_TAKE_ASSEMBLY, 1, lock, self._lock_value, self._lock_prefix, keys.ASSEMBLE_LOCK_SECONDS):
            return False
        try:
            attempts = int(self.r.hincrby(keys.job(job_id), "assembly_attempts", 1))
            if attempts > self.settings.max_attempts:
                self.finish(job_id, JobState.FAILED, f"assembling the results failed {attempts - 1} times (the "
                                                     "assembling process died; out of memory?)")
                return False
            pinned = self.pinned(job_id)
            stored = [blobs.read(self.r, keys.chain_draws(job_id, c)) for c in range(record.chains)]
            if pinned is None or any(c is None for c in stored):
                return False  # deleted meanwhile
            try:
                draws, stats = stack_chains([c for c in stored if c is not None])
                if record.sampler.until is not None and record.stopped is None:
                    decision = until.decide(record.sampler.until, draws, per_chain=record.draws)
                    if not decision.stop:
                        self._next_round(record, decision)
                        return False
                    record = replace(record, rounds=(*record.rounds, decision),
                                     stopped=until.explain(decision, record.sampler.until))
                    if not self.r.eval(_GUARDED_HSET, 2, keys.job(job_id), keys.job(job_id),
                                       *[x for kv in record.sampling_fields().items() for x in kv]):
                        return False
                results, netcdf = self._build(record, pinned, draws, stats, chains)
            except Exception as exc:  # a result nothing can store must end the job, not kill its workers
                log.exception("assembling %s failed", job_id)
                self.finish(job_id, JobState.FAILED, f"assembling the results failed: {type(exc).__name__}: {exc}")
                return False
            self.live.finalize(record, results.summary["totals"], JobState.SUCCEEDED)
            files = {"netcdf": netcdf, "draws": pack(results.draws)}
            for name, blob in files.items():
                if not blobs.write(self.r, job_id, keys.result_file(job_id, name), blob,
                                   chunk_bytes=self.settings.chunk_bytes):
                    return False  # deleted meanwhile
            fields = {"summary": json.dumps(results.summary), **{f"{n}_bytes": len(b) for n, b in files.items()}}
            if not self.r.eval(_GUARDED_HSET, 2, keys.job(job_id), keys.result(job_id),
                               *[x for kv in fields.items() for x in kv]):
                return False
            if record.refit is not None:  # before the job ends: a publisher that dies leaves it to be assembled again
                self._publish(record, results)
            self.finish(job_id, JobState.SUCCEEDED)
            return True
        finally:
            self.r.eval(_RELEASE, 1, lock, self._lock_value)

    def _next_round(self, record: JobRecord, decision: Round) -> None:
        """Queue every chain of an `until` job for its next round, once (a concurrent assembler's WATCH fails)."""
        draws = until.next_target(record.sampler, record.draws)
        key = keys.job(record.id)
        quota = self.quotas.of(record.tenant)
        with self.r.pipeline() as pipe:
            try:
                pipe.watch(key)
                state, target = pipe.hmget(key, "state", "draws_target")
                if state != JobState.RUNNING.value.encode() or (int(target) if target else record.sampler.draws) \
                        != record.draws:
                    pipe.unwatch()
                    return
                pipe.multi()
                after = replace(record, draws_target=draws, rounds=(*record.rounds, decision))
                pipe.hset(key, mapping={**after.sampling_fields(), "assembly_attempts": 0})
                self._requeue(pipe, after, quota.running_chains)
                pipe.execute()
            except WatchError:
                return
        self.queue.dispatch()
        log.info("job %s: %s at %d draws per chain; running to %d", record.id, decision.reason, record.draws, draws)

    def _requeue(self, pipe: Any, record: JobRecord, running_chains: int) -> None:
        """Inside a MULTI: every chain of `record` queued again to run on to record.iterations."""
        for c in range(record.chains):
            # attempts count per round: max_attempts bounds the failures of one round, not the rounds
            pipe.hset(keys.chain(record.id, c), mapping={"phase": ChainPhase.QUEUED.value, "of": record.iterations,
                                                         "attempts": 0})
        pipe.zrem(keys.ASSEMBLY_DUE, record.id)
        self.queue.limit(pipe, record.tenant, running_chains)
        self.queue.put(pipe, record.tenant, record.id, record.chains)

    # -- extend -----------------------------------------------------------------------------------

    def extend(self, tenant: str, job_id: str, draws: int) -> JobRecord:
        """Continue a succeeded job's chains for `draws` more draws each: it runs again and succeeds with draws
        equal, bit for bit, to a job that asked for them from the start (same id; the extension is recorded)."""
        record = self.get(tenant, job_id)
        if record.state != JobState.SUCCEEDED:
            raise ConflictError(f"job {job_id} is {record.state}; only a succeeded job can be extended")
        if record.refit is not None:
            raise ConflictError(f"job {job_id} is a refit of prior {record.refit.prior!r}, which published from "
                                "its draws; refit the prior instead")
        if not all(self.r.exists(keys.chain_state(job_id, c)) for c in range(record.chains)):
            raise ConflictError(f"job {job_id}'s chain states are not stored (it ran before they were kept); "
                                "submit it again with more draws")
        total = record.draws + draws
        longer = record.sampler.model_copy(update={"draws": total, "until": None})
        if total > MAX_ITERATIONS:
            raise SpecError([Problem("draws", f"the extended job would run {total} draws per chain; at most "
                                              f"{MAX_ITERATIONS}")])
        self._check_iterations(longer, "draws")
        pinned = self.pinned(job_id)
        if pinned is None:
            raise NotFoundError(f"job {job_id} not found")
        problems = check_cost(pinned.model(), longer, self.settings.cost_limits())
        if problems:
            raise SpecError([Problem("draws", p.message) for p in problems])
        quota = self.quotas.of(tenant)
        count_submission(self.r, tenant, quota)
        check_queued(self.queue, tenant, quota, record.chains)
        key = keys.job(job_id)
        now = time.time()
        with self.r.pipeline() as pipe:
            try:
                pipe.watch(key)
                current = JobRecord.from_hash(pipe.hgetall(key))
                if current.state != JobState.SUCCEEDED or current.draws != record.draws:
                    raise WatchError
                after = replace(record, state=JobState.RUNNING, draws_target=total, deadline=now +
                                self.settings.job_timeout_seconds,
                                extensions=(*record.extensions, {"draws": draws, "from": record.draws, "to": total,
                                                                 "at": now}))
                pipe.multi()
                pipe.hset(key, mapping={**after.sampling_fields(), "state": JobState.RUNNING.value,
                                        "deadline": repr(after.deadline), "assembly_attempts": 0})
                pipe.hdel(key, "finished_at", "error")
                for k in keys.job_keys(job_id, record.chains):
                    pipe.persist(k)
                pipe.delete(keys.result(job_id), keys.diagnostics(job_id), keys.diagnostics_due(job_id),
                            *(keys.result_file(job_id, name) for name in keys.RESULT_FILES))
                pipe.zrem(keys.jobs_in_state(JobState.SUCCEEDED), job_id)
                pipe.zrem(keys.DIAGNOSTICS_INDEX, job_id)
                pipe.zadd(keys.jobs_in_state(JobState.RUNNING), {job_id: "+inf"})
                self._requeue(pipe, after, quota.running_chains)
                pipe.execute()
            except WatchError:
                raise ConflictError(f"job {job_id} changed while it was being extended; look at it and try "
                                    "again") from None
        self.queue.dispatch()
        return self.get(tenant, job_id)

    def _publish(self, record: JobRecord, results: Results) -> None:
        assert record.refit is not None
        try:
            self.publisher.succeeded(job=record.id, tenant=record.tenant, refit=record.refit, summary=results.summary,
                                     draws=results.draws)
        except Exception as exc:  # a prior that cannot be published is a failed refit, not a failed job
            log.exception("publishing the refit %s failed", record.id)
            self.publisher.failed(job=record.id, tenant=record.tenant, refit=record.refit,
                                  reason=f"publishing failed: {type(exc).__name__}: {exc}")

    @staticmethod
    def _build(record: JobRecord, pinned: PinnedModel, draws: dict[str, np.ndarray], stats: dict[str, np.ndarray],
               chains: builtins.list[ChainProgress]) -> tuple[Results, bytes]:
        results = assemble(pinned.model(), record.sampler, draws, stats, attrs={"job": record.id, "seed": record.seed})
        if record.priors:
            results.summary["priors"] = [{**asdict(p), "ref": p.ref} for p in record.priors]
        results.summary["sampling"] = sampling(record, chains)
        return results, results.netcdf()

    def due_for_assembly(self, *, older_than: float) -> builtins.list[str]:
        """Running jobs whose chains have all been stored for at least `older_than` seconds (their assembler
        may have died): the sweep's work."""
        cutoff = time.time() - older_than
        return [text(j) for j in self.r.zrangebyscore(keys.ASSEMBLY_DUE, "-inf", cutoff, start=0, num=16)]


def sampling(record: JobRecord, chains: builtins.list[ChainProgress]) -> dict[str, Any]:
    """How far the chains ran and why they stopped, for the summary and the Job: draws per chain, the rounds of
    `until` and why it stopped, extensions, the warm start, gradient evaluations (warmup and sampling)."""
    warmup = sum(c.warmup_gradients for c in chains)
    total = sum(c.gradients for c in chains)
    return {
        "warmup": record.sampler.warmup,
        "draws_per_chain": record.draws,
        "until": record.sampler.until.model_dump() if record.sampler.until is not None else None,
        "rounds": [r.to_json() for r in record.rounds],
        "stopped": record.stopped,
        "extensions": list(record.extensions),
        "warm_start": record.sampler.warm_start.job if record.sampler.warm_start is not None else None,
        "gradients": {"warmup": warmup, "sampling": total - warmup, "total": total},
    }


__all__ = ["JobPage", "JobStore", "sampling"]
