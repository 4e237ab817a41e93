"""The local scheduler (Settings.scheduler == "local"): a thread in each API process fires due refit schedules.

Every tick reads the schedules whose next run (keys.PRIOR_SCHEDULES) has come and, for each, moves its next
run to the first instant after now with one compare-and-set script: the process whose script saw the score it
read fires that run, every other one finds the score moved and does nothing. So of any number of API processes
exactly one fires each scheduled instant (at most once: a process that dies between moving the score and
submitting the refit loses that run).

A run missed while no API was running is caught up once, however many instants were missed: the latest one
no older than `starting_deadline` seconds (Settings.schedule_starting_deadline_seconds, a CronJob's
startingDeadlineSeconds) is fired; if every missed instant is older, the run is skipped and recorded as
`missed`. Firing submits PriorStore.refit (a refit of an unchanged dataset version is the same job: outcome
`unchanged`); whatever goes wrong is recorded as the run's outcome and never stops the thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from service import keys
from service.codec import text
from service.exceptions import ChainyardError
from service.jobs.record import JobRecord
from service.priors.schedule import Schedule, next_run
from service.priors.schedules import RunOutcome, read_schedule, record_run, split_member

log = logging.getLogger("chainyard.scheduler")

TICK_SECONDS = 1.0
"""How often the thread looks for due schedules."""
BATCH = 100
"""Due schedules handled per tick at most (the rest on the next)."""
COMPLAIN_SECONDS = 300.0
"""A schedule that cannot be fired (it is retried every tick) is logged at most this often."""

_ADVANCE = """
-- KEYS: the schedules' sorted set, the schedule's hash; ARGV: member, the score read, the next score
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""


class Refits(Protocol):
    """What the scheduler needs of service.priors.store.PriorStore."""

    def refit(self, tenant: str, name: str) -> tuple[JobRecord, bool]: ...


@dataclass(frozen=True, kw_only=True)
class Fired:
    """One run this scheduler fired (or skipped as missed)."""

    tenant: str
    prior: str
    scheduled: float
    """The instant it ran for (unix)."""
    at: float
    job: str | None
    outcome: RunOutcome
    """submitted | unchanged | error | missed (service.priors.schedules.LastRun)."""
    message: str | None = None


class LocalScheduler:
    """Fires due schedules: `tick()` once (tests drive it with their own clock), or `start()` a thread."""

    def __init__(self, redis: Any, priors: Refits, *, clock: Callable[[], float] = time.time,
                 starting_deadline: float = 3600.0, interval: float = TICK_SECONDS) -> None:
        self.r = redis
        self.priors = priors
        self.clock = clock
        self.starting_deadline = starting_deadline
        self.interval = interval
        self._advance = redis.register_script(_ADVANCE)
        self._stop = threading.Event()
        self._complained: dict[str, float] = {}
        self._thread: threading.Thread | None = None

    def tick(self) -> list[Fired]:
        """Fire every schedule due now (at most BATCH); what this process fired."""
        now = self.clock()
        due = self.r.zrangebyscore(keys.PRIOR_SCHEDULES, "-inf", now, start=0, num=BATCH, withscores=True)
        fired = []
        for value, score in due:
            try:
                run = self._fire(text(value), float(score), now)
            except Exception:  # one schedule's trouble (a bug, Redis) does not hold up the others
                if now - self._complained.get(text(value), -math.inf) >= COMPLAIN_SECONDS:
                    self._complained[text(value)] = now
                    log.exception("the schedule of %s could not be fired", text(value))
                continue
            if run is not None:
                fired.append(run)
        return fired

    def start(self) -> None:
        """Tick every `interval` seconds in a daemon thread until stop()."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="chainyard-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- one schedule -----------------------------------------------------------------------------

    def _fire(self, value: str, score: float, now: float) -> Fired | None:
        tenant, prior = split_member(value)
        found = read_schedule(self.r, tenant, prior)
        if found is None or found[0].suspend:
            # deleted (the script drops its member) or suspended (parked at +inf)
            self._advance(keys=[keys.PRIOR_SCHEDULES, keys.prior_schedule(tenant, prior)],
                          args=[value, _score(score), "+inf"])
            return None
        schedule = found[0]
        latest = self._latest_due(schedule, score, now)
        following = next_run(schedule, _utc(now)).timestamp()
        won = self._advance(keys=[keys.PRIOR_SCHEDULES, keys.prior_schedule(tenant, prior)],
                            args=[value, _score(score), _score(following)])
        if not won:
            return None  # another scheduler fired it, or the schedule changed meanwhile
        if latest is None:
            run = Fired(tenant=tenant, prior=prior, scheduled=score, at=now, job=None, outcome="missed",
                        message=f"not run: the run due at {_iso(score, schedule)} was more than "
                                f"{self.starting_deadline:g} s late (schedule_starting_deadline_seconds)")
        else:
            run = self._refit(tenant, prior, latest, now)
        record_run(self.r, tenant, prior, at=run.at, scheduled=run.scheduled, job=run.job, outcome=run.outcome,
                   message=run.message)
        log.info("schedule of %s/%s: %s %s", tenant, prior, run.outcome, run.job or run.message or "")
        return run

    def _refit(self, tenant: str, prior: str, scheduled: float, now: float) -> Fired:
        try:
            record, created = self.priors.refit(tenant, prior)
        except ChainyardError as exc:  # the prior or its dataset is gone, no rows yet, over quota ...
            return Fired(tenant=tenant, prior=prior, scheduled=scheduled, at=now, job=None, outcome="error",
                         message=str(exc))
        except Exception as exc:  # a bug must not stop the other schedules: recorded, and logged with its trace
            log.exception("scheduled refit of %s/%s failed", tenant, prior)
            return Fired(tenant=tenant, prior=prior, scheduled=scheduled, at=now, job=None, outcome="error",
                         message=f"internal error: {type(exc).__name__}: {exc}")
        return Fired(tenant=tenant, prior=prior, scheduled=scheduled, at=now, job=record.id,
                     outcome="submitted" if created else "unchanged")

    def _latest_due(self, schedule: Schedule, score: float, now: float) -> float | None:
        """The latest instant in [max(score, now - deadline), now] (score is itself an instant), or None."""
        start = max(score, now - self.starting_deadline)
        latest = score if start == score else next_run(schedule, _utc(start - 1e-6)).timestamp()
        if latest > now:
            return None
        while (later := next_run(schedule, _utc(latest)).timestamp()) <= now:
            latest = later
        return latest

    def _loop(self) -> None:
        failing = False
        while True:
            try:
                self.tick()
                if failing:
                    log.info("the scheduler reaches Redis again")
                failing = False
            except Exception:  # Redis down: retry next tick; say so once, not every second
                if not failing:
                    log.warning("the scheduler's tick failed; retrying every %g s", self.interval, exc_info=True)
                failing = True
            if self._stop.wait(self.interval):
                return


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _score(value: float) -> str:
    return repr(value) if value != float("inf") else "+inf"


def _iso(at: float, schedule: Schedule) -> str:
    return datetime.fromtimestamp(at, zoneinfo.ZoneInfo(schedule.timezone)).isoformat()
