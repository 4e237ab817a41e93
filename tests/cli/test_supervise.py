"""The supervisor's restart rules (cli/supervise.py), on a made-up clock."""

from __future__ import annotations

import signal

from cli.supervise import RestartPolicy, Restarts, describe_exit


def test_the_delay_doubles_with_each_exit_in_a_row_up_to_the_cap() -> None:
    restarts = Restarts(RestartPolicy(max_exits=100))
    delays = [restarts.exited(at=60.0 * i, uptime=1.0) for i in range(9)]  # an hour apart: never a crash loop
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_child_that_stayed_up_starts_over_at_the_first_delay() -> None:
    restarts = Restarts(RestartPolicy())
    assert [restarts.exited(at=t, uptime=1.0) for t in (0.0, 100.0, 200.0)] == [0.5, 1.0, 2.0]
    assert restarts.exited(at=300.0, uptime=30.0) == 0.5
    assert restarts.exited(at=400.0, uptime=29.0) == 1.0


def test_five_exits_within_sixty_seconds_give_up() -> None:
    restarts = Restarts(RestartPolicy())
    now, results = 0.0, []
    for _ in range(5):
        delay = restarts.exited(at=now, uptime=0.1)
        results.append(delay)
        now += (delay or 0) + 0.1
    assert results == [0.5, 1.0, 2.0, 4.0, None]


def test_exits_older_than_the_window_are_forgotten() -> None:
    policy = RestartPolicy(max_exits=3, window_seconds=10.0, stable_seconds=1000.0)
    restarts = Restarts(policy)
    assert restarts.exited(at=0.0, uptime=0.0) == 0.5
    assert restarts.exited(at=5.0, uptime=0.0) == 1.0
    assert restarts.exited(at=12.0, uptime=0.0) == 2.0  # the exit at 0 s left the window: two in it
    assert restarts.exited(at=14.0, uptime=0.0) is None  # 5, 12, 14


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(-signal.SIGKILL) == "exited with signal 9 (SIGKILL)"
    assert describe_exit(-200) == "exited with signal 200"
