"""Helpers for tests of real processes: poll on a condition, read /proc, run a Stack's supervisor in a thread."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator

import httpx

from cli.stack import Stack


def until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _stat(pid: int | str) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, ...]; [] once the process is gone (reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def children(parent: int) -> list[int]:
    return [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _stat(pid)[1:2] == [str(parent)]]


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie."""
    return _stat(pid)[:1] not in ([], ["Z"])


def gone(pid: int) -> bool:
    """Reaped: not even a zombie is left."""
    return _stat(pid) == []


def zombies(parent: int) -> list[int]:
    return [pid for pid in children(parent) if _stat(pid)[:1] == ["Z"]]


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def supervising(stack: Stack, interval: float = 0.05) -> Iterator[list[BaseException]]:
    """`stack.supervise()` every `interval` s in a thread (as `up` runs it in its main loop) for the duration;
    yields the list its exceptions land in (a CrashLoopError ends the thread)."""
    errors: list[BaseException] = []
    done = threading.Event()

    def loop() -> None:
        while not done.wait(interval):
            try:
                stack.supervise()
            except Exception as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=loop, name="supervisor", daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        done.set()
        thread.join()
