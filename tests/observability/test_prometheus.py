"""A real Prometheus (Debian's) scraping a real local stack (Redis, API, 2 workers) every second while jobs
run; everything is asserted through Prometheus' HTTP API: every metric, every dashboard query, the live
R-hat of a hard and an easy job, equality with ArviZ, one exporter per job, the alert rules, the linger."""

from __future__ import annotations

import copy
import json
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from cli.stack import Stack, free_port
from service.client import Client
from service.language.loader import load_file
from service.priors import record_refit
from service.priors.schedule import Schedule, next_run
from tests.observability.tooling import DASHBOARD, builder
from tests.service.conftest import TOKENS, make_stack

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LINGER = 40.0
EASY = {"spec": 1, "name": "normal_mean", "data": {"y": [0.3, -1.2, 0.8, 1.9, -0.4, 0.1, 0.7, -0.9]},
        "params": {"mu": "Normal(0, 10)"}, "observe": {"y": "Normal(mu, 1)"}}

SCHEDULED = {"spec": 1, "params": {"mu": "Normal(0, 10)"}, "observe": {"y": "Normal(mu, 1)"}}


def centered_eight_schools() -> dict[str, Any]:
    """The funnel: hard for NUTS (divergences, slow mixing of tau), and with 30 warmup iterations worse."""
    spec = copy.deepcopy(load_file(EXAMPLES / "eight_schools.yaml"))
    spec["params"]["theta"] = {"dist": "Normal(mu, tau)", "dims": ["school"]}
    spec["name"] = "eight_schools_centered"
    return spec


@dataclass
class Run:
    stack: Stack
    client: Client
    hard: str = ""
    easy: str = ""
    cancelled: str = ""
    burst: list[str] = field(default_factory=list)
    started: float = 0.0
    ended: dict[str, float] = field(default_factory=dict)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        body = httpx.get(f"{self.stack.prometheus_url}/api/v1/query", params=params, timeout=30).json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def series(self, expr: str) -> dict[float, float]:
        """{timestamp: value} of one series over the run, at the scrape interval."""
        body = httpx.get(f"{self.stack.prometheus_url}/api/v1/query_range", timeout=30,
                         params={"query": expr, "start": self.started, "end": time.time(), "step": 1}).json()
        result = body["data"]["result"]
        assert len(result) == 1, (expr, result)
        return {float(t): float(v) for t, v in result[0]["values"]}


def wait_done(client: Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(job_id)
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, compile_cache: Path) -> Iterator[Run]:
    stack = make_stack(tmp_path_factory.mktemp("monitored"), compile_cache, prometheus_port=free_port(),
                       diagnostics_interval=0.5, metrics_linger_seconds=LINGER,
                       diagnostics_cpu_share=1)  # refresh as often as the interval allows
    stack.start()
    client = Client(stack.url, TOKENS["alice"])
    try:
        r = Run(stack, client)
        hard_model = centered_eight_schools()
        for model in (hard_model, EASY):  # compile both programs first, so that both chains start together
            wait_done(client, client.submit({"model": model, "sampler": {"chains": 2, "draws": 20, "warmup": 20,
                                                                          "seed": 1}})["id"])
        r.started = time.time()
        r.hard = client.submit({"model": hard_model, "sampler": {"chains": 2, "warmup": 30, "draws": 20000,
                                                                 "seed": 7}})["id"]
        r.easy = client.submit({"model": EASY, "sampler": {"chains": 2, "warmup": 300, "draws": 3000, "seed": 7}})["id"]
        r.burst = [client.submit({"model": EASY, "sampler": {"chains": 2, "draws": 200, "seed": 100 + i}})["id"]
                   for i in range(4)]  # waits behind the hard job: the queue is visibly non-empty
        r.cancelled = client.submit({"model": EASY, "sampler": {"chains": 2, "draws": 200, "seed": 99}})["id"]
        client.cancel(r.cancelled)
        redis = Redis.from_url(stack.redis_url)
        record_refit(redis, "school_effects", "succeeded", version=3)
        record_refit(redis, "school_effects", "failed")
        client.put_dataset("schools", {"y": "float"})  # a scheduled prior (its next run: 1 January, not today)
        client.put_prior("scheduled", {"model": SCHEDULED, "data_from": {"dataset": "schools"},
                                       "export": {"params": ["mu"]}})
        client.schedule_prior("scheduled", "0 3 1 1 *", "Europe/Berlin")
        for job_id in (r.hard, r.easy, *r.burst):
            assert wait_done(client, job_id)["state"] == "succeeded"
            r.ended[job_id] = time.time()
        time.sleep(4)  # a few more scrapes of the final figures
        yield r
    finally:
        client.close()
        stack.stop()


