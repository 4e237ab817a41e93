"""The local stack (cli/stack.py): children get the stack's Settings, whatever this shell exports; the
supervisor reaps and restarts a killed worker or Redis, and nothing is lost."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from cli.stack import Stack
from service.client import Client
from service.config import ApiSettings
from service.language.loader import load_file
from tests.cli.conftest import gone, ready, supervising, until, zombies
from tests.conftest import EXAMPLES, settings_from
from tests.service.conftest import TOKENS, finished, make_stack


def test_children_get_the_stacks_settings_not_the_shells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINYARD_AUTH_DISABLED", "true")  # ignored: the stack has a token
    monkeypatch.setenv("CHAINYARD_MAX_BLOCK", "7")  # a setting of this shell reaches the children
    monkeypatch.setenv("CHAINYARD_NOT_A_SETTING", "x")
    monkeypatch.setenv("HOME", "/home/someone")
    stack = Stack(data_dir=tmp_path, port=8123, workers=2, token="tok", redis_port=6390,
                  overrides={"block_seconds": 0.05, "compile_cache_dir": tmp_path / "cache"})
    env = stack.env()
    assert env["HOME"] == "/home/someone" and "CHAINYARD_NOT_A_SETTING" not in env
    assert settings_from(env, monkeypatch) == stack.settings
    assert stack.settings.redis_url == "redis://127.0.0.1:6390/0"
    assert stack.settings.tokens == {"tok": "local"} and not stack.settings.auth_disabled
    assert (stack.settings.max_block, stack.settings.block_seconds) == (7, 0.05)


def test_a_worker_gets_its_own_metrics_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = Stack(data_dir=tmp_path, port=8123, workers=1, token=None)
    worker = settings_from(stack.env(metrics_port=9499), monkeypatch)
    assert worker.metrics_port == 9499 and worker.auth_disabled
    assert worker == stack.settings.model_copy(update={"metrics_port": 9499})


def api_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ApiSettings:
    """What the stack's API child builds from `env`."""
    settings_from(env, monkeypatch)  # leaves exactly env's CHAINYARD_* set
    return ApiSettings()


@pytest.fixture
def exported_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("tok-file:team-b\n")
    monkeypatch.setenv("CHAINYARD_TOKENS", "tok-env:team-a")
    monkeypatch.setenv("CHAINYARD_TOKENS_FILE", str(tokens_file))


@pytest.mark.usefixtures("exported_tokens")
def test_exported_tokens_reach_the_api_when_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = Stack(data_dir=tmp_path, port=8123, workers=1, token=None, tokens_from_env=True)
    api = api_settings(stack.env(), monkeypatch)
    assert api.tokens == {"tok-env": "team-a", "tok-file": "team-b"} and not api.auth_disabled


@pytest.mark.usefixtures("exported_tokens")
def test_a_stack_token_replaces_the_exported_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = Stack(data_dir=tmp_path, port=8123, workers=1, token="tok").env()
    assert "CHAINYARD_TOKENS_FILE" not in env  # the file would add its tokens to the API's
    assert api_settings(env, monkeypatch).tokens == {"tok": "local"}


@pytest.mark.usefixtures("exported_tokens")
def test_auth_off_carries_no_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = api_settings(Stack(data_dir=tmp_path, port=8123, workers=1, token=None).env(), monkeypatch)
    assert api.auth_disabled and api.tokens == {} and api.tokens_file is None


# --- supervision: real Redis, API and worker; the supervisor runs in a thread as `up` runs it in its loop


def job_doc(seed: int, warmup: int, draws: int) -> dict[str, Any]:
    return {"model": load_file(EXAMPLES / "eight_schools.yaml"),
            "sampler": {"chains": 2, "warmup": warmup, "draws": draws, "seed": seed}}


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory, compile_cache: Path) -> Iterator[tuple[Stack, list[str]]]:
    """One worker, small blocks; yields the stack and the supervisor's lines. Stopping it restarts nothing."""
    stack = make_stack(tmp_path_factory.mktemp("supervised"), compile_cache, workers=1, max_block=10)
    lines: list[str] = []
    stack.report = lines.append
    stack.start()
    try:
        with supervising(stack) as errors:
            yield stack, lines
            said = len(lines)
            stack.stop()
            assert lines[said:] == [] and errors == []
    finally:
        stack.stop()


@pytest.mark.slow
def test_a_killed_worker_is_reaped_and_restarted_under_its_name(supervised: tuple[Stack, list[str]]) -> None:
    stack, lines = supervised
    with Client(stack.url, TOKENS["alice"]) as client:
        job = client.submit(job_doc(41, 300, 300))
        until(lambda: min(c["iteration"] for c in client.get(job["id"])["chains"]) >= 20, "both chains sample")
        victim = stack.worker_procs["worker-0"]
        os.kill(victim.pid, signal.SIGKILL)
        until(lambda: stack.worker_procs["worker-0"] is not victim, "worker-0 is restarted", timeout=30)
        assert victim.returncode == -signal.SIGKILL and gone(victim.pid) and zombies(os.getpid()) == []
        done = finished(client, job["id"])
    assert done["state"] == "succeeded", done.get("error")
    assert {c["worker"] for c in done["chains"]} == {"worker-0"}  # resumed by the restarted worker, same name
    assert "worker-0 exited with signal 9 (SIGKILL); restarting in 0.5 s" in lines


def aof_rewritten(redis: Redis) -> bool:
    info = redis.info("persistence")
    return not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]


@pytest.mark.slow
def test_a_killed_redis_is_restarted_on_its_port_and_files(supervised: tuple[Stack, list[str]]) -> None:
    stack, lines = supervised
    redis = Redis.from_url(stack.redis_url)
    with Client(stack.url, TOKENS["alice"]) as client:
        before = finished(client, client.submit(job_doc(42, 100, 100))["id"])
        assert before["state"] == "succeeded"
        redis.bgrewriteaof()  # what was acknowledged is on disk now, not within appendfsync's second
        until(lambda: aof_rewritten(redis), "the AOF is rewritten")
        victim = stack.redis
        assert victim is not None
        os.kill(victim.pid, signal.SIGKILL)
        until(lambda: stack.redis is not victim, "Redis is restarted", timeout=30)
        assert gone(victim.pid)
        until(lambda: ready(stack.port), "/readyz is 200 again", timeout=30)
        assert client.get(before["id"])["state"] == "succeeded"  # same files: nothing lost
        assert client.summary(before["id"])["variables"]
        after = finished(client, client.submit(job_doc(43, 100, 100))["id"])
    assert after["state"] == "succeeded", after.get("error")
    assert "redis exited with signal 9 (SIGKILL); restarting in 0.5 s" in lines
    assert zombies(os.getpid()) == []


@pytest.mark.slow
def test_a_killed_api_is_restarted_on_its_port(supervised: tuple[Stack, list[str]]) -> None:
    stack, lines = supervised
    victim = stack.api
    assert victim is not None
    os.kill(victim.pid, signal.SIGKILL)
    until(lambda: stack.api is not victim, "the API is restarted", timeout=30)
    assert gone(victim.pid)
    until(lambda: ready(stack.port), "/readyz is 200 again", timeout=60)
    assert "api exited with signal 9 (SIGKILL); restarting in 0.5 s" in lines
