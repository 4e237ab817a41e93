"""Prometheus metrics (design section 7), on /metrics of the API and of every worker.

Two kinds:
- per process: job durations (observed by the process that ends a job, so each job counts once), chain
  iterations and gradient evaluations (workers), worker busy, HTTP requests (API);
- cluster-wide, read from Redis at scrape time by ClusterCollector: per-job convergence figures, jobs by
  state, queue depth, live workers, prior versions and refits. Every process registers the collector but
  only the holder of a Redis lease yields these series, so each exists exactly once however many API
  replicas and workers Prometheus scrapes. The lease moves to another process if its holder stops being
  scraped for METRICS_LEADER_SECONDS; dashboards aggregate with `max by (job)` so a move is invisible.

Per-job series carry a `job` label, which clashes with Prometheus' target label: scrape with
`honor_labels: true` (the ServiceMonitor sets honorLabels).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import keys, live
from service.codec import text
from service.jobs.record import JobState
from service.priors import schedules
from service.queue import ChainQueue

JOB_DURATION = Histogram(
    "chainyard_job_duration_seconds", "Time from submission to the end of a job, by outcome.", ["outcome"],
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400))
CHAIN_ITERATIONS = Counter("chainyard_chain_iterations", "NUTS iterations run by this worker's chains.", ["phase"])
GRADIENT_EVALUATIONS = Counter("chainyard_gradient_evaluations",
                               "Log-density gradient evaluations (leapfrog steps) by this worker's chains.")
WORKER_BUSY = Gauge("chainyard_worker_busy", "1 while this worker runs a chain, else 0.", ["worker"])
HTTP_REQUESTS = Counter("chainyard_http_requests", "HTTP requests served by the API.", ["method", "route", "status"])
HTTP_DURATION = Histogram("chainyard_http_request_duration_seconds", "Time to serve an HTTP request.",
                          ["method", "route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
HTTP_CONNECTIONS = Gauge("chainyard_http_connections", "Open HTTP connections of this API process.")
HTTP_CONNECTIONS_CLOSED = Counter(
    "chainyard_http_connections_closed", "HTTP connections the API closed on its own, by reason: header_timeout "
    "(no whole request head in time), body_timeout, over_capacity (max_connections), drain_limit.", ["reason"])

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
"""Methods counted under their name; any other is counted as `other` (clients choose the method token)."""
LABEL_MAX = 100
"""Longest label value made from a user's string (model names)."""


def label_value(value: str) -> str:
    """A user's string as a label value: at most LABEL_MAX characters, each printable (others, lone surrogates
    included, become '?'), so no name can break the exposition or blow up the series."""
    return "".join(ch if ch.isprintable() else "?" for ch in value[:LABEL_MAX])

WORKER_ALIVE_SECONDS = 30.0
"""A worker whose last heartbeat is older than this is not counted in chainyard_workers."""

_LEAD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_PER_JOB = (
    ("chainyard_job_rhat_max", "max_rhat", "Largest rank-normalized split R-hat over all parameters, draws so far."),
    ("chainyard_job_ess_bulk_min", "min_ess_bulk", "Smallest bulk ESS over all parameters, draws so far."),
    ("chainyard_job_ess_tail_min", "min_ess_tail", "Smallest tail ESS over all parameters, draws so far."),
    ("chainyard_job_divergences", "divergences", "Divergent transitions after warmup so far, all chains."),
    ("chainyard_job_draws", "draws_per_chain", "Draws per chain the convergence figures are computed from."),
    ("chainyard_job_draws_target", "draws_target", "Draws per chain the chains run to now (the current round's end "
     "with sampler.until; grows with each round and extension)."),
    ("chainyard_job_rhat_target", "rhat_target", "sampler.until: sampling stops once max R-hat is below this."),
    ("chainyard_job_ess_bulk_target", "ess_bulk_target", "sampler.until: ... and min bulk ESS is at least this."),
    ("chainyard_job_ess_tail_target", "ess_tail_target", "sampler.until: ... and min tail ESS is at least this."),
)
_CHAINS_HELP = "Chains in the convergence figures (those with draws; all of them once the job ends)."


