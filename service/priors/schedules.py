"""Prior refit schedules in Redis (the source of truth), told to the backend that runs them, reconciled with it.

PUT applies a schedule to the backend first and then stores it, DELETE removes it from the backend first and
then from Redis, so a backend that refuses or cannot be reached leaves both as they were (and the request
fails with BackendError's status). On API start and on every GET the store compares what the backend runs
(`observed`) with Redis, re-applies what differs, and a disagreement it could not fix is reported in the GET
response (`in_sync: false` and a note), never hidden.
"""

from __future__ import annotations

import logging
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from service import keys
from service.codec import text
from service.exceptions import BackendError, ConflictError, NotFoundError
from service.priors.publish import metric_label
from service.priors.schedule import Schedule, ScheduleBackend, next_run

if TYPE_CHECKING:  # service.metrics reads schedules, and the job store imports service.metrics
    from service.priors.store import PriorStore

log = logging.getLogger("chainyard.schedules")

STALE_SECONDS = 120.0
"""A next-run time further in the past than this is not being advanced here (Kubernetes mode, or no local
scheduler running): the next run shown is then computed from the cron expression and the current time."""

RunOutcome = Literal["submitted", "unchanged", "error", "missed"]
"""How a schedule's run went (LastRun.outcome)."""
OUTCOMES = ("submitted", "unchanged", "error", "missed")

_RECORD_RUN = """
-- KEYS: the schedule's hash; ARGV: field, value, ... (only while the schedule exists)
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


@dataclass(frozen=True, kw_only=True)
class LastRun:
    """The last time a schedule fired (or was skipped)."""

    at: float
    """When it fired (unix)."""
    scheduled: float | None
    """The scheduled instant it fired for (unix)."""
    job: str | None
    """The refit job it submitted (or found: `unchanged`)."""
    outcome: RunOutcome
    """submitted (a new refit job) | unchanged (the dataset has not changed since the refit of this definition:
    the same job) | error (see `message`) | missed (more than the starting deadline late: skipped)."""
    message: str | None


@dataclass(frozen=True, kw_only=True)
class ScheduleState:
    """A schedule as GET /v1/priors/{name}/schedule shows it."""

    prior: str
    schedule: Schedule
    next_run: datetime | None
    """The next run, in the schedule's timezone; None while suspended."""
    last_run: LastRun | None
    refit: dict[str, Any] | None
    """The outcome of the last run's refit job (the prior's refit log entry), once it has ended."""
    created_at: float
    updated_at: float
    backend: str
    in_sync: bool
    note: str | None


def member(tenant: str, prior: str) -> str:
    """The schedule's member of keys.PRIOR_SCHEDULES (and its metric label): '<tenant>/<prior>'."""
    return metric_label(tenant, prior)


def split_member(value: str) -> tuple[str, str]:
    """(tenant, prior) of a keys.PRIOR_SCHEDULES member (a prior's name has no '/')."""
    tenant, _, prior = value.rpartition("/")
    return tenant, prior


def read_schedule(redis: Any, tenant: str, prior: str) -> tuple[Schedule, dict[str, str]] | None:
    """The stored schedule and its raw hash, or None."""
    raw = {text(k): text(v) for k, v in redis.hgetall(keys.prior_schedule(tenant, prior)).items()}
    if "cron" not in raw:
        return None
    return Schedule(cron=raw["cron"], timezone=raw["timezone"], suspend=raw.get("suspend") == "1"), raw


def has_schedule(redis: Any, tenant: str, prior: str) -> bool:
    return bool(redis.hexists(keys.prior_schedule(tenant, prior), "cron"))


def record_run(redis: Any, tenant: str, prior: str, *, at: float, scheduled: float | None, job: str | None,
               outcome: RunOutcome, message: str | None = None) -> bool:
    """Record a schedule's last run (nothing if the schedule is gone); whether it was recorded."""
    fields = {"last_at": repr(at), "last_scheduled": "" if scheduled is None else repr(scheduled),
              "last_job": job or "", "last_outcome": outcome, "last_message": message or ""}
    args = [v for pair in fields.items() for v in pair]
    return bool(redis.eval(_RECORD_RUN, 1, keys.prior_schedule(tenant, prior), *args))