def test_every_metric_has_samples_with_sensible_values(run: Run) -> None:
    assert run.value('max(chainyard_jobs{state="succeeded"})') >= 8
    assert run.value('max(chainyard_jobs{state="cancelled"})') == 1
    assert run.value('max(chainyard_jobs{state="running"})') == 0
    assert run.value("max(chainyard_workers)") == 2
    assert run.value("max(max_over_time(chainyard_queue_depth[5m]))") >= 4
    assert run.value("max(chainyard_queue_depth)") == 0
    assert run.value("max(chainyard_queue_pending)") == 0
    assert run.value('sum(chainyard_job_duration_seconds_count{outcome="succeeded"})') >= 8
    assert run.value('sum(chainyard_job_duration_seconds_count{outcome="cancelled"})') == 1
    p50 = run.value("histogram_quantile(0.5, sum by (le) (chainyard_job_duration_seconds_bucket))")
    assert 0 < p50 < 300
    sampled = run.value('sum(chainyard_chain_iterations_total{phase="sampling"})')
    assert sampled >= 2 * (20000 + 3000 + 4 * 200 + 2 * 20)  # every succeeded chain's draws (cancel adds some)
    assert run.value('sum(chainyard_chain_iterations_total{phase="warmup"})') >= 2 * (30 + 300 + 4 * 1000)
    gradients = run.value("sum(chainyard_gradient_evaluations_total)")
    assert gradients > sampled  # at least one leapfrog step per iteration
    busy = run.query("max_over_time(chainyard_worker_busy[5m])")
    assert {s["metric"]["worker"]: float(s["value"][1]) for s in busy} == {"worker-0": 1.0, "worker-1": 1.0}
    assert run.value('sum(chainyard_http_requests_total{method="POST",route="/v1/jobs",status="202"})') >= 8
    assert run.value('sum(chainyard_http_request_duration_seconds_count{route="/v1/jobs/{job_id}"})') > 0
    assert run.value('max(chainyard_prior_version{prior="school_effects"})') == 3
    assert run.value('max(chainyard_prior_refit_total{prior="school_effects",outcome="failed"})') == 1
    assert run.value('max(chainyard_prior_last_refit_ok{prior="school_effects"})') == 0
    new_year = next_run(Schedule(cron="0 3 1 1 *", timezone="Europe/Berlin"), datetime.now(UTC))
    assert run.value('max(chainyard_prior_next_refit_timestamp{prior="alice/scheduled"})') == new_year.timestamp()
    for name in ("chainyard_job_rhat_max", "chainyard_job_ess_bulk_min", "chainyard_job_ess_tail_min",
                 "chainyard_job_divergences", "chainyard_job_progress", "chainyard_job_draws"):
        assert run.value(f'max({name}{{job="{run.hard}",model="eight_schools_centered"}})') >= 0, name
    assert run.value(f'max(chainyard_job_progress{{job="{run.easy}"}})') == 1
    assert run.value(f'max(chainyard_job_divergences{{job="{run.hard}"}})') > 0  # the funnel diverges


def test_every_dashboard_query_returns_data(run: Run) -> None:
    doc = json.loads(DASHBOARD.read_text())
    queries = builder.queries(doc)
    assert len(queries) >= 20
    empty = []
    for title, expr in queries:
        promql = expr.replace("$__rate_interval", "1m").replace('job=~"$job"', f'job=~"{run.hard}|{run.easy}"')
        assert "$" not in promql
        if not run.query(promql):
            empty.append(f"{title}: {promql}")
    assert empty == []
    variable = next(v for v in doc["templating"]["list"] if v["name"] == "job")["query"]["query"]
    assert variable == "label_values(chainyard_job_progress, job)"
    jobs = httpx.get(f"{run.stack.prometheus_url}/api/v1/label/job/values", timeout=30,
                     params={"match[]": "chainyard_job_progress"}).json()["data"]
    assert {run.hard, run.easy} <= set(jobs)