class ClusterCollector(Collector):
    """Cluster-wide series from Redis, yielded only by the lease holder (see the module docstring)."""

    def __init__(self, redis: Any, *, identity: str | None = None) -> None:
        self.r = redis
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    def describe(self) -> list[Metric]:
        return []  # collected on demand: registering must not touch Redis

    def collect(self) -> Iterator[Metric]:
        leader = GaugeMetricFamily("chainyard_metrics_leader",
                                   "1 in the one process that exports the cluster-wide chainyard series.")
        try:
            leading = bool(self.r.eval(_LEAD, 1, keys.METRICS_LEADER, self.identity,
                                       int(keys.METRICS_LEADER_SECONDS * 1000)))
            series = list(self._cluster()) if leading else []
        except RedisError:
            leading, series = False, []
        leader.add_metric([], 1.0 if leading else 0.0)
        yield leader
        yield from series

    def _cluster(self) -> Iterator[Metric]:
        now = time.time()
        pipe = self.r.pipeline()
        for state in JobState:
            pipe.zremrangebyscore(keys.jobs_in_state(state), "-inf", now)
            pipe.zcard(keys.jobs_in_state(state))
        pipe.zcount(keys.WORKERS, now - WORKER_ALIVE_SECONDS, "+inf")
        pipe.hgetall(keys.PRIOR_VERSIONS)
        pipe.hgetall(keys.PRIOR_REFITS)
        pipe.hgetall(keys.PRIOR_LAST_OUTCOME)
        replies = pipe.execute()
        jobs = GaugeMetricFamily("chainyard_jobs", "Jobs kept in Redis, by state.", labels=["state"])
        for i, state in enumerate(JobState):
            jobs.add_metric([state.value], replies[2 * i + 1])
        yield jobs
        yield GaugeMetricFamily("chainyard_workers", "Workers with a heartbeat in the last 30 s.",
                                value=replies[2 * len(JobState)])
        depth = ChainQueue(self.r, visibility_timeout=0).depth()
        yield GaugeMetricFamily("chainyard_queue_depth", "Chain tasks waiting for a worker.", value=depth.waiting)
        yield GaugeMetricFamily("chainyard_queue_pending", "Chain tasks claimed by a worker, not yet done.",
                                value=depth.pending)
        versions = GaugeMetricFamily("chainyard_prior_version", "Version of each empirical prior.", labels=["prior"])
        for prior, version in sorted(replies[-3].items()):
            versions.add_metric([label_value(text(prior))], float(version))
        yield versions
        refits = CounterMetricFamily("chainyard_prior_refit", "Refits of each empirical prior, by outcome.",
                                     labels=["prior", "outcome"])
        for key, count in sorted(replies[-2].items()):
            prior, _, outcome = text(key).rpartition("|")
            refits.add_metric([label_value(prior), label_value(outcome)], float(count))
        yield refits
        last = GaugeMetricFamily("chainyard_prior_last_refit_ok", "1 if the latest refit of a prior succeeded.",
                                 labels=["prior"])
        for prior, outcome in sorted(replies[-1].items()):
            last.add_metric([label_value(text(prior))], 1.0 if text(outcome) == "succeeded" else 0.0)
        yield last
        yield self._next_refits(now)
        yield from self._per_job(live.exported(self.r))

    def _next_refits(self, now: float) -> Metric:
        """chainyard_prior_next_refit_timestamp from keys.PRIOR_SCHEDULES (suspended schedules: no series)."""
        family = GaugeMetricFamily("chainyard_prior_next_refit_timestamp",
                                   "Unix time of the next scheduled refit of each prior with a schedule.",
                                   labels=["prior"])
        for value, score in self.r.zrangebyscore(keys.PRIOR_SCHEDULES, "-inf", "(+inf", withscores=True):
            label = text(value)
            at: float | None = float(score)
            if at is not None and at < now - schedules.STALE_SECONDS:  # not advanced here (Kubernetes mode)
                found = schedules.read_schedule(self.r, *schedules.split_member(label))
                at = schedules.upcoming(found[0], at, now) if found else None
            if at is not None:
                family.add_metric([label_value(label)], at)
        return family


    @staticmethod
    def _per_job(stored: list[dict[str, str]]) -> Iterator[Metric]:
        families = {field: GaugeMetricFamily(name, text, labels=["job", "model"]) for name, field, text in _PER_JOB}
        progress = GaugeMetricFamily("chainyard_job_progress", "Fraction of the job's iterations done (1 at the end).",
                                     labels=["job", "model"])
        ended = GaugeMetricFamily("chainyard_job_ended", "1 once the job ended (its figures are final), else 0.",
                                  labels=["job", "model", "outcome"])
        chains = GaugeMetricFamily("chainyard_job_chains", _CHAINS_HELP, labels=["job", "model"])
        for fig in stored:
            labels = [label_value(fig["job"]), label_value(fig["model"])]
            progress.add_metric(labels, float(fig["progress"]))
            if "chains" in fig:
                chains.add_metric(labels, float(len(json.loads(fig["chains"]))))
            ended.add_metric([*labels, label_value(fig.get("outcome") or "running")],
                             1.0 if fig.get("ended") == "1" else 0.0)
            for field, family in families.items():
                value = json.loads(fig[field]) if field in fig else None
                if value is not None:
                    family.add_metric(labels, float(value))
        yield from families.values()
        yield chains
        yield progress
        yield ended


class HttpMetrics:
    """Counts and times requests by method, route template (not the raw path: ids stay out of labels) and
    status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            HTTP_DURATION.labels(method, template).observe(time.perf_counter() - start)
