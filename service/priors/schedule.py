"""A prior's refit schedule: a cron expression in an IANA timezone; where it runs (ScheduleBackend) is elsewhere.

Cron expressions are read by cronsim (no dependencies, Debian cron's semantics, maintained; croniter changed
maintainers in 2024/25): five fields (minute hour day-of-month month day-of-week, with names, ranges, steps and
lists) or one of the macros @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly. Refused: @reboot
(there is no boot), @every, six or seven fields (seconds, years), a `TZ=`/`CRON_TZ=` prefix (the timezone is
its own field) and cronsim's extensions that neither Debian cron nor a Kubernetes CronJob accepts (`L`, `LW`,
`#`, `?`), so a schedule means the same in local and Kubernetes mode.

Next runs are computed in the schedule's timezone with cronsim's handling of daylight saving time (Debian
cron's): a schedule with a fixed minute and hour (`30 2 * * *`) runs once a day on the local wall clock; on
the day the clocks go forward past its time it runs at the first minute that exists after the gap (03:00
for 02:30 in Europe/Berlin), and on the day they go back it runs once, in the first of the two repeated
hours. A schedule whose minute or hour field is a wildcard (`*/15 * * * *`, `0 * * * *`) runs by elapsed
time: every real quarter hour or hour, in both repeated hours too.
"""

from __future__ import annotations

import functools
import zoneinfo
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cronsim import CronSim, CronSimError

from service.exceptions import BackendError, ChainyardError, Problem, SpecError

__all__ = ["MACROS", "BackendError", "Schedule", "ScheduleBackend", "expand", "next_run", "parse_schedule"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The macros accepted, as the five fields they stand for (Debian cron's crontab(5))."""
MAX_CRON = 200
"""Longest cron expression accepted."""
HOST_DEPENDENT = frozenset({"localtime", "posixrules", "Factory"})
"""Names in some zoneinfo directories that are not a place's time (refused)."""


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """When a prior is refitted: `cron` (five fields or a macro) on the wall clock of `timezone`."""

    cron: str
    """Five fields or a macro (@daily, @hourly, ...), as validated by parse_schedule."""
    timezone: str
    """An IANA name (zoneinfo), e.g. Europe/Berlin or UTC."""
    suspend: bool = False
    """A suspended schedule is kept but does not run (a CronJob's `suspend`)."""

    def as_body(self) -> dict[str, Any]:
        return {"cron": self.cron, "timezone": self.timezone, "suspend": self.suspend}


class ScheduleBackend(Protocol):
    """Where a schedule runs: in-process (local) or as a Kubernetes CronJob."""

    kind: str
    """"local" | "kubernetes" (or "none": stored, run by nothing)."""

    def apply(self, *, tenant: str, prior: str, schedule: Schedule) -> None:
        """Create or update what runs the schedule; idempotent. Raises BackendError."""

    def delete(self, *, tenant: str, prior: str) -> None:
        """Remove it; idempotent (absent is fine). Raises BackendError."""

    def observed(self, *, tenant: str, prior: str) -> Schedule | None:
        """What actually runs now; None: nothing. Raises BackendError."""


def parse_schedule(body: Any) -> Schedule:
    """A schedule from a request body {cron, timezone, suspend?}; SpecError with every problem and its path
    (`cron`, `timezone`, `suspend`)."""
    if not isinstance(body, dict):
        raise SpecError([Problem("", "a schedule is an object {cron, timezone, suspend?}")])
    problems = [Problem(str(k), "unknown field; a schedule has cron, timezone and suspend")
                for k in body if k not in ("cron", "timezone", "suspend")]
    cron = body.get("cron")
    problem = check_cron(cron)
    if problem:
        problems.append(Problem("cron", problem))
    timezone = body.get("timezone")
    problem = check_timezone(timezone)
    if problem:
        problems.append(Problem("timezone", problem))
    suspend = body.get("suspend", False)
    if not isinstance(suspend, bool):
        problems.append(Problem("suspend", "must be true or false"))
    if problems:
        raise SpecError(problems)
    assert isinstance(cron, str) and isinstance(timezone, str)
    text = " ".join(cron.split())
    return Schedule(cron=text.lower() if text.startswith("@") else text, timezone=timezone, suspend=suspend)


def check_cron(cron: Any) -> str | None:
    """What is wrong with a cron expression, or None."""
    if not isinstance(cron, str) or not cron.strip():
        return "required: five fields (minute hour day-of-month month day-of-week) or a macro such as @daily"
    if len(cron) > MAX_CRON:
        return f"at most {MAX_CRON} characters"
    text = cron.strip()
    if text.startswith("@"):
        macro = text.lower()
        if macro == "@reboot":
            return "@reboot is not supported: a refit schedule needs times (use e.g. @daily)"
        if macro not in MACROS:
            return f"unknown macro {text}; known: {', '.join(MACROS)}"
        return None
    fields = text.split()
    if fields[0].upper().startswith(("TZ=", "CRON_TZ=")):
        return "give the timezone in `timezone`, not as a TZ= prefix"
    if len(fields) != 5:
        extra = " (seconds and years are not supported)" if len(fields) in (6, 7) else ""
        return (f"{len(fields)} field(s){extra}; a cron expression has five: minute hour day-of-month month "
                "day-of-week (or a macro such as @daily)")
    for name, field, extensions in (("day-of-month", fields[2], "LW"), ("day-of-week", fields[4], "L#")):
        if any(ch in field.upper() for ch in extensions):
            return (f"{name} field {field!r}: L, W and # are not supported (neither Debian cron nor Kubernetes "
                    "CronJobs accept them)")
    try:
        next(CronSim(text, datetime(2000, 1, 1)))
    except CronSimError as exc:
        return f"{exc} in {text!r}"
    except StopIteration:
        return f"{text!r} never runs"
    return None


def check_timezone(name: Any) -> str | None:
    """What is wrong with an IANA timezone name, or None."""
    if not isinstance(name, str) or not name:
        return "required: an IANA timezone name such as UTC or Europe/Berlin"
    if len(name) > 64 or name not in _known_timezones() or name in HOST_DEPENDENT:
        return f"unknown timezone {name[:64]!r}: give an IANA name such as UTC, Europe/Berlin or America/New_York"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        return f"timezone {name!r} cannot be loaded: {exc}"
    return None


@functools.cache
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def expand(cron: str) -> str:
    """The five fields of a cron expression (a macro replaced by what it stands for)."""
    text = cron.strip()
    return MACROS.get(text.lower(), text) if text.startswith("@") else text


def next_run(schedule: Schedule, after: datetime) -> datetime:
    """The first instant of the schedule strictly after `after` (an aware datetime), in schedule.timezone."""
    if after.tzinfo is None:
        raise ValueError("next_run needs an aware datetime")
    local = after.astimezone(zoneinfo.ZoneInfo(schedule.timezone))
    runs = CronSim(expand(schedule.cron), local)
    limit = after.timestamp()  # compared as instants: aware datetimes of one tzinfo compare by wall clock
    for _ in range(1000):
        # cronsim starts from the minute of `after`; on the day the clocks go back it may answer a wall time of
        # the first repeated hour while `after` lies in the second: skip what is not later
        instant = next(runs)
        if instant.timestamp() > limit:
            return instant
    raise ChainyardError(f"no run of {schedule.cron!r} after {after.isoformat()}")  # pragma: no cover
