"""`chainyard up` (cli/up.py): brings the stack up, runs a job end to end, supervises it, uses the exported
tokens, and leaves no process behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer

from cli.console import EXIT_BAD_SPEC, EXIT_FAILED
from cli.stack import free_port
from cli.up import resolve_auth
from tests.cli.conftest import alive, children, processes_mentioning, ready, until
from tests.conftest import EXAMPLES, subprocess_env

CHAINYARD = [sys.executable, "-m", "cli"]


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


def status(port: int, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"http://127.0.0.1:{port}/v1/jobs", headers=headers, timeout=10).status_code


def test_up_in_the_foreground_stops_on_sigterm_without_restarts(tmp_path: Path, compile_cache: Path) -> None:
    data = tmp_path / "fg-data"
    port = free_port()
    log = tmp_path / "up.stderr"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            [*CHAINYARD, "up", "--workers", "2", "--port", str(port), "--data-dir", str(data), "--token",
             "secret-token"],
            stdout=subprocess.DEVNULL, stderr=stderr,
            env=subprocess_env(compile_cache, CHAINYARD_TOKENS="tok-env:team-a"),
        )
    try:
        until(lambda: ready(port), "the API answers /readyz")
        assert status(port, "secret-token") == 200
        assert status(port, "tok-env") == 401  # --token wins over the exported tokens
        spawned = children(proc.pid)
        assert len(spawned) == 4  # redis, api, 2 workers
        seen = set(spawned)

        def exited() -> bool:
            seen.update(children(proc.pid))
            return proc.poll() is not None

        proc.send_signal(signal.SIGTERM)
        until(exited, "up exits after SIGTERM")
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = log.read_text()
    assert seen == set(spawned), said  # the children exiting on the way down were not restarted
    assert "restart" not in said
    assert "it wins over CHAINYARD_TOKENS from the environment, which is ignored" in said
    assert "secret-token" not in said and "tok-env" not in said
    until(lambda: not [pid for pid in spawned if alive(pid)], "every child exited", timeout=10)
    until(lambda: processes_mentioning(str(data)) == [], "no process left using the data dir", timeout=10)


def test_up_uses_the_exported_tokens(tmp_path: Path, compile_cache: Path) -> None:
    data = tmp_path / "env-data"
    port = free_port()
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("tok-file:team-b\n")
    log = tmp_path / "up.stderr"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            [*CHAINYARD, "up", "--workers", "1", "--port", str(port), "--data-dir", str(data)],
            stdout=subprocess.DEVNULL, stderr=stderr,
            env=subprocess_env(compile_cache, CHAINYARD_TOKENS="tok-env:team-a",
                               CHAINYARD_TOKENS_FILE=str(tokens_file)),
        )
    try:
        until(lambda: ready(port), "the API answers /readyz")
        assert (status(port, "tok-env"), status(port, "tok-file"), status(port, None)) == (200, 200, 401)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = log.read_text()
    assert "tokens: the 2 of CHAINYARD_TOKENS and CHAINYARD_TOKENS_FILE (tenants team-a, team-b" in said
    assert "tok-" not in said and "token: " not in said  # neither the exported tokens nor a new one
    until(lambda: processes_mentioning(str(data)) == [], "no process left using the data dir", timeout=10)


@pytest.mark.slow
def test_up_gives_up_on_a_worker_that_exits_at_once(tmp_path: Path, compile_cache: Path) -> None:
    data = tmp_path / "crashing"
    data.mkdir()
    (data / "worker-0").write_text("a file where the worker's volume should be")  # its mkdir fails, every time
    started = time.monotonic()
    done = subprocess.run(
        [*CHAINYARD, "up", "--workers", "1", "--port", str(free_port()), "--data-dir", str(data), "--no-auth"],
        capture_output=True, text=True, timeout=240, env=subprocess_env(compile_cache),
    )
    took = time.monotonic() - started
    assert done.returncode == EXIT_FAILED, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    restarts = [line for line in lines if line.startswith("worker-0 exited with code 1; restarting in")]
    assert [line.rsplit(" ", 2)[1] for line in restarts] == ["0.5", "1.0", "2.0", "4.0"]
    assert "error: worker-0 exited with code 1: 5 exits within 60 s, giving up" in done.stderr
    assert not [line for line in lines if line.startswith(("redis ", "api "))]  # only the worker crashed
    # five failed starts (a worker's imports take seconds) and 7.5 s of backoff, on a loaded machine
    assert took < 150
    until(lambda: processes_mentioning(str(data)) == [], "no process left using the data dir", timeout=10)


# --- where the tokens come from (no processes)


@pytest.fixture
def no_exported_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CHAINYARD_TOKENS", "CHAINYARD_TOKENS_FILE", "CHAINYARD_AUTH_DISABLED"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_exported_tokens")
def test_without_exported_tokens_up_makes_one_and_prints_it() -> None:
    auth = resolve_auth(None, False)
    assert auth.token and not auth.from_env and auth.client_token == auth.token
    assert auth.notice == f"token: {auth.token}"


@pytest.mark.usefixtures("no_exported_tokens")
def test_exported_tokens_are_used_and_not_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINYARD_TOKENS", "tok-a:team-a,tok-b:team-b")
    auth = resolve_auth(None, False)
    assert auth.token is None and auth.from_env and auth.client_token == "tok-a"
    assert auth.notice == "tokens: the 2 of CHAINYARD_TOKENS (tenants team-a, team-b; --token to override)"


@pytest.mark.usefixtures("no_exported_tokens")
def test_an_explicit_token_wins_and_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHAINYARD_TOKENS_FILE", str(tmp_path / "tokens"))  # not even read
    auth = resolve_auth("mine", False)
    assert (auth.token, auth.from_env, auth.client_token) == ("mine", False, "mine")
    assert "it wins over CHAINYARD_TOKENS_FILE from the environment, which is ignored" in auth.notice
    assert "mine" not in auth.notice


@pytest.mark.usefixtures("no_exported_tokens")
def test_no_auth_ignores_exported_tokens_and_excludes_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINYARD_TOKENS", "tok-a:team-a")
    auth = resolve_auth(None, True)
    assert (auth.token, auth.from_env) == (None, False)
    assert auth.notice == "auth off (--no-auth); CHAINYARD_TOKENS from the environment ignored"
    with pytest.raises(typer.BadParameter):
        resolve_auth("mine", True)


@pytest.mark.usefixtures("no_exported_tokens")
@pytest.mark.parametrize(("name", "value"), [("CHAINYARD_TOKENS", "tok-without-tenant"),
                                             ("CHAINYARD_TOKENS", ","),
                                             ("CHAINYARD_TOKENS_FILE", "/nonexistent/tokens")])
def test_unusable_exported_tokens_are_refused_before_anything_starts(
        name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(typer.Exit) as exited:
        resolve_auth(None, False)
    assert exited.value.exit_code == EXIT_BAD_SPEC
    said = capsys.readouterr().err
    assert name in said and "tok-without-tenant" not in said
