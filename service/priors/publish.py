"""Publishing a refit when its job ends, in whichever process assembles it (a worker, the API, the CLI).

The gate is applied to the fit's summary; a fit that passes is exported (service.priors.export) and becomes
version N+1, which `latest` then names; one that fails, or a refit job that failed or was cancelled, is
recorded with its reasons and diagnostics and leaves `latest` where it was. Each outcome is written by one
Lua script, once per job (`keys.prior_published`): a job assembled twice, or by two processes, publishes once,
and the refit metrics count it once.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from service import keys
from service.priors.definition import Export, Gate, gate_failures
from service.priors.export import ExportSettings, fit
from service.priors.refs import RefitOf

log = logging.getLogger("chainyard.priors")

REFIT_LOG = 200
"""Refit outcomes kept per prior (newest first)."""

_OUTCOME = """
-- KEYS: head, versions, published, refits, metric versions, metric refits, metric last outcome
-- ARGV: job, outcome, version JSON (empty when failed), log entry JSON, metric label, log length
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local done = redis.call('HGET', KEYS[3], ARGV[1])
if done then return tonumber(done) end
local number = 0
if ARGV[3] ~= '' then
  number = redis.call('HINCRBY', KEYS[1], 'versions', 1)
  redis.call('HSET', KEYS[2], number, ARGV[3])
  redis.call('HSET', KEYS[1], 'latest', number)
  redis.call('HSET', KEYS[5], ARGV[5], number)
end
redis.call('HSET', KEYS[3], ARGV[1], number)
local entry = string.gsub(ARGV[4], '"version": null', '"version": ' .. number, 1)
redis.call('LPUSH', KEYS[4], entry)
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[6]) - 1)
redis.call('HINCRBY', KEYS[6], ARGV[5] .. '|' .. ARGV[2], 1)
redis.call('HSET', KEYS[7], ARGV[5], ARGV[2])
return number
"""


def metric_label(tenant: str, prior: str) -> str:
    """The `prior` label of the refit metrics."""
    return f"{tenant}/{prior}"


class Publisher:
    """Records the outcome of refit jobs (JobStore calls it; it knows nothing of jobs but their records)."""

    def __init__(self, redis: Any) -> None:
        self.r = redis
        self._script = redis.register_script(_OUTCOME)

    def succeeded(self, *, job: str, tenant: str, refit: RefitOf, summary: dict[str, Any],
                  draws: dict[str, np.ndarray], finished_at: float | None = None) -> int | None:
        """A refit job's fit is done: gate, export, publish. The version published, or None (gate failed)."""
        totals = summary.get("totals", {})
        gate = Gate(**refit.gate)
        reasons = gate_failures(gate, totals)
        export: dict[str, Any] | None = None
        if not reasons:
            spec = Export(**refit.export)
            settings = ExportSettings(params=tuple(spec.params), method=spec.method, inflate=spec.inflate,
                                      robust_weight=spec.robust.weight if spec.robust else 0.0,
                                      robust_scale=spec.robust.scale if spec.robust else 10.0)
            try:
                export = fit(draws, refit.supports, settings)
            except (ValueError, KeyError) as exc:
                reasons = [f"the export could not be fitted: {exc}"]
        diagnostics = _diagnostics(totals)
        now = finished_at or time.time()
        entry = self._entry(job, refit, "succeeded" if export is not None else "failed", reasons, diagnostics, now)
        version = ""
        if export is not None:
            version = json.dumps({"source": "refit", "created_at": now, "export": export, "diagnostics": diagnostics,
                                  "provenance": {"job": job, "dataset": refit.dataset,
                                                 "dataset_version": refit.dataset_version,
                                                 "dataset_hash": refit.dataset_hash, "rows": refit.dataset_rows,
                                                 "revision": refit.revision, "gate": refit.gate}},
                                 allow_nan=False)
        number = self._record(tenant, refit.prior, job, entry, version)
        return number if export is not None and number and number > 0 else None

    def failed(self, *, job: str, tenant: str, refit: RefitOf, reason: str) -> None:
        """A refit job ended without a fit (failed, cancelled, deleted)."""
        self._record(tenant, refit.prior, job, self._entry(job, refit, "failed", [reason], {}, time.time()), "")

    def published(self, *, tenant: str, prior: str, version: dict[str, Any], source: str) -> int:
        """Publish a version that no refit job made (an elicited prior)."""
        now = time.time()
        body = json.dumps({"source": source, "created_at": now, **version}, allow_nan=False)
        entry = json.dumps({"job": None, "source": source, "outcome": "succeeded", "version": None,
                            "reasons": [], "diagnostics": {}, "at": now})
        number = self._record(tenant, prior, f"{source}:{now!r}", entry, body)
        return int(number)

    def _record(self, tenant: str, prior: str, job: str, entry: str, version: str) -> int:
        number = int(self._script(
            keys=[keys.prior(tenant, prior), keys.prior_versions(tenant, prior), keys.prior_published(tenant, prior),
                  keys.prior_refits(tenant, prior), keys.PRIOR_VERSIONS, keys.PRIOR_REFITS, keys.PRIOR_LAST_OUTCOME],
            args=[job, "succeeded" if version else "failed", version, entry, metric_label(tenant, prior), REFIT_LOG]))
        if number < 0:
            log.info("prior %s/%s is gone; the outcome of %s is not recorded", tenant, prior, job)
        return number

    @staticmethod
    def _entry(job: str, refit: RefitOf, outcome: str, reasons: list[str], diagnostics: dict[str, Any],
               now: float) -> str:
        return json.dumps({"job": job, "source": "refit", "outcome": outcome, "version": None, "reasons": reasons,
                           "diagnostics": diagnostics, "dataset": refit.dataset,
                           "dataset_version": refit.dataset_version, "rows": refit.dataset_rows, "at": now})


def _diagnostics(totals: dict[str, Any]) -> dict[str, Any]:
    return {k: totals.get(k) for k in ("max_rhat", "min_ess_bulk", "min_ess_tail", "divergences")}
