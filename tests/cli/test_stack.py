"""The local stack's configuration (cli/stack.py): children get the stack's Settings, whatever this shell exports."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.stack import Stack
from tests.conftest import settings_from


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
