"""`chainyard up`: brings the stack up, runs a job end to end, and leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import EXAMPLES, subprocess_env
from workers.stack import free_port


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


def test_up_submit_runs_a_job_and_shuts_down_cleanly(tmp_path: Path, compile_cache: Path) -> None:
    data = tmp_path / "up-data"
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "up", "--workers", "1", "--port", str(free_port()), "--data-dir",
         str(data), "--submit", str(EXAMPLES / "eight_schools.yaml")],
        capture_output=True, text=True, timeout=300, env=subprocess_env(compile_cache),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "theta[Choate]" in done.stdout and "token:" in done.stderr
    time.sleep(0.5)
    assert processes_mentioning(str(data)) == []


def test_up_in_the_foreground_stops_on_sigterm(tmp_path: Path, compile_cache: Path) -> None:
    data = tmp_path / "fg-data"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "up", "--workers", "2", "--port", str(port), "--data-dir", str(data),
         "--token", "secret-token"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(compile_cache),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
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
    time.sleep(0.5)
    assert not [pid for pid in spawned if alive(pid)]
    assert processes_mentioning(str(data)) == []
