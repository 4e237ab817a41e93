"""Jobs in Redis: submit (one stream entry per chain), read, list, cancel, delete, results.

Shared by the API (submit, read) and the workers (progress, draws, assembly);
nothing here imports JAX. Keys come from `service.keys`.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from redis import Redis
from redis.exceptions import WatchError

from service import keys, metrics
from service.codec import pack, text, unpack
from service.config import Settings
from service.exceptions import ConflictError, NotFoundError, Problem, SpecError
from service.language.ir import Model
from service.live import LiveDiagnostics
from service.sampler import SamplerSettings, parse_job
from service.schemas import STATES, TERMINAL, ChainProgress, Diagnostics, JobCreate, JobList, JobPublic


def _text(value: bytes | str | None) -> str | None:
    return None if value is None else text(value)


class JobStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.r: Any = redis  # redis-py's annotations do not follow decode_responses
        self.settings = settings
        self.live = LiveDiagnostics(redis, interval=settings.diagnostics_interval,
                                    linger=settings.metrics_linger_seconds, cpu_share=settings.diagnostics_cpu_share)

    # -- submit -----------------------------------------------------------------------------------

    def submit(self, tenant: str, body: JobCreate) -> tuple[dict[str, str], bool]:
        """Validate, then create the job and queue its chains; (record, created). Idempotent when seeded."""
        model, settings = parse_job({"model": body.model, "sampler": body.sampler})
        iterations = settings.chains * (settings.warmup + settings.draws)
        if iterations > self.settings.max_iterations_per_job:
            raise SpecError([Problem("sampler", f"chains x (warmup + draws) = {iterations} is over this server's "
                                                f"limit of {self.settings.max_iterations_per_job}")])
        canonical = json.dumps({"model": body.model, "sampler": settings.model_dump(), "name": body.name,
                                "labels": body.labels}, sort_keys=True, default=str)
        if settings.seed is not None:
            job_id = "j" + hashlib.sha256(f"{tenant}\n{canonical}".encode()).hexdigest()[:24]
        else:
            job_id = "j" + secrets.token_hex(12)
            settings = settings.model_copy(update={"seed": secrets.randbelow(2**32)})
        now = time.time()
        record = {
            "id": job_id,
            "tenant": tenant,
            "name": body.name or "",
            "labels": json.dumps(body.labels),
            "state": "queued",
            "created_at": repr(now),
            "deadline": repr(now + self.settings.job_timeout_seconds),
            "model": json.dumps(body.model),
            "sampler": settings.model_dump_json(),
            "seed": str(settings.seed),
            "chains": str(settings.chains),
            "iterations": str(settings.warmup + settings.draws),
            "structure": model.structure_key(),
        }
        if not self.r.hsetnx(keys.job(job_id), "id", job_id):
            existing = self._record(job_id)
            if existing is not None and existing.get("tenant") == tenant:
                return existing, False
        pipe = self.r.pipeline()
        pipe.hset(keys.job(job_id), mapping=record)
        pipe.zadd(keys.tenant_jobs(tenant), {job_id: now})
        pipe.zadd(keys.jobs_in_state("queued"), {job_id: "+inf"})
        for c in range(settings.chains):
            pipe.hset(keys.chain(job_id, c), mapping={"phase": "queued", "iteration": 0,
                                                      "of": settings.warmup + settings.draws, "divergences": 0,
                                                      "attempts": 0})
            pipe.xadd(keys.TASKS, {"job": job_id, "chain": c})
        pipe.execute()
        return record, True

    # -- read -------------------------------------------------------------------------------------

    def _record(self, job_id: str) -> dict[str, str] | None:
        raw = self.r.hgetall(keys.job(job_id))
        if not raw or b"tenant" not in raw:
            return None
        return {_text(k) or "": _text(v) or "" for k, v in raw.items()}

    def get(self, tenant: str, job_id: str) -> dict[str, str]:
        record = self._record(job_id)
        if record is None or record["tenant"] != tenant:
            raise NotFoundError(f"job {job_id} not found")
        return record

    def record(self, job_id: str) -> dict[str, str] | None:
        """A job's record for workers (no tenant check)."""
        return self._record(job_id)

    def public(self, record: dict[str, str], *, diagnostics: bool = True) -> JobPublic:
        chains = self.chains(record)
        return JobPublic(
            id=record["id"],
            name=record["name"] or None,
            labels=json.loads(record["labels"]),
            state=record["state"],  # type: ignore[arg-type]
            created_at=float(record["created_at"]),
            started_at=float(record["started_at"]) if record.get("started_at") else None,
            finished_at=float(record["finished_at"]) if record.get("finished_at") else None,
            seed=int(record["seed"]),
            sampler=json.loads(record["sampler"]),
            chains=chains,
            diagnostics=self.diagnostics(record) if diagnostics else None,
            error=record.get("error") or None,
        )

    def chains(self, record: dict[str, str]) -> list[ChainProgress]:
        pipe = self.r.pipeline()
        for c in range(int(record["chains"])):
            pipe.hgetall(keys.chain(record["id"], c))
        out = []
        for c, raw in enumerate(pipe.execute()):
            h = {_text(k): _text(v) for k, v in raw.items()}
            out.append(ChainProgress(
                chain=c,
                phase=h.get("phase") or "queued",
                iteration=int(h.get("iteration") or 0),
                of=int(h.get("of") or record["iterations"]),
                divergences=int(h.get("divergences") or 0),
                step_size=float(h.get("step_size") or "nan") if h.get("step_size") else None,
                worker=h.get("worker") or None,
                attempts=int(h.get("attempts") or 0),
            ))
        return out

    def list(self, tenant: str, *, state: str | None, label: str | None, offset: int, limit: int) -> JobList:
        ids = [_text(i) or "" for i in self.r.zrevrange(keys.tenant_jobs(tenant), 0, -1)]
        selector = label.split("=", 1) if label else None
        jobs: list[JobPublic] = []
        matched = 0
        for job_id in ids:
            record = self._record(job_id)
            if record is None:
                self.r.zrem(keys.tenant_jobs(tenant), job_id)  # expired or deleted
                continue
            if state and record["state"] != state:
                continue
            if selector and json.loads(record["labels"]).get(selector[0]) != (selector[1] if len(selector) > 1
                                                                               else None):
                continue
            matched += 1
            if offset < matched <= offset + limit:
                jobs.append(self.public(record, diagnostics=False))
        return JobList(jobs=jobs, total=matched, offset=offset, limit=limit)

    def diagnostics(self, record: dict[str, str]) -> Diagnostics | None:
        """R-hat, ESS and divergences of the draws so far, as last refreshed (see service.live)."""
        return self.live.public(record["id"])

    # -- cancel, delete ---------------------------------------------------------------------------

    def cancel(self, tenant: str, job_id: str) -> dict[str, str]:
        record = self.get(tenant, job_id)
        if record["state"] in ("queued", "running"):
            self.finish(job_id, "cancelled", "cancelled by request")
            record = self.get(tenant, job_id)
        return record

    def delete(self, tenant: str, job_id: str) -> None:
        record = self.get(tenant, job_id)
        if record["state"] in ("queued", "running"):
            self.finish(job_id, "cancelled", "deleted")
        pipe = self.r.pipeline()
        pipe.delete(*keys.job_keys(job_id, int(record["chains"])))
        pipe.zrem(keys.tenant_jobs(tenant), job_id)
        pipe.zrem(keys.DIAGNOSTICS_INDEX, job_id)
        for state in STATES:
            pipe.zrem(keys.jobs_in_state(state), job_id)
        pipe.execute()

    def mark_running(self, job_id: str) -> None:
        """The first chain of a queued job started."""
        key = keys.job(job_id)
        with self.r.pipeline() as pipe:
            try:
                pipe.watch(key)
                if pipe.hget(key, "state") == b"queued":
                    pipe.multi()
                    pipe.hset(key, mapping={"state": "running", "started_at": repr(time.time())})
                    pipe.zrem(keys.jobs_in_state("queued"), job_id)
                    pipe.zadd(keys.jobs_in_state("running"), {job_id: "+inf"})
                    pipe.execute()
                else:
                    pipe.unwatch()
            except WatchError:  # a concurrent cancel, or another chain started it
                pass

    def finish(self, job_id: str, state: str, error: str | None = None) -> bool:
        """Move a job to a terminal state once; start its retention clock. False if it already ended."""
        key = keys.job(job_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    current = _text(pipe.hget(key, "state"))
                    if current is None or current in TERMINAL:
                        pipe.unwatch()
                        return False
                    chains = int(_text(pipe.hget(key, "chains")) or 0)
                    created = float(_text(pipe.hget(key, "created_at")) or 0)
                    now = time.time()
                    pipe.multi()
                    mapping = {"state": state, "finished_at": repr(now)}
                    if error:
                        mapping["error"] = error
                    pipe.hset(key, mapping=mapping)
                    for k in keys.job_keys(job_id, chains):
                        pipe.expire(k, self.settings.retention_seconds)
                    pipe.zrem(keys.jobs_in_state(current), job_id)
                    pipe.zadd(keys.jobs_in_state(state), {job_id: now + self.settings.retention_seconds})
                    pipe.execute()
                    break
                except WatchError:  # someone else changed the state meanwhile; look again
                    continue
        metrics.JOB_DURATION.labels(outcome=state).observe(max(0.0, now - created))
        self.live.end(job_id, state)
        return True

    # -- worker side: every write is guarded by the job's existence, so a deleted job stays deleted --

    _REPORT = """
    local state = redis.call('HGET', KEYS[1], 'state')
    if not state then return false end
    redis.call('RPUSH', KEYS[3], ARGV[1])
    redis.call('HSET', KEYS[2], 'phase', ARGV[2], 'iteration', ARGV[3], 'of', ARGV[4], 'divergences', ARGV[5],
               'step_size', ARGV[6])
    return state
    """
    _RESET = """
    if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
    redis.call('DEL', KEYS[2])
    for i = 1, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
    return 1
    """
    _SAVE = """
    if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
    redis.call('SET', KEYS[3], ARGV[1])
    redis.call('HSET', KEYS[2], 'phase', 'done')
    return 1
    """
    _ATTEMPT = """
    if redis.call('EXISTS', KEYS[1]) == 0 then return false end
    redis.call('HSET', KEYS[2], 'worker', ARGV[1])
    return redis.call('HINCRBY', KEYS[2], 'attempts', 1)
    """

    def start_attempt(self, job_id: str, chain: int, worker: str) -> int | None:
        """Count an attempt at a chain; None if the job is gone."""
        n = self.r.eval(self._ATTEMPT, 2, keys.job(job_id), keys.chain(job_id, chain), worker)
        return int(n) if n is not None else None

    def reset_live(self, job_id: str, chain: int, blobs: builtins.list[bytes]) -> None:
        """A chain (re)starts: its live blocks are those restored from its checkpoint."""
        self.r.eval(self._RESET, 2, keys.job(job_id), keys.live_blocks(job_id, chain), *blobs)

    def report_block(self, job_id: str, chain: int, blob: bytes, *, phase: str, iteration: int, of: int,
                     divergences: int, step_size: float) -> str | None:
        """Push a block's draws and the chain's progress; returns the job's state (None: deleted)."""
        state = self.r.eval(self._REPORT, 3, keys.job(job_id), keys.chain(job_id, chain),
                            keys.live_blocks(job_id, chain), blob, phase, iteration, of, divergences, step_size)
        return _text(state) if state else None

    def save_chain(self, job_id: str, chain: int, blob: bytes) -> bool:
        """Store a finished chain's draws (before its task is acknowledged)."""
        return bool(self.r.eval(self._SAVE, 3, keys.job(job_id), keys.chain(job_id, chain),
                                keys.chain_draws(job_id, chain), blob))

    # -- results ----------------------------------------------------------------------------------

    def result(self, tenant: str, job_id: str, field: str) -> bytes:
        record = self.get(tenant, job_id)
        value = self.r.hget(keys.result(job_id), field)
        if value is None and record["state"] == "running" and self.assemble(job_id):
            value = self.r.hget(keys.result(job_id), field)
        if value is None:
            raise ConflictError(f"job {job_id} is {record['state']}; results exist once it has succeeded")
        return bytes(value)

    def model_of(self, record: dict[str, str]) -> tuple[Model, SamplerSettings]:
        model, _ = parse_job({"model": json.loads(record["model"])})
        return model, SamplerSettings.model_validate_json(record["sampler"])

    def assemble(self, job_id: str) -> bool:
        """Build InferenceData + summary once all chains are stored; idempotent, whichever process calls."""
        record = self._record(job_id)
        if record is None or record["state"] in TERMINAL:
            return False
        chains = int(record["chains"])
        blobs = self.r.mget([keys.chain_draws(job_id, c) for c in range(chains)])
        if any(b is None for b in blobs):
            return False
        if not self.r.set(keys.assembling(job_id), "1", nx=True, ex=keys.ASSEMBLE_LOCK_SECONDS):
            return False
        try:
            from service.results import summary, to_inference_data, write_netcdf

            model, settings = self.model_of(record)
            per_chain = [unpack(bytes(b)) for b in blobs]  # type: ignore[arg-type]
            draws = {k: np.stack([c[k] for c in per_chain]) for k in per_chain[0] if not k.startswith("stat.")}
            stats = {k[5:]: np.stack([c[k] for c in per_chain]) for k in per_chain[0] if k.startswith("stat.")}
            idata = to_inference_data(model, draws, stats, attrs={"job": job_id, "seed": int(record["seed"]),
                                                                  "max_tree_depth": settings.max_tree_depth})
            result = summary(idata)
            self.live.finalize(record, result["totals"], "succeeded")
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "fit.nc"
                write_netcdf(idata, path)
                netcdf = path.read_bytes()
            self.r.hset(keys.result(job_id), mapping={"netcdf": netcdf, "summary": json.dumps(result),
                                                      "draws": pack({**draws})})
            self.finish(job_id, "succeeded")
            return True
        finally:
            self.r.delete(keys.assembling(job_id))
