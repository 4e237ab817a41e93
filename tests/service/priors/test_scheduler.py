"""The schedule store and the local scheduler on a real Redis, with an injected clock (no workers: refits are
only queued): firing instants across DST changes, two schedulers racing, missed runs, errors, the nightly
refit passing over scheduled priors, backend disagreements, the next-refit metric."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis import Redis

from cli.refit import refit_all
from service import keys
from service.config import Settings
from service.datasets import DatasetStore
from service.exceptions import BackendError, ConflictError, NotFoundError
from service.jobs.store import JobStore
from service.metrics import ClusterCollector
from service.priors.backends import LocalBackend, NoBackend, backend_for
from service.priors.definition import PriorDefinition
from service.priors.schedule import Schedule
from service.priors.scheduler import Fired, LocalScheduler
from service.priors.schedules import ScheduleStore
from service.priors.store import PriorStore

MODEL = {"spec": 1, "data": {"sigma": 1.0}, "params": {"mu": "Normal(0, 5)"}, "observe": {"y": "Normal(mu, sigma)"}}
BERLIN = ZoneInfo("Europe/Berlin")


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()


@dataclass
class FakeRecord:
    id: str


@dataclass
class Recording:
    """Stands in for PriorStore.refit: records each call (and can fail)."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    error: Exception | None = None

    def refit(self, tenant: str, name: str) -> tuple[FakeRecord, bool]:
        self.calls.append((tenant, name))
        if self.error is not None:
            raise self.error
        return FakeRecord(id=f"j-{len(self.calls)}"), True


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture
def settings(redis_server: str) -> Settings:
    return Settings(redis_url=redis_server)


@pytest.fixture
def priors(empty_redis: Redis, settings: Settings) -> PriorStore:
    store = PriorStore(jobs=JobStore(empty_redis, settings), datasets=DatasetStore(empty_redis, settings))
    store.datasets.put("alice", "obs", columns={"y": "float"})
    store.datasets.append("alice", "obs", {"columns": {"y": [0.1, 1.2, -0.3]}})
    for name in ("pop", "other"):
        store.put("alice", name, PriorDefinition(model=MODEL, data_from={"dataset": "obs"},  # type: ignore[arg-type]
                                                 export={"params": ["mu"]}))  # type: ignore[arg-type]
    return store


@pytest.fixture
def clock() -> Clock:
    return Clock(utc(2026, 3, 27, 12))


@pytest.fixture
def schedules(priors: PriorStore, clock: Clock) -> ScheduleStore:
    store = ScheduleStore(priors=priors, backend=LocalBackend(priors.r), clock=clock)
    priors.unschedule = store.forget
    return store


def sweep(scheduler: LocalScheduler, clock: Clock, start: datetime, end: datetime, step: float = 60.0
          ) -> list[Fired]:
    """Tick once every `step` seconds of simulated time from start to end."""
    fired, clock.now = [], start.timestamp()
    while clock.now <= end.timestamp():
        fired += scheduler.tick()
        clock.now += step
    return fired


def local(fired: list[Fired], tz: ZoneInfo = BERLIN) -> list[str]:
    return [datetime.fromtimestamp(f.scheduled, tz).isoformat() for f in fired]


# -- the store ---------------------------------------------------------------------------------------