def test_live_rhat_is_high_early_in_the_hard_run_and_converges_in_the_easy_one(run: Run) -> None:
    hard = run.series(f'max(chainyard_job_rhat_max{{job="{run.hard}"}})')
    draws = run.series(f'max(chainyard_job_draws{{job="{run.hard}"}})')
    assert len(set(draws.values())) >= 4  # Prometheus saw the figures move while the job ran
    early = [hard[t] for t in sorted(hard)[:3]]
    assert max(early) > 1.01, early
    easy = run.series(f'max(chainyard_job_rhat_max{{job="{run.easy}"}})')
    assert easy[max(easy)] < 1.01
    assert run.value(f'max(chainyard_job_ess_bulk_min{{job="{run.easy}"}})') > 400


def test_gauges_equal_arviz_on_the_same_draws(run: Run) -> None:
    """At every scrape, the exported figures are ArviZ's on the first `draws` draws of the chains counted."""
    import arviz as az

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fit.nc"
        path.write_bytes(run.client.netcdf(run.hard))
        posterior = {k: np.asarray(v.values) for k, v in az.from_netcdf(path).posterior.data_vars.items()}
    names = {"rhat": "chainyard_job_rhat_max", "bulk": "chainyard_job_ess_bulk_min",
             "tail": "chainyard_job_ess_tail_min", "draws": "chainyard_job_draws", "chains": "chainyard_job_chains"}
    seen = {k: run.series(f'max({name}{{job="{run.hard}"}})') for k, name in names.items()}
    compared = set()
    for t in sorted(seen["draws"]):
        n, chains = int(seen["draws"][t]), int(seen["chains"].get(t, 0))
        if chains != 2 or n in compared or t not in seen["rhat"]:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = az.convert_to_dataset({k: v[:, :n] for k, v in posterior.items()})
            rhat, bulk, tail = az.rhat(ds), az.ess(ds, method="bulk"), az.ess(ds, method="tail")
        assert seen["rhat"][t] == max(float(rhat[v].max()) for v in rhat.data_vars), n
        assert seen["bulk"][t] == min(float(bulk[v].min()) for v in bulk.data_vars), n
        assert seen["tail"][t] == min(float(tail[v].min()) for v in tail.data_vars), n
        compared.add(n)
    assert len(compared) >= 4 and 20000 in compared


def test_each_job_is_exported_by_exactly_one_process(run: Run) -> None:
    window = f"[{int(time.time() - run.started) + 5}s:1s]"
    assert run.value(f"max(max_over_time(count by (job) (chainyard_job_rhat_max){window}))") == 1
    assert run.value(f"min_over_time(sum(chainyard_metrics_leader){window})") == 1
    assert run.value(f"max_over_time(sum(chainyard_metrics_leader){window})") == 1
    targets = [run.stack.url, *(f"http://127.0.0.1:{p}" for p in run.stack.metrics_ports.values())]
    exporters = 0
    for url in targets:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        names = {s.name for f in text_string_to_metric_families(text) for s in f.samples
                 if s.labels.get("job") == run.hard}
        exporters += bool(names)
    assert exporters == 1


def test_alert_rules_are_loaded_and_the_divergence_alert_fires(run: Run) -> None:
    rules = httpx.get(f"{run.stack.prometheus_url}/api/v1/rules", timeout=30).json()["data"]["groups"]
    loaded = {r["name"]: r for g in rules for r in g["rules"]}
    assert len(loaded) == 6 and all(r["health"] == "ok" for r in loaded.values()), loaded
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alerts = httpx.get(f"{run.stack.prometheus_url}/api/v1/alerts", timeout=30).json()["data"]["alerts"]
        firing = {(a["labels"]["alertname"], a["labels"].get("job")) for a in alerts if a["state"] == "firing"}
        if ("ChainyardJobDivergences", run.hard) in firing:
            break
        time.sleep(1)
    assert ("ChainyardJobDivergences", run.hard) in firing
    assert ("ChainyardJobDivergences", run.easy) not in firing
    assert any(name == "ChainyardPriorRefitFailing" for name, _ in firing)
    assert not any(name == "ChainyardNoWorker" for name, _ in firing)


def test_zz_per_job_series_vanish_after_the_linger(run: Run) -> None:
    """Last (zz): waits for the linger to pass."""
    time.sleep(max(0.0, run.ended[run.easy] + LINGER + 3 - time.time()))
    assert run.query(f'chainyard_job_rhat_max{{job="{run.easy}"}}') == []
    assert run.query(f'chainyard_job_progress{{job="{run.easy}"}}') == []
    assert run.value('max(chainyard_jobs{state="succeeded"})') >= 8  # the jobs themselves are kept
