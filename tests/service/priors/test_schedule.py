"""Schedules as data: what parse_schedule accepts and refuses (with paths), and next_run across DST changes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from service.exceptions import SpecError
from service.priors.schedule import MACROS, Schedule, check_cron, expand, next_run, parse_schedule

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")


def problems(body: object) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_schedule(body)
    return {p.path: p.message for p in info.value.problems}


def runs(schedule: Schedule, start: datetime, until: datetime) -> list[datetime]:
    out, at = [], start
    while (at := next_run(schedule, at)).timestamp() < until.timestamp():
        out.append(at)
    return out


def test_every_problem_is_reported_with_its_field() -> None:
    found = problems({"cron": "0 0 * * * *", "timezone": "Mars/Olympus_Mons", "suspend": "yes", "when": "now"})
    assert set(found) == {"cron", "timezone", "suspend", "when"}
    assert "6 field(s) (seconds and years are not supported)" in found["cron"]
    assert "unknown timezone 'Mars/Olympus_Mons'" in found["timezone"]
    assert found["suspend"] == "must be true or false"
    assert problems({}).keys() == {"cron", "timezone"}
    assert problems(["@daily"]) == {"": "a schedule is an object {cron, timezone, suspend?}"}


@pytest.mark.parametrize(("cron", "message"), [
    ("@reboot", "@reboot is not supported"),
    ("@every 5m", "unknown macro @every 5m"),
    ("0 0 * *", "4 field(s); a cron expression has five"),
    ("0 0 0 * * * 2027", "7 field(s) (seconds and years are not supported)"),
    ("CRON_TZ=Europe/Berlin 0 3 * * *", "give the timezone in `timezone`"),
    ("0 0 L * *", "day-of-month field 'L': L, W and # are not supported"),
    ("0 0 15W * *", "day-of-month field '15W'"),
    ("0 0 * * 5L", "day-of-week field '5L'"),
    ("0 0 * * MON#2", "day-of-week field 'MON#2'"),
    ("60 * * * *", "Bad minute in '60 * * * *'"),
    ("0 24 * * *", "Bad hour"),
    ("0 0 30 2 *", "Bad day-of-month"),  # February never has a 30th
    ("0 0 * * 8", "Bad day-of-week"),
    ("*/0 * * * *", "Bad minute"),
    ("", "required"),
    (None, "required"),
    (5, "required"),
    ("* " * 150, "at most 200 characters"),
])
def test_refused_cron_expressions_say_why(cron: object, message: str) -> None:
    found = problems({"cron": cron, "timezone": "UTC"})
    assert list(found) == ["cron"] and message in found["cron"], found


@pytest.mark.parametrize("name", ["Europe", "../../etc/passwd", "localtime", "CET ", "", "Europe/Berlin\x00", 3])
def test_refused_timezones(name: object) -> None:
    assert list(problems({"cron": "@daily", "timezone": name})) == ["timezone"]


def test_accepted_forms_and_the_macros() -> None:
    assert parse_schedule({"cron": "  */15  9-17 * * MON-FRI ", "timezone": "Europe/Berlin"}) == Schedule(
        cron="*/15 9-17 * * MON-FRI", timezone="Europe/Berlin")
    assert parse_schedule({"cron": "@Daily", "timezone": "UTC", "suspend": True}) == Schedule(
        cron="@daily", timezone="UTC", suspend=True)
    assert parse_schedule({"cron": "0 3 * JUL WED", "timezone": "America/New_York"}).cron == "0 3 * JUL WED"
    for macro, fields in MACROS.items():
        assert check_cron(macro) is None and expand(macro) == fields
    after = datetime(2026, 5, 13, 10, 17, tzinfo=UTC)  # a Wednesday
    assert next_run(Schedule(cron="@hourly", timezone="UTC"), after) == datetime(2026, 5, 13, 11, tzinfo=UTC)
    assert next_run(Schedule(cron="@weekly", timezone="UTC"), after) == datetime(2026, 5, 17, tzinfo=UTC)  # Sunday
    assert next_run(Schedule(cron="@monthly", timezone="UTC"), after) == datetime(2026, 6, 1, tzinfo=UTC)
    assert next_run(Schedule(cron="@yearly", timezone="UTC"), after) == datetime(2027, 1, 1, tzinfo=UTC)


def test_next_run_is_strictly_later_and_in_the_schedules_timezone() -> None:
    daily = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    at = datetime(2026, 6, 1, 0, 30, tzinfo=UTC)  # 02:30 in Berlin (CEST, +02:00): a run instant itself
    found = next_run(daily, at)
    assert found == datetime(2026, 6, 2, 2, 30, tzinfo=BERLIN) and found.utcoffset() == timedelta(hours=2)
    assert found.isoformat() == "2026-06-02T02:30:00+02:00"
    assert next_run(daily, at - timedelta(seconds=1)) == at
    with pytest.raises(ValueError, match="aware"):
        next_run(daily, datetime(2026, 6, 1))


def test_berlin_spring_forward_runs_a_daily_time_inside_the_gap_once_at_the_first_minute_after_it() -> None:
    # 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist that day; cronsim (as Debian cron) runs at 03:00
    found = runs(Schedule(cron="30 2 * * *", timezone="Europe/Berlin"), datetime(2026, 3, 27, 12, tzinfo=UTC),
                 datetime(2026, 3, 31, 12, tzinfo=UTC))
    assert [r.isoformat() for r in found] == ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00",
                                              "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]


def test_berlin_fall_back_runs_a_daily_time_in_the_repeated_hour_once() -> None:
    # 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice; the run is in the first (+02:00) only
    found = runs(Schedule(cron="30 2 * * *", timezone="Europe/Berlin"), datetime(2026, 10, 24, 12, tzinfo=UTC),
                 datetime(2026, 10, 27, 12, tzinfo=UTC))
    assert [r.isoformat() for r in found] == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00",
                                              "2026-10-27T02:30:00+01:00"]
    # asked from inside the second 02:xx hour (02:10 CET, after that day's run): the next day, not the past
    second = datetime(2026, 10, 25, 1, 10, tzinfo=UTC)
    assert second.astimezone(BERLIN).isoformat() == "2026-10-25T02:10:00+01:00"
    assert next_run(Schedule(cron="30 2 * * *", timezone="Europe/Berlin"), second).isoformat() == \
        "2026-10-26T02:30:00+01:00"


def test_wildcard_hours_run_by_elapsed_time_through_both_changes() -> None:
    hourly = Schedule(cron="0 * * * *", timezone="Europe/Berlin")
    spring = runs(hourly, datetime(2026, 3, 29, tzinfo=BERLIN) - timedelta(seconds=1),
                  datetime(2026, 3, 30, tzinfo=BERLIN))
    assert len(spring) == 23 and "2026-03-29T02:00:00+01:00" not in [r.isoformat() for r in spring]
    fall = runs(hourly, datetime(2026, 10, 25, tzinfo=BERLIN) - timedelta(seconds=1),
                datetime(2026, 10, 26, tzinfo=BERLIN))
    assert len(fall) == 25
    assert [r.isoformat() for r in fall[2:5]] == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00",
                                                  "2026-10-25T03:00:00+01:00"]
    gaps = {b.timestamp() - a.timestamp() for a, b in itertools.pairwise(fall)}
    assert gaps == {3600.0}


def test_new_york_spring_forward_and_fall_back() -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST (01:xx twice)
    spring = runs(Schedule(cron="30 2 * * *", timezone="America/New_York"), datetime(2026, 3, 7, 12, tzinfo=UTC),
                  datetime(2026, 3, 9, 12, tzinfo=UTC))
    assert [r.isoformat() for r in spring] == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    fall = runs(Schedule(cron="30 1 * * *", timezone="America/New_York"), datetime(2026, 10, 31, 12, tzinfo=UTC),
                datetime(2026, 11, 2, 12, tzinfo=UTC))
    assert [r.isoformat() for r in fall] == ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    assert all(r.tzinfo == NEW_YORK for r in spring + fall)
