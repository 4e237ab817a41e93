"""`chainyard up` (cli/up.py): brings the stack up, runs a job end to end, and leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from cli.stack import free_port
from tests.conftest import EXAMPLES, subprocess_env

CHAINYARD = [sys.executable, "-m", "cli"]


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


def children(parent: int) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if pid.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(pid))
        except (OSError, IndexError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_up_submit_runs_a_job_and_shuts_down_cleanly(tmp_path: Path, compile_cache: Path) -> None:
    data = tmp_path / "up-data"
    done = subprocess.run(
        [*CHAINYARD, "up", "--workers", "1", "--port", str(free_port()), "--data-dir", str(data),
         "--submit", str(EXAMPLES / "eight_schools.yaml")],
        capture_output=True, text=True, timeout=300, env=subprocess_env(compile_cache),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "theta[Choate]" in done.stdout and "token:" in done.stderr
    until(lambda: processes_mentioning(str(data)) == [], "no process left using the data dir", timeout=10)


def test_up_in_the_foreground_stops_on_sigterm(tmp_path: Path, compile_cache: Path) -> None:
    data = tmp_path / "fg-data"
    port = free_port()
    proc = subprocess.Popen(
        [*CHAINYARD, "up", "--workers", "2", "--port", str(port), "--data-dir", str(data), "--token", "secret-token"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(compile_cache),
    )
    try:
        until(lambda: ready(port), "the API answers /readyz")
        listing = httpx.get(f"http://127.0.0.1:{port}/v1/jobs", headers={"Authorization": "Bearer secret-token"})
        assert listing.status_code == 200
        spawned = children(proc.pid)
        assert len(spawned) == 4  # redis, api, 2 workers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    until(lambda: not [pid for pid in spawned if alive(pid)], "every child exited", timeout=10)
    until(lambda: processes_mentioning(str(data)) == [], "no process left using the data dir", timeout=10)