def upcoming(schedule: Schedule, score: float | None, now: float) -> float | None:
    """The next run (unix) from a keys.PRIOR_SCHEDULES score: the score itself while it is being advanced (the
    local scheduler), else the cron expression's next instant after `now`; None while suspended."""
    if schedule.suspend or score is None or score == float("inf"):
        return None
    if score >= now - STALE_SECONDS:
        return score
    return next_run(schedule, datetime.fromtimestamp(now, UTC)).timestamp()


def first_score(schedule: Schedule, now: float) -> float:
    """The keys.PRIOR_SCHEDULES score of a schedule stored at `now`: its next instant, +inf if suspended."""
    if schedule.suspend:
        return float("inf")
    return next_run(schedule, datetime.fromtimestamp(now, UTC)).timestamp()


class ScheduleStore:
    """Schedules of priors: stored in Redis, run by `backend` (service.priors.backends.backend_for)."""

    def __init__(self, *, priors: PriorStore, backend: ScheduleBackend, clock: Callable[[], float] = time.time
                 ) -> None:
        self.r: Any = priors.r
        self.priors = priors
        self.backend = backend
        self.clock = clock

    def put(self, tenant: str, name: str, schedule: Schedule) -> tuple[ScheduleState, bool]:
        """Create or replace a prior's schedule; (state, created). The prior must have a definition."""
        head = self.priors.get(tenant, name)
        if head.definition is None:
            raise ConflictError(f"prior {name} has no definition to refit; PUT /v1/priors/{name} first")
        stored = read_schedule(self.r, tenant, name)
        self.backend.apply(tenant=tenant, prior=name, schedule=schedule)
        now = self.clock()
        key = keys.prior_schedule(tenant, name)
        pipe = self.r.pipeline()
        pipe.hsetnx(key, "created_at", repr(now))
        pipe.hset(key, mapping={"cron": schedule.cron, "timezone": schedule.timezone,
                                "suspend": "1" if schedule.suspend else "0", "updated_at": repr(now)})
        # a changed schedule starts from now; an unchanged one keeps its next run (one that is due still runs)
        unchanged = stored is not None and stored[0] == schedule
        pipe.zadd(keys.PRIOR_SCHEDULES, {member(tenant, name): first_score(schedule, now)}, nx=unchanged)
        pipe.execute()
        return self.get(tenant, name, reconcile=False), stored is None

    def get(self, tenant: str, name: str, *, reconcile: bool = True) -> ScheduleState:
        """The schedule, its next and last run; with `reconcile`, what the backend runs is compared (and
        re-applied where it differs)."""
        self.priors.get(tenant, name)
        found = read_schedule(self.r, tenant, name)
        if found is None:
            if reconcile:
                self._remove_orphan(tenant, name)
            raise NotFoundError(f"prior {name} has no schedule")
        schedule, raw = found
        in_sync, note = self._reconcile(tenant, name, schedule) if reconcile else (True, None)
        score = self.r.zscore(keys.PRIOR_SCHEDULES, member(tenant, name))
        upcoming_at = upcoming(schedule, None if score is None else float(score), self.clock())
        last = _last_run(raw)
        return ScheduleState(
            prior=name, schedule=schedule, last_run=last, refit=self._refit_of(tenant, name, last),
            next_run=None if upcoming_at is None else _local(upcoming_at, schedule),
            created_at=float(raw.get("created_at") or 0.0), updated_at=float(raw.get("updated_at") or 0.0),
            backend=self.backend.kind, in_sync=in_sync, note=note)

    def delete(self, tenant: str, name: str) -> None:
        """Remove a prior's schedule (404 if it has none): from the backend, then from Redis."""
        self.priors.get(tenant, name)
        if not has_schedule(self.r, tenant, name):
            raise NotFoundError(f"prior {name} has no schedule")
        self.forget(tenant, name)

    def forget(self, tenant: str, name: str) -> None:
        """Remove a schedule if there is one (PriorStore.delete calls this before deleting the prior)."""
        self.backend.delete(tenant=tenant, prior=name)
        pipe = self.r.pipeline()
        pipe.delete(keys.prior_schedule(tenant, name))
        pipe.zrem(keys.PRIOR_SCHEDULES, member(tenant, name))
        pipe.execute()

    def reconcile_all(self) -> int:
        """Make the backend run exactly what Redis holds (on API start); the number of schedules re-applied or
        removed. A backend that can also list what it runs (`listed() -> iterable of (tenant, prior)`) has
        what Redis does not hold deleted."""
        changed = 0
        for value in self.r.zrange(keys.PRIOR_SCHEDULES, 0, -1):
            tenant, name = split_member(text(value))
            found = read_schedule(self.r, tenant, name)
            if found is None:
                self.r.zrem(keys.PRIOR_SCHEDULES, text(value))
                self.backend.delete(tenant=tenant, prior=name)
                changed += 1
            elif self.backend.observed(tenant=tenant, prior=name) != found[0]:
                self.backend.apply(tenant=tenant, prior=name, schedule=found[0])
                changed += 1
        listed = getattr(self.backend, "listed", None)
        if callable(listed):
            for tenant, name in listed():
                if not has_schedule(self.r, tenant, name):
                    self.backend.delete(tenant=tenant, prior=name)
                    changed += 1
        return changed

    def reconcile_quietly(self) -> None:
        """reconcile_all, logging instead of raising (the API runs it in a thread at start)."""
        try:
            changed = self.reconcile_all()
        except Exception:  # the API must start whatever the backend says; GET reports disagreements
            log.warning("reconciling prior schedules with the %s backend failed", self.backend.kind, exc_info=True)
            return
        if changed:
            log.info("reconciled %d prior schedule(s) with the %s backend", changed, self.backend.kind)

    # -- helpers ----------------------------------------------------------------------------------

    def _reconcile(self, tenant: str, name: str, schedule: Schedule) -> tuple[bool, str | None]:
        kind = self.backend.kind
        if kind == "none":
            return False, "nothing runs schedules in this deployment (CHAINYARD_SCHEDULER=none)"
        try:
            observed = self.backend.observed(tenant=tenant, prior=name)
            if observed == schedule:
                return True, None
            self.backend.apply(tenant=tenant, prior=name, schedule=schedule)
            observed = self.backend.observed(tenant=tenant, prior=name)
        except BackendError as exc:
            return False, f"the {kind} backend could not be checked or updated: {exc}"
        if observed == schedule:
            return True, f"the {kind} backend ran {'nothing' if observed is None else 'another schedule'}; re-applied"
        shown = "nothing" if observed is None else f"{observed.cron!r} in {observed.timezone}"
        return False, f"the {kind} backend runs {shown}, not this schedule, and re-applying it did not help"

    def _remove_orphan(self, tenant: str, name: str) -> None:
        if self.backend.kind != "kubernetes":
            return
        try:
            if self.backend.observed(tenant=tenant, prior=name) is not None:
                self.backend.delete(tenant=tenant, prior=name)
        except BackendError:
            log.warning("could not remove the %s schedule of %s/%s that Redis does not hold", self.backend.kind,
                        tenant, name, exc_info=True)

    def _refit_of(self, tenant: str, name: str, last: LastRun | None) -> dict[str, Any] | None:
        if last is None or last.job is None:
            return None
        for entry in self.priors.versions.refits(tenant, name, limit=20):
            if entry.get("job") == last.job:
                return entry
        return None


def _last_run(raw: dict[str, str]) -> LastRun | None:
    if not raw.get("last_at"):
        return None
    return LastRun(at=float(raw["last_at"]),
                   scheduled=float(raw["last_scheduled"]) if raw.get("last_scheduled") else None,
                   job=raw.get("last_job") or None,
                   outcome=cast(RunOutcome, raw["last_outcome"] if raw.get("last_outcome") in OUTCOMES else "error"),
                   message=raw.get("last_message") or None)


def _local(at: float, schedule: Schedule) -> datetime:
    return datetime.fromtimestamp(at, zoneinfo.ZoneInfo(schedule.timezone))
