"""Publishing refit outcomes and the nightly refit, on a real Redis (no workers: refits are only queued)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from redis import Redis
from typer.testing import CliRunner

from cli.app import create_app
from cli.refit import EXIT_INFRASTRUCTURE, refit_all
from service import keys
from service.config import Settings
from service.datasets import DatasetStore
from service.exceptions import NotFoundError, SpecError
from service.jobs.record import JobState
from service.jobs.store import JobStore
from service.priors.definition import PriorDefinition
from service.priors.store import PriorStore
from service.priors.versions import Versions

MODEL = {"spec": 1, "data": {"sigma": 1.0},
         "params": {"mu": "Normal(0, 5)", "tau": "HalfNormal(1)",
                    "theta": {"dist": "Normal(mu, tau)", "dims": ["g"], "reparam": "noncentered"}},
         "observe": {"y": "Normal(theta[g], sigma)"}}
GOOD = {"totals": {"max_rhat": 1.002, "min_ess_bulk": 900.0, "min_ess_tail": 800.0, "divergences": 0}}


@pytest.fixture
def url(redis_server: str) -> str:
    return redis_server


@pytest.fixture
def priors(empty_redis: Redis, url: str) -> PriorStore:
    redis, settings = empty_redis, Settings(redis_url=url)
    store = PriorStore(jobs=JobStore(redis, settings), datasets=DatasetStore(redis, settings))
    store.datasets.put("alice", "obs", columns={"g": "string", "y": "float"})
    store.datasets.append("alice", "obs", {"columns": {"g": ["a", "b", "a"], "y": [0.1, 1.2, -0.3]}})
    store.put("alice", "pop", PriorDefinition(model=MODEL, data_from={"dataset": "obs"},  # type: ignore[arg-type]
                                              export={"params": ["mu", "tau"]}))  # type: ignore[arg-type]
    return store


def draws(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"mu": rng.normal(1, 0.2, size=(2, 500)), "tau": np.exp(rng.normal(-1, 0.3, size=(2, 500)))}


def test_the_refit_job_pins_what_publishing_needs(priors: PriorStore) -> None:
    record, created = priors.refit("alice", "pop")
    assert created and record.refit is not None
    assert record.refit.supports == {"mu": "real", "tau": "positive"}
    assert (record.refit.dataset, record.refit.dataset_version, record.refit.dataset_rows) == ("obs", 1, 3)
    assert record.refit.dataset_hash == priors.datasets.get("alice", "obs").version.hash
    assert record.sampler.seed == 0 and record.labels["chainyard.prior"] == "pop"
    again, created = priors.refit("alice", "pop")
    assert again.id == record.id and not created  # same data, same definition: the same job


def test_a_job_publishes_once_however_often_it_is_assembled(priors: PriorStore) -> None:
    record, _ = priors.refit("alice", "pop")
    assert record.refit is not None
    publisher = priors.jobs.publisher
    first = publisher.succeeded(job=record.id, tenant="alice", refit=record.refit, summary=GOOD, draws=draws())
    second = publisher.succeeded(job=record.id, tenant="alice", refit=record.refit, summary=GOOD, draws=draws(1))
    assert (first, second) == (1, 1)
    assert priors.get("alice", "pop").latest == 1 and len(priors.versions.all("alice", "pop")) == 1
    assert len(priors.versions.refits("alice", "pop")) == 1
    r: Any = priors.r
    assert r.hget(keys.PRIOR_REFITS, "alice/pop|succeeded") == b"1"
    _, version = priors.versions.read("alice", "pop", 1)
    assert version["export"]["members"] == [{"name": "mu", "shape": [], "support": "real"},
                                            {"name": "tau", "shape": [], "support": "positive"}]
    assert np.asarray(version["export"]["components"][0]["loc"]) == pytest.approx([1.0, -1.0], abs=0.05)


def test_a_gate_failure_or_a_failed_job_keeps_latest(priors: PriorStore) -> None:
    record, _ = priors.refit("alice", "pop")
    assert record.refit is not None
    priors.jobs.publisher.succeeded(job="j-old", tenant="alice", refit=record.refit, summary=GOOD, draws=draws())
    bad = {"totals": {**GOOD["totals"], "max_rhat": 1.2, "divergences": 3}}
    assert priors.jobs.publisher.succeeded(job=record.id, tenant="alice", refit=record.refit, summary=bad,
                                           draws=draws()) is None
    head = priors.get("alice", "pop")
    assert head.latest == 1 and head.last_refit is not None
    assert head.last_refit["outcome"] == "failed" and head.last_refit["diagnostics"]["max_rhat"] == 1.2
    assert any("R-hat 1.2" in r for r in head.last_refit["reasons"])
    assert any("3 divergent" in r for r in head.last_refit["reasons"])
    # a refit job that fails (or is cancelled) is a failed refit too, counted once
    other, _ = priors.jobs.submit("alice", model=priors.model_doc("alice", priors.get("alice", "pop").definition)[0],
                                  sampler={"seed": 9}, name=None, labels={}, refit=record.refit)
    assert priors.jobs.finish(other.id, JobState.FAILED, "initialization failed")
    assert priors.jobs.finish(other.id, JobState.FAILED, "again") is False
    entry = priors.versions.refits("alice", "pop")[0]
    assert entry["job"] == other.id and "initialization failed" in entry["reasons"][0]
    r: Any = priors.r
    assert r.hget(keys.PRIOR_REFITS, "alice/pop|failed") == b"2"
    assert r.hget(keys.PRIOR_LAST_OUTCOME, "alice/pop") == b"failed"
    assert r.hget(keys.PRIOR_VERSIONS, "alice/pop") == b"1"


def test_a_deleted_prior_records_nothing(priors: PriorStore) -> None:
    record, _ = priors.refit("alice", "pop")
    assert record.refit is not None
    priors.delete("alice", "pop")
    assert priors.jobs.publisher.succeeded(job=record.id, tenant="alice", refit=record.refit, summary=GOOD,
                                           draws=draws()) is None
    with pytest.raises(NotFoundError):
        Versions(priors.r).read("alice", "pop")


def test_definitions_are_checked_against_their_dataset(priors: PriorStore) -> None:
    cases = [
        ({"data_from": {"dataset": "nope"}}, "data_from.dataset"),
        ({"export": {"params": ["mu", "sigma"]}}, "export.params[1]"),
        ({"export": {"params": ["mu"]}, "sampler": {"keep": ["tau"]}}, "sampler.keep"),
        ({"data_from": {"dataset": "obs", "columns": {"y": "y", "g": "zz"}}}, "data_from.columns.g"),
        ({"model": {**MODEL, "params": {**MODEL["params"], "tau": "HalfNormal(-1)"}}}, "model.params.tau"),
        ({"model": {**MODEL, "params": {**MODEL["params"], "big": {"dist": "Normal(0, 1)", "shape": [1001]}}},
          "export": {"params": ["big"]}}, "export.params"),
    ]
    base = {"model": MODEL, "data_from": {"dataset": "obs"}, "export": {"params": ["mu", "tau"]}}
    for change, path in cases:
        with pytest.raises(SpecError) as caught:
            priors.put("alice", "other", PriorDefinition(**{**base, **change}))
        assert path in [p.path for p in caught.value.problems], (path, caught.value.problems)
    with pytest.raises(SpecError):
        priors.put("alice", "elicit", PriorDefinition(**base))  # a route's name


def test_nightly_refit_queues_the_stale_priors_only(priors: PriorStore, url: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(redis_url=url)
    assert refit_all(settings=settings) == 0
    assert "alice/pop: submitted" in capsys.readouterr().out
    (job_id,) = [j.decode() for j in priors.r.zrange(keys.tenant_jobs("alice"), 0, -1)]
    record = priors.jobs.read(job_id)
    assert record is not None and record.refit is not None
    priors.jobs.publisher.succeeded(job=job_id, tenant="alice", refit=record.refit, summary=GOOD, draws=draws())
    assert refit_all(settings=settings) == 0  # refitted at the dataset's current version: nothing to do
    assert "0 refit(s) submitted" in capsys.readouterr().out
    priors.datasets.append("alice", "obs", {"columns": {"g": ["c"], "y": [0.4]}})
    priors.datasets.put("alice", "gone", columns={"y": "float"})
    priors.datasets.append("alice", "gone", {"columns": {"y": [1.0]}})
    priors.put("alice", "broken", PriorDefinition(model={**MODEL, "params": {"mu": "Normal(0, 1)"},  # type: ignore[arg-type]
                                                         "observe": {"y": "Normal(mu, sigma)"}},
                                                  data_from={"dataset": "gone"}, export={"params": ["mu"]}))  # type: ignore[arg-type]
    priors.datasets.delete("alice", "gone")
    assert refit_all(settings=settings) == 0  # the stale scan passes over `broken` (its dataset is gone)
    out = capsys.readouterr()
    assert "alice/pop: submitted" in out.out and "broken" not in out.out
    assert refit_all(tenant="alice", prior="broken", settings=settings) == 0  # asked for by name: reported
    out = capsys.readouterr()
    assert "alice/broken: not refitted" in out.err and "dataset gone not found" in out.err
    assert "0 refit(s) submitted, 1 skipped" in out.out


def test_nightly_refit_exits_non_zero_only_without_redis() -> None:
    result = CliRunner().invoke(create_app(), ["refit"], env={"CHAINYARD_REDIS_URL": "redis://127.0.0.1:1/0",
                                                             "CHAINYARD_REDIS_CONNECT_TIMEOUT": "0.5"})
    assert result.exit_code == EXIT_INFRASTRUCTURE, result.output
