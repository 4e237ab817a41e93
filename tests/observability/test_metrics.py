"""The exporter against a real Redis server: live figures equal ArviZ, one exporter at a time, linger,
job states, queue, priors, HTTP metrics. The whole stack under a real Prometheus: test_prometheus.py."""

from __future__ import annotations

import asyncio
import io
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from cli.stack import free_port
from service import keys
from service.config import ApiSettings, Settings
from service.jobs.record import JobRecord, JobState
from service.jobs.store import JobStore
from service.language.loader import load_file
from service.live import LiveDiagnostics
from service.metrics import ClusterCollector
from service.priors import record_refit
from service.sampler import SamplerSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def redis(empty_redis: Redis) -> Redis:
    return empty_redis


def scrape(collector: ClusterCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one collect, through the exposition text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def job_series(samples: dict[Any, float], name: str, job: str) -> float | None:
    found = [v for (n, labels), v in samples.items() if n == name and ("job", job) in labels]
    assert len(found) <= 1
    return found[0] if found else None


def blob(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def running_job(redis: Redis, job_id: str, *, chains: int, iterations: int, name: str = "toy") -> JobRecord:
    record = JobRecord(id=job_id, tenant="t", name=None, labels={}, state=JobState.RUNNING,
                       sampler=SamplerSettings(chains=chains, warmup=0, draws=iterations, seed=1), model_name=name,
                       model_fingerprint="", structure="", created_at=time.time(), deadline=time.time() + 60)
    redis.hset(keys.job(job_id), mapping=record.to_hash())
    return record


def push_chain(redis: Redis, job_id: str, chain: int, draws: dict[str, np.ndarray], diverging: np.ndarray,
               block: int = 10) -> None:
    redis.rpush(keys.live_blocks(job_id, chain), blob({"mu": np.zeros(0), "stat.diverging": np.zeros(0, bool)}))
    for start in range(0, len(diverging), block):  # a warmup block without draws, then blocks of draws
        part = {k: v[start:start + block] for k, v in draws.items()}
        redis.rpush(keys.live_blocks(job_id, chain), blob({**part, "stat.diverging": diverging[start:start + block]}))
    redis.hset(keys.chain(job_id, chain), "iteration", len(diverging))


def arviz_figures(posterior: dict[str, np.ndarray]) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        ds = az.convert_to_dataset(posterior)
        flat = {name: np.concatenate([np.ravel(d[v].values) for v in d.data_vars])
                for name, d in (("rhat", az.rhat(ds)), ("bulk", az.ess(ds, method="bulk")),
                                ("tail", az.ess(ds, method="tail")))}
    return {"rhat": float(flat["rhat"].max()), "bulk": float(flat["bulk"].min()), "tail": float(flat["tail"].min())}


def test_live_figures_equal_arviz_on_the_common_prefix_of_chains_with_draws(redis: Redis) -> None:
    rng = np.random.default_rng(4)
    lengths = [57, 41, 3]  # the third chain has too few draws to count yet
    draws = [{"mu": rng.normal(size=n) + 0.3 * c, "theta": rng.normal(size=(n, 3)).cumsum(axis=0)}
             for c, n in enumerate(lengths)]
    diverging = [rng.random(n) < 0.1 for n in lengths]
    record = running_job(redis, "jlive", chains=3, iterations=100)
    for c in range(3):
        push_chain(redis, "jlive", c, draws[c], diverging[c])
    live = LiveDiagnostics(redis, interval=5, linger=60)
    live.refresh(record)

    expected = arviz_figures({k: np.stack([draws[c][k][:41] for c in (0, 1)]) for k in ("mu", "theta")})
    samples = scrape(ClusterCollector(redis))
    assert job_series(samples, "chainyard_job_rhat_max", "jlive") == expected["rhat"]
    assert job_series(samples, "chainyard_job_ess_bulk_min", "jlive") == expected["bulk"]
    assert job_series(samples, "chainyard_job_ess_tail_min", "jlive") == expected["tail"]
    assert job_series(samples, "chainyard_job_divergences", "jlive") == sum(int(d.sum()) for d in diverging)
    assert job_series(samples, "chainyard_job_draws", "jlive") == 41
    assert job_series(samples, "chainyard_job_chains", "jlive") == 2
    assert job_series(samples, "chainyard_job_progress", "jlive") == pytest.approx(sum(lengths) / 300)
    assert ("chainyard_job_rhat_max", (("job", "jlive"), ("model", "toy"))) in samples
    assert expected["rhat"] > 1.01  # the chains were drawn apart: the figure shows it

    public = live.public("jlive")
    assert public is not None and public.chains == [0, 1] and public.max_rhat == expected["rhat"]


def test_no_figures_before_enough_draws_but_progress_is_exported(redis: Redis) -> None:
    record = running_job(redis, "jwarm", chains=2, iterations=100)
    redis.rpush(keys.live_blocks("jwarm", 0), blob({"mu": np.zeros(0), "stat.diverging": np.zeros(0, bool)}))
    redis.hset(keys.chain("jwarm", 0), "iteration", 30)
    LiveDiagnostics(redis, interval=5, linger=60).refresh(record)
    samples = scrape(ClusterCollector(redis))
    assert job_series(samples, "chainyard_job_rhat_max", "jwarm") is None
    assert job_series(samples, "chainyard_job_progress", "jwarm") == pytest.approx(0.15)


def test_refresh_is_due_once_per_interval_and_never_for_a_deleted_job(redis: Redis) -> None:
    running_job(redis, "jdue", chains=1, iterations=10)
    live = LiveDiagnostics(redis, interval=0.3, linger=60)
    assert [live.due("jdue") for _ in range(3)] == [True, False, False]
    time.sleep(0.4)
    assert live.due("jdue")
    assert not live.due("jgone") and not redis.exists(keys.diagnostics_due("jgone"))


def test_final_figures_are_not_overwritten_by_a_late_live_refresh_and_vanish_after_the_linger(redis: Redis) -> None:
    rng = np.random.default_rng(5)
    record = running_job(redis, "jend", chains=2, iterations=50)
    full = {"mu": rng.normal(size=(2, 50))}
    for c in range(2):
        push_chain(redis, "jend", c, {"mu": full["mu"][c, :20]}, np.zeros(20, bool))
    live = LiveDiagnostics(redis, interval=5, linger=0.5)
    from service.results import summary

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        idata = az.from_dict(posterior=full, sample_stats={"diverging": np.zeros((2, 50), bool)})
    live.finalize(record, summary(idata)["totals"], "succeeded")
    live.refresh(record)  # a worker's refresh that started before the end
    collector = ClusterCollector(redis)
    samples = scrape(collector)
    assert job_series(samples, "chainyard_job_draws", "jend") == 50
    assert job_series(samples, "chainyard_job_rhat_max", "jend") == arviz_figures(full)["rhat"]
    assert samples[("chainyard_job_ended", (("job", "jend"), ("model", "toy"), ("outcome", "succeeded")))] == 1
    time.sleep(0.7)
    samples = scrape(collector)
    assert samples[("chainyard_metrics_leader", ())] == 1
    assert job_series(samples, "chainyard_job_rhat_max", "jend") is None
    assert redis.zcard(keys.DIAGNOSTICS_INDEX) == 0


def test_exactly_one_process_exports_the_cluster_series_and_the_lease_moves(redis: Redis,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "METRICS_LEADER_SECONDS", 0.5)
    record = running_job(redis, "jone", chains=1, iterations=10)
    push_chain(redis, "jone", 0, {"mu": np.arange(10.0)}, np.zeros(10, bool))
    LiveDiagnostics(redis, interval=5, linger=60).refresh(record)
    api, worker = ClusterCollector(redis, identity="api"), ClusterCollector(redis, identity="worker")

    for _ in range(3):  # while the holder keeps being scraped, it alone exports
        a, w = scrape(api), scrape(worker)
        assert a[("chainyard_metrics_leader", ())] == 1 and w[("chainyard_metrics_leader", ())] == 0
        assert job_series(a, "chainyard_job_draws", "jone") == 10
        assert job_series(w, "chainyard_job_draws", "jone") is None
        assert ("chainyard_queue_depth", ()) in a and ("chainyard_queue_depth", ()) not in w
        time.sleep(0.2)
    time.sleep(0.7)  # the holder stops being scraped: the lease lapses and the next scraped process takes it
    w = scrape(worker)
    assert w[("chainyard_metrics_leader", ())] == 1 and job_series(w, "chainyard_job_draws", "jone") == 10
    assert scrape(api)[("chainyard_metrics_leader", ())] == 0


def test_job_states_queue_and_workers_follow_the_store(redis: Redis, redis_server: str) -> None:
    store = JobStore(redis, Settings(redis_url=redis_server, retention_seconds=60))
    body = {"model": load_file(EXAMPLES / "eight_schools.yaml"), "sampler": {"chains": 2, "seed": 1}}
    ids = [store.submit("t", **body, name=f"n{i}", labels={})[0].id for i in range(3)]
    redis.xgroup_create(keys.TASKS, keys.GROUP, id="0")
    collector = ClusterCollector(redis)

    def state_counts() -> dict[str, float]:
        samples = scrape(collector)
        return {dict(labels)["state"]: v for (name, labels), v in samples.items() if name == "chainyard_jobs"}

    assert state_counts() == {"queued": 3, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert scrape(collector)[("chainyard_queue_depth", ())] == 6
    redis.xreadgroup(keys.GROUP, "w0", {keys.TASKS: ">"}, count=1)
    samples = scrape(collector)
    assert samples[("chainyard_queue_depth", ())] == 5 and samples[("chainyard_queue_pending", ())] == 1
    store.mark_running(ids[0])
    store.finish(ids[1], JobState.FAILED, "boom")
    assert state_counts() == {"queued": 1, "running": 1, "succeeded": 0, "failed": 1, "cancelled": 0}
    store.finish(ids[0], JobState.SUCCEEDED)
    store.delete("t", ids[2])
    assert state_counts() == {"queued": 0, "running": 0, "succeeded": 1, "failed": 1, "cancelled": 0}
    redis.zadd(keys.jobs_in_state("failed"), {ids[1]: time.time() - 1})  # its retention ended
    assert state_counts()["failed"] == 0

    redis.zadd(keys.WORKERS, {"worker-0": time.time(), "worker-1": time.time() - 120})
    assert scrape(collector)[("chainyard_workers", ())] == 1


def test_prior_refits_are_exported(redis: Redis) -> None:
    record_refit(redis, "county_effects", "succeeded", version=1)
    record_refit(redis, "county_effects", "succeeded", version=2)
    record_refit(redis, "school_effects", "failed")
    samples = scrape(ClusterCollector(redis))
    assert samples[("chainyard_prior_version", (("prior", "county_effects"),))] == 2
    assert ("chainyard_prior_version", (("prior", "school_effects"),)) not in samples
    assert samples[("chainyard_prior_refit_total", (("outcome", "succeeded"), ("prior", "county_effects")))] == 2
    assert samples[("chainyard_prior_refit_total", (("outcome", "failed"), ("prior", "school_effects")))] == 1
    assert samples[("chainyard_prior_last_refit_ok", (("prior", "school_effects"),))] == 0
    assert samples[("chainyard_prior_last_refit_ok", (("prior", "county_effects"),))] == 1
    with pytest.raises(ValueError, match="must not contain"):
        record_refit(redis, "a|b", "failed")


def test_redis_down_gives_metrics_without_cluster_series() -> None:
    samples = scrape(ClusterCollector(Redis(port=free_port(), socket_connect_timeout=0.2)))
    assert samples == {("chainyard_metrics_leader", ()): 0}


def test_http_metrics_count_route_templates_not_raw_paths(redis_server: str) -> None:
    from service.api.app import create_app

    app = create_app(ApiSettings(redis_url=redis_server, tokens="tok:t"))

    async def exercise() -> tuple[str, str]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            before = (await client.get("/metrics")).text
            for i in range(3):
                response = await client.get(f"/v1/jobs/jmissing{i}", headers={"Authorization": "Bearer tok"})
                assert response.status_code == 404
            assert (await client.get("/no/such/route")).status_code == 404
            return before, (await client.get("/metrics")).text

    before, after = asyncio.run(exercise())
    assert _http_count(after, "/v1/jobs/{job_id}", "404") == _http_count(before, "/v1/jobs/{job_id}", "404") + 3
    assert "jmissing" not in after
    assert _http_count(after, "unmatched", "404") >= 1


def _http_count(text: str, route: str, status: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (s.name == "chainyard_http_requests_total" and s.labels["route"] == route
                    and s.labels["status"] == status and s.labels["method"] == "GET"):
                return s.value
    return 0.0


def test_an_expensive_refresh_postpones_the_next_one(redis: Redis) -> None:
    """Refreshes keep to a share of a core: one that cost c seconds is next due after c / share."""
    record = running_job(redis, "jcost", chains=1, iterations=100)
    push_chain(redis, "jcost", 0, {"mu": np.arange(50.0)}, np.zeros(50, bool))
    frugal = LiveDiagnostics(redis, interval=0.2, linger=60, cpu_share=1e-4)  # any refresh is 'expensive'
    assert frugal.due("jcost")
    frugal.refresh(record)
    assert redis.pttl(keys.diagnostics_due("jcost")) > 1000  # far beyond the 0.2 s interval
    time.sleep(0.3)
    assert not frugal.due("jcost")

    redis.delete(keys.diagnostics_due("jcost"))
    generous = LiveDiagnostics(redis, interval=0.2, linger=60, cpu_share=1.0)
    assert generous.due("jcost")
    generous.refresh(record)
    assert 0 < redis.pttl(keys.diagnostics_due("jcost")) <= 200  # the interval alone