def test_put_get_replace_suspend_delete(schedules: ScheduleStore, priors: PriorStore, clock: Clock) -> None:
    clock.set(utc(2026, 1, 10, 8, 5))
    state, created = schedules.put("alice", "pop", Schedule(cron="30 2 * * *", timezone="Europe/Berlin"))
    assert created and state.backend == "local" and state.in_sync and state.note is None
    assert state.next_run is not None and state.next_run.isoformat() == "2026-01-11T02:30:00+01:00"
    assert state.last_run is None
    r: Any = priors.r
    assert r.zscore(keys.PRIOR_SCHEDULES, "alice/pop") == utc(2026, 1, 11, 1, 30).timestamp()
    state, created = schedules.put("alice", "pop", Schedule(cron="@hourly", timezone="UTC"))
    assert not created and state.next_run == utc(2026, 1, 10, 9)
    state, _ = schedules.put("alice", "pop", Schedule(cron="@hourly", timezone="UTC", suspend=True))
    assert state.next_run is None and r.zscore(keys.PRIOR_SCHEDULES, "alice/pop") == float("inf")
    schedules.delete("alice", "pop")
    with pytest.raises(NotFoundError, match="has no schedule"):
        schedules.get("alice", "pop")
    with pytest.raises(NotFoundError, match="has no schedule"):
        schedules.delete("alice", "pop")
    assert r.zcard(keys.PRIOR_SCHEDULES) == 0 and not r.exists(keys.prior_schedule("alice", "pop"))


def test_only_a_prior_with_a_definition_of_the_same_tenant_can_be_scheduled(schedules: ScheduleStore,
                                                                           priors: PriorStore) -> None:
    daily = Schedule(cron="@daily", timezone="UTC")
    with pytest.raises(NotFoundError):
        schedules.put("alice", "absent", daily)
    with pytest.raises(NotFoundError):
        schedules.put("bob", "pop", daily)  # alice's prior
    priors.save_elicited("alice", "judged", {"p": {"family": "Beta", "quantiles": {"0.5": 0.3, "0.9": 0.5}}})
    with pytest.raises(ConflictError, match="no definition"):
        schedules.put("alice", "judged", daily)


def test_deleting_a_prior_deletes_its_schedule(schedules: ScheduleStore, priors: PriorStore) -> None:
    schedules.put("alice", "pop", Schedule(cron="@daily", timezone="UTC"))
    schedules.put("alice", "other", Schedule(cron="@daily", timezone="UTC"))
    priors.delete("alice", "pop")
    r: Any = priors.r
    assert [m.decode() for m in r.zrange(keys.PRIOR_SCHEDULES, 0, -1)] == ["alice/other"]
    assert not r.exists(keys.prior_schedule("alice", "pop"))


# -- the local scheduler ---------------------------------------------------------------------------------


def test_berlin_daily_across_both_dst_changes(schedules: ScheduleStore, priors: PriorStore, clock: Clock) -> None:
    refits = Recording()
    scheduler = LocalScheduler(priors.r, refits, clock=clock)
    clock.set(utc(2026, 3, 27, 12))
    schedules.put("alice", "pop", Schedule(cron="30 2 * * *", timezone="Europe/Berlin"))
    spring = sweep(scheduler, clock, utc(2026, 3, 27, 12), utc(2026, 3, 30, 12))
    # 02:30 does not exist on 29 March: the run is at 03:00 CEST, the first minute after the gap (cronsim)
    assert local(spring) == ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    assert [f.at for f in spring] == [f.scheduled for f in spring]  # fired in the minute due, not later
    clock.set(utc(2026, 10, 24, 12))
    schedules.put("alice", "pop", Schedule(cron="30 2 * * *", timezone="Europe/Berlin"))  # unchanged: kept
    schedules.put("alice", "pop", Schedule(cron="30 2 * * *", timezone="Europe/Berlin", suspend=True))
    schedules.put("alice", "pop", Schedule(cron="30 2 * * *", timezone="Europe/Berlin"))  # restarts from now
    fall = sweep(scheduler, clock, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12), step=30)
    # 02:30 happens twice on 25 October: one run, in the first (CEST) hour
    assert local(fall) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    assert len(refits.calls) == 5 and set(refits.calls) == {("alice", "pop")}
    last = schedules.get("alice", "pop").last_run
    assert last is not None and (last.job, last.outcome) == ("j-5", "submitted")
    assert last.scheduled == fall[-1].scheduled


