"""Live convergence of a job: R-hat, bulk/tail ESS and divergences of the draws so far, as ArviZ computes them.

The figures are computed from the chains' live blocks at most once per refresh interval per job, by
whichever process reports a block first (a Redis key with a TTL decides), and stored in one hash per job.
The API's job resource and the Prometheus exporter only read that hash, so every reader sees the same
numbers and a big job is not recomputed per request. ArviZ needs chains of equal length: the figures cover
the first n draws of every chain that has at least MIN_DRAWS, n being the shortest of those; divergences
count every post-warmup draw so far. Once the job ends the hash is final (a late live refresh cannot
overwrite it) and it is exported for `metrics_linger_seconds` more.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from service import keys
from service.codec import STAT_PREFIX, text, unpack
from service.defaults import DIAGNOSTICS_CPU_SHARE as CPU_SHARE
from service.schemas import Diagnostics

if TYPE_CHECKING:
    from service.jobs.record import JobRecord

DIVERGING = STAT_PREFIX + "diverging"
MIN_DRAWS = 4
"""ArviZ's split R-hat needs a few draws per chain; fewer and no figures exist yet."""

_STORE = """
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'ended') == '1' and ARGV[1] == '0' then return 0 end
redis.call('DEL', KEYS[1])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""
"""Write a job's figures unless the job is gone, or it ended and this is a live (not final) refresh."""

_DUE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""
"""One refresh per interval and job, and none for a deleted job (no key outlives its job)."""

_END = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'ended', '1', 'outcome', ARGV[2])
redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[3])
return 1
"""


def convergence(posterior: dict[str, np.ndarray]) -> dict[str, float | None]:
    """max R-hat and min bulk/tail ESS over every element (arrays shaped chain x draw x ...), by ArviZ."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        dataset = az.convert_to_dataset(posterior)
        rhat = az.rhat(dataset)
        bulk = az.ess(dataset, method="bulk")
        tail = az.ess(dataset, method="tail")

    def extreme(ds: Any, fn: Any) -> float | None:
        values = np.concatenate([np.ravel(ds[v].values) for v in ds.data_vars]) if ds.data_vars else np.array([])
        values = values[np.isfinite(values)]
        return float(fn(values)) if values.size else None

    return {"max_rhat": extreme(rhat, np.max), "min_ess_bulk": extreme(bulk, np.min),
            "min_ess_tail": extreme(tail, np.min)}


def figures(per_chain: list[dict[str, np.ndarray] | None]) -> dict[str, Any] | None:
    """Figures of the chains' draws so far (None for a chain without draws); None before MIN_DRAWS."""
    used = {c: a for c, a in enumerate(per_chain) if a is not None and _length(a) >= MIN_DRAWS}
    if not used:
        return None
    n = min(map(_length, used.values()))
    first = next(iter(used.values()))
    posterior = {k: np.stack([a[k][:n] for a in used.values()]) for k in first if not k.startswith(STAT_PREFIX)}
    divergences = int(sum(a[DIVERGING].sum() for a in per_chain if a is not None and DIVERGING in a))
    return {"chains": list(used), "draws_per_chain": n, "divergences": divergences, **convergence(posterior)}


def _length(arrays: dict[str, np.ndarray]) -> int:
    return int(next(iter(arrays.values())).shape[0]) if arrays else 0