def test_hourly_in_new_york_runs_every_real_hour_through_the_fall_back(schedules: ScheduleStore,
                                                                      priors: PriorStore, clock: Clock) -> None:
    scheduler = LocalScheduler(priors.r, Recording(), clock=clock)
    clock.set(utc(2026, 11, 1, 3, 59))  # 23:59 EDT on 31 October
    schedules.put("alice", "pop", Schedule(cron="0 * * * *", timezone="America/New_York"))
    fired = sweep(scheduler, clock, utc(2026, 11, 1, 3, 59), utc(2026, 11, 2, 4, 59))
    ny = ZoneInfo("America/New_York")
    assert len(fired) == 25  # the day has 25 hours; 01:00 runs in EDT and again in EST
    assert local(fired, ny)[:4] == ["2026-11-01T00:00:00-04:00", "2026-11-01T01:00:00-04:00",
                                    "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]


def test_two_schedulers_racing_fire_each_instant_exactly_once(schedules: ScheduleStore, priors: PriorStore,
                                                              clock: Clock, redis_server: str) -> None:
    names = ["pop", "other"]
    for name in names:
        schedules.put("alice", name, Schedule(cron="* * * * *", timezone="UTC"))
    recorders = [Recording(), Recording()]
    racers = [LocalScheduler(Redis.from_url(redis_server), rec, clock=clock) for rec in recorders]
    barrier = threading.Barrier(2)

    def tick(scheduler: LocalScheduler) -> list[Fired]:
        barrier.wait()
        return scheduler.tick()

    start = clock.now
    fired: list[list[Fired]] = [[], []]
    with ThreadPoolExecutor(2) as pool:
        for minute in range(1, 41):
            clock.now = start + 60 * minute - start % 60 + 0.5  # half a second into each minute
            for i, got in enumerate(pool.map(tick, racers)):
                fired[i] += got
    instants = sorted((f.prior, f.scheduled) for both in fired for f in both)
    expected = sorted((name, start - start % 60 + 60 * m) for name in names for m in range(1, 41))
    assert instants == expected  # every instant once, none twice
    assert sum(len(r.calls) for r in recorders) == 80


def test_a_missed_run_is_caught_up_once_within_the_deadline(schedules: ScheduleStore, priors: PriorStore,
                                                            clock: Clock) -> None:
    refits = Recording()
    scheduler = LocalScheduler(priors.r, refits, clock=clock, starting_deadline=3600)
    clock.set(utc(2026, 5, 1, 9, 1))
    schedules.put("alice", "pop", Schedule(cron="*/10 * * * *", timezone="UTC"))
    clock.set(utc(2026, 5, 1, 12, 34, 20))  # down for three and a half hours: 20 instants missed
    (run,) = scheduler.tick()
    assert (run.scheduled, run.outcome, run.at) == (utc(2026, 5, 1, 12, 30).timestamp(), "submitted", clock.now)
    assert scheduler.tick() == [] and len(refits.calls) == 1
    assert schedules.get("alice", "pop").next_run == utc(2026, 5, 1, 12, 40)
    clock.set(utc(2026, 5, 1, 12, 40, 1))
    assert [f.scheduled for f in scheduler.tick()] == [utc(2026, 5, 1, 12, 40).timestamp()]


def test_a_run_later_than_the_deadline_is_skipped_and_recorded(schedules: ScheduleStore, priors: PriorStore,
                                                               clock: Clock) -> None:
    refits = Recording()
    scheduler = LocalScheduler(priors.r, refits, clock=clock, starting_deadline=3600)
    clock.set(utc(2026, 5, 1, 1))
    schedules.put("alice", "pop", Schedule(cron="0 3 * * *", timezone="UTC"))
    clock.set(utc(2026, 5, 1, 5, 30))  # 2.5 h late, deadline 1 h
    (run,) = scheduler.tick()
    assert run.outcome == "missed" and run.job is None and refits.calls == []
    state = schedules.get("alice", "pop")
    assert state.last_run is not None and state.last_run.outcome == "missed"
    assert state.last_run.message is not None and "more than 3600 s late" in state.last_run.message
    assert state.next_run == utc(2026, 5, 2, 3)
    clock.set(utc(2026, 5, 2, 3, 59))  # 59 minutes late: still run
    assert [f.outcome for f in scheduler.tick()] == ["submitted"]


def test_errors_are_the_runs_outcome_and_the_thread_keeps_ticking(schedules: ScheduleStore, priors: PriorStore,
                                                                  clock: Clock) -> None:
    clock.set(utc(2026, 5, 1, 1, 0, 30))
    schedules.put("alice", "pop", Schedule(cron="* * * * *", timezone="UTC"))
    real = LocalScheduler(priors.r, priors, clock=clock)
    clock.now += 60
    (first,) = real.tick()
    assert first.outcome == "submitted" and priors.jobs.read(first.job or "") is not None
    clock.now += 60
    (again,) = real.tick()
    assert (again.outcome, again.job) == ("unchanged", first.job)  # same data, same definition: the same job
    priors.datasets.delete("alice", "obs")
    clock.now += 60
    (gone,) = real.tick()
    assert gone.outcome == "error" and "dataset obs not found" in (gone.message or "")
    last = schedules.get("alice", "pop").last_run
    assert last is not None and last.outcome == "error" and last.message == gone.message

    broken = Recording(error=RuntimeError("boom"))
    ticks = iter(range(10**6))
    threaded = LocalScheduler(priors.r, broken, clock=lambda: clock.now + 60 * next(ticks), interval=0.01)
    threaded.start()
    try:
        deadline = time.monotonic() + 10
        while len(broken.calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        threaded.stop()
    assert len(broken.calls) >= 3  # every run raised, and the thread went on
    last = schedules.get("alice", "pop").last_run
    assert last is not None and last.outcome == "error" and last.message == "internal error: RuntimeError: boom"


def test_a_deleted_or_suspended_schedule_does_not_fire(schedules: ScheduleStore, priors: PriorStore,
                                                       clock: Clock) -> None:
    refits = Recording()
    scheduler = LocalScheduler(priors.r, refits, clock=clock)
    clock.set(utc(2026, 5, 1, 1, 0, 30))
    schedules.put("alice", "pop", Schedule(cron="* * * * *", timezone="UTC"))
    schedules.put("alice", "other", Schedule(cron="* * * * *", timezone="UTC"))
    schedules.delete("alice", "pop")
    schedules.put("alice", "other", Schedule(cron="* * * * *", timezone="UTC", suspend=True))
    assert sweep(scheduler, clock, utc(2026, 5, 1, 1, 1), utc(2026, 5, 1, 1, 10)) == []
    assert refits.calls == []


# -- the nightly refit, the metric, backends -----------------------------------------------------------


def test_the_nightly_refit_passes_over_scheduled_priors(schedules: ScheduleStore, priors: PriorStore,
                                                        settings: Settings, capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    schedules.put("alice", "pop", Schedule(cron="@daily", timezone="UTC", suspend=True))
    assert refit_all(settings=settings) == 0
    out = capsys.readouterr().out
    assert "alice/other: submitted" in out and "alice/pop" not in out and "1 refit(s) submitted" in out
    assert refit_all(tenant="alice", prior="pop", settings=settings) == 0  # the CronJob's command: that one
    assert "alice/pop: submitted" in capsys.readouterr().out
    last = schedules.get("alice", "pop").last_run
    assert last is not None and last.outcome == "submitted" and last.job is not None
    assert priors.jobs.read(last.job) is not None


def test_the_next_refit_metric(schedules: ScheduleStore, priors: PriorStore) -> None:
    schedules.put("alice", "pop", Schedule(cron="15 * * * *", timezone="UTC"))
    schedules.put("alice", "other", Schedule(cron="@daily", timezone="UTC", suspend=True))  # no series
    r: Any = priors.r
    soon = float(int(time.time()) + 600)  # the scrape reads the real clock
    r.zadd(keys.PRIOR_SCHEDULES, {"alice/pop": soon})
    collector = ClusterCollector(r)  # one identity: it holds the exporting lease
    series = {s.labels["prior"]: s.value for m in collector.collect()
              if m.name == "chainyard_prior_next_refit_timestamp" for s in m.samples}
    assert series == {"alice/pop": soon}
    # a next run long past (nothing advances it here: Kubernetes mode) is shown as the cron's next instant
    r.zadd(keys.PRIOR_SCHEDULES, {"alice/pop": time.time() - 7200})
    (value,) = [s.value for m in collector.collect()
                if m.name == "chainyard_prior_next_refit_timestamp" for s in m.samples]
    assert time.time() < value <= time.time() + 3600 and datetime.fromtimestamp(value, UTC).minute == 15


class Disagreeing:
    """A backend (as a Kubernetes one could be) that runs what it was last told, or refuses."""

    kind = "kubernetes"

    def __init__(self) -> None:
        self.running: dict[tuple[str, str], Schedule] = {}
        self.refuse: BackendError | None = None
        self.ignore_apply = False

    def apply(self, *, tenant: str, prior: str, schedule: Schedule) -> None:
        if self.refuse:
            raise self.refuse
        if not self.ignore_apply:
            self.running[(tenant, prior)] = schedule

    def delete(self, *, tenant: str, prior: str) -> None:
        if self.refuse:
            raise self.refuse
        self.running.pop((tenant, prior), None)

    def observed(self, *, tenant: str, prior: str) -> Schedule | None:
        if self.refuse:
            raise self.refuse
        return self.running.get((tenant, prior))

    def listed(self) -> list[tuple[str, str]]:
        return list(self.running)


def test_disagreements_with_the_backend_are_fixed_or_reported(priors: PriorStore, clock: Clock) -> None:
    backend = Disagreeing()
    store = ScheduleStore(priors=priors, backend=backend, clock=clock)
    daily = Schedule(cron="@daily", timezone="Europe/Berlin")
    store.put("alice", "pop", daily)
    assert backend.running == {("alice", "pop"): daily}
    backend.running.clear()  # someone deleted the CronJob
    state = store.get("alice", "pop")
    assert state.in_sync and state.note is not None and "re-applied" in state.note
    assert backend.running == {("alice", "pop"): daily}
    backend.running[("alice", "pop")] = Schedule(cron="@hourly", timezone="UTC")
    backend.ignore_apply = True  # edited by hand, and applying does not take
    state = store.get("alice", "pop")
    assert not state.in_sync and state.note is not None and "runs '@hourly' in UTC" in state.note
    backend.ignore_apply = False
    backend.refuse = BackendError("forbidden: the API's ServiceAccount may not patch cronjobs (RBAC)")
    state = store.get("alice", "pop")
    assert not state.in_sync and state.note is not None and "RBAC" in state.note
    with pytest.raises(BackendError):  # refused: nothing changes in Redis either
        store.put("alice", "pop", Schedule(cron="@weekly", timezone="UTC"))
    with pytest.raises(BackendError):
        store.delete("alice", "pop")
    assert store.get("alice", "pop", reconcile=False).schedule == daily
    backend.refuse = None
    backend.running = {("alice", "pop"): Schedule(cron="@hourly", timezone="UTC"), ("alice", "stray"): daily}
    assert store.reconcile_all() == 2  # pop re-applied from Redis, the stray one deleted
    assert backend.running == {("alice", "pop"): daily}


def test_backend_for_the_settings(priors: PriorStore, clock: Clock, settings: Settings) -> None:
    assert isinstance(backend_for(settings, redis=priors.r), LocalBackend)
    none = backend_for(Settings(redis_url=settings.redis_url, scheduler="none"))
    assert isinstance(none, NoBackend)
    store = ScheduleStore(priors=priors, backend=none, clock=clock)
    store.put("alice", "pop", Schedule(cron="@daily", timezone="UTC"))
    state = store.get("alice", "pop")
    assert state.backend == "none" and not state.in_sync and "CHAINYARD_SCHEDULER=none" in (state.note or "")