class LiveDiagnostics:
    """Reads, refreshes and ends the per-job figures in Redis."""

    def __init__(self, redis: Any, *, interval: float, linger: float, cpu_share: float = CPU_SHARE) -> None:
        self.r = redis
        self.interval = interval
        self.linger = linger
        self.cpu_share = cpu_share

    def due(self, job_id: str) -> bool:
        """True for one caller per interval and job (the caller then refreshes)."""
        return bool(self.r.eval(_DUE, 2, keys.job(job_id), keys.diagnostics_due(job_id),
                                max(1, int(self.interval * 1000))))

    def refresh(self, record: JobRecord) -> dict[str, Any] | None:
        """Recompute from the live blocks and store; the stored figures (None before any draws)."""
        job_id, chains = record.id, record.chains
        started = time.perf_counter()
        per_chain, iterations = live_draws(self.r, job_id, chains)
        done = sum(iterations)
        progress = done / (chains * record.iterations)
        found = self._store(record, figures(per_chain), progress, final=False)
        cost = time.perf_counter() - started
        if cost / self.cpu_share > self.interval:
            self.r.pexpire(keys.diagnostics_due(job_id), int(1000 * cost / self.cpu_share))
        return found

    def finalize(self, record: JobRecord, totals: dict[str, Any], outcome: str) -> None:
        """The figures of a finished job's complete draws, from its summary's totals (ArviZ's summary gives
        the same numbers bit for bit as az.rhat/az.ess, so they are not computed twice)."""
        found = {"chains": list(range(int(totals["chains"]))), "draws_per_chain": int(totals["draws_per_chain"]),
                 "divergences": int(totals["divergences"]),
                 **{k: totals[k] for k in ("max_rhat", "min_ess_bulk", "min_ess_tail")}}
        self._store(record, found, 1.0, final=True, outcome=outcome)

    def end(self, job_id: str, outcome: str) -> None:
        """A job ended without complete draws (failed, cancelled): keep its last figures a while, marked."""
        self.r.eval(_END, 2, keys.diagnostics(job_id), keys.DIAGNOSTICS_INDEX, repr(time.time() + self.linger),
                    outcome, job_id)

    def _store(self, record: JobRecord, found: dict[str, Any] | None, progress: float, *, final: bool,
               outcome: str = "") -> dict[str, Any] | None:
        job_id = record.id
        fields: dict[str, Any] = {"job": job_id, "model": record.model_label, "progress": progress,
                                  "updated_at": time.time(), "ended": "1" if final else "0", "outcome": outcome,
                                  "draws_target": json.dumps(record.draws)}
        if record.sampler.until is not None:  # the targets the figures are checked against at each round's end
            rule = record.sampler.until
            fields.update({"rhat_target": json.dumps(rule.rhat), "ess_bulk_target": json.dumps(rule.ess_bulk),
                           "ess_tail_target": json.dumps(rule.ess_tail)})
        if found is not None:
            fields.update({k: json.dumps(v) for k, v in found.items()})
        score = repr(time.time() + self.linger) if final else "+inf"
        flat = [x for kv in fields.items() for x in (kv[0], kv[1] if isinstance(kv[1], str) else repr(kv[1]))]
        self.r.eval(_STORE, 3, keys.diagnostics(job_id), keys.DIAGNOSTICS_INDEX, keys.job(job_id),
                    "1" if final else "0", score, job_id, *flat)
        return found

    def read(self, job_id: str) -> dict[str, str] | None:
        raw = self.r.hgetall(keys.diagnostics(job_id))
        return {text(k): text(v) for k, v in raw.items()} if raw else None

    def public(self, job_id: str) -> Diagnostics | None:
        stored = self.read(job_id)
        if stored is None or "draws_per_chain" not in stored:
            return None
        return Diagnostics(chains=json.loads(stored["chains"]), draws_per_chain=int(stored["draws_per_chain"]),
                           divergences=int(stored["divergences"]), max_rhat=_number(stored["max_rhat"]),
                           min_ess_bulk=_number(stored["min_ess_bulk"]), min_ess_tail=_number(stored["min_ess_tail"]),
                           updated_at=float(stored["updated_at"]))


def exported(redis: Any) -> list[dict[str, str]]:
    """The figures of every job to export now; drops those past their linger time."""
    redis.zremrangebyscore(keys.DIAGNOSTICS_INDEX, "-inf", time.time())
    ids = [text(i) for i in redis.zrange(keys.DIAGNOSTICS_INDEX, 0, -1)]
    pipe = redis.pipeline()
    for job_id in ids:
        pipe.hgetall(keys.diagnostics(job_id))
    out = []
    for job_id, raw in zip(ids, pipe.execute(), strict=True):
        if raw:
            out.append({text(k): text(v) for k, v in raw.items()})
        else:  # deleted or expired with its job
            redis.zrem(keys.DIAGNOSTICS_INDEX, job_id)
    return out


def live_draws(redis: Any, job_id: str, chains: int) -> tuple[list[dict[str, np.ndarray] | None], list[int]]:
    """Each chain's draws and sample stats so far (its live blocks concatenated; None before any) and its
    iterations done, read in one round trip (a block and its iteration count are written together)."""
    pipe = redis.pipeline()
    for c in range(chains):
        pipe.lrange(keys.live_blocks(job_id, c), 0, -1)
        pipe.hget(keys.chain(job_id, c), "iteration")
    replies = pipe.execute()
    return [concat_blocks(replies[2 * c]) for c in range(chains)], [int(replies[2 * c + 1] or 0) for c in range(chains)]


def concat_blocks(blobs: list[bytes]) -> dict[str, np.ndarray] | None:
    arrays = [block for block in map(unpack, blobs) if block and _length(block) > 0]
    if not arrays:
        return None
    return {k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]}


def _number(text: str) -> float | None:
    value = json.loads(text)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
