"""Settings (service/config.py): the environment round trip of to_env(), and the API's token rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.config import ApiSettings, Settings

NO_TOKENS = "no API tokens configured: set CHAINYARD_TOKENS or CHAINYARD_TOKENS_FILE"


@pytest.fixture(autouse=True)
def no_chainyard_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CHAINYARD_"):
            monkeypatch.delenv(name)


def from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, cls: type[Settings] = Settings) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cls()


def test_to_env_names_only_the_fields_set() -> None:
    assert Settings().to_env() == {}
    assert Settings(max_block=50, auth_disabled=True, tokens="a:x,b:y", compile_cache_dir=None).to_env() == {
        "CHAINYARD_MAX_BLOCK": "50", "CHAINYARD_TOKENS": "a:x,b:y", "CHAINYARD_AUTH_DISABLED": "true"}


def test_to_env_round_trips_every_kind_of_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(compile_cache_dir=tmp_path / "cache", block_seconds=0.05, max_block=7, redis_url=
                        "redis://127.0.0.1:6390/0", tokens={"a": "x", "b": "y:z"}, auth_disabled=False,
                        diagnostics_cpu_share=0.125, metrics_port=0, worker_name="worker-3", data_dir=tmp_path)
    env = settings.to_env()
    assert from_env(env, monkeypatch) == settings
    fields = {name.removeprefix("CHAINYARD_").lower(): value for name, value in env.items()}
    assert Settings(**fields) == settings


def test_api_settings_round_trip_with_a_tokens_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("c:team-c\n\n  b:team-b2\n")
    settings = ApiSettings(tokens="a:team-a,b:team-b", tokens_file=tokens_file)
    assert settings.tokens == {"a": "team-a", "b": "team-b2", "c": "team-c"}  # the file's line wins
    assert from_env(settings.to_env(), monkeypatch, ApiSettings) == settings


def test_tokens_are_token_tenant_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_env({"CHAINYARD_TOKENS": " a:x, ,b:y:z,"}, monkeypatch).tokens == {"a": "x", "b": "y:z"}
    for bad, secret in (("s3cret:x,just-a-token", "s3cret"), (":team-a", "team-a"), ("s3cret:", "s3cret")):
        with pytest.raises(ValueError, match="tokens are 'token:tenant' pairs") as raised:
            Settings(tokens=bad)
        assert secret not in str(raised.value)  # a token is never echoed into a log


def test_a_bad_line_in_the_tokens_file_is_refused(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("a:x\nb\n")
    with pytest.raises(ValueError, match="tokens are 'token:tenant' pairs"):
        ApiSettings(tokens_file=tokens_file)


def test_the_api_refuses_no_tokens_unless_auth_is_disabled(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=NO_TOKENS):
        ApiSettings()
    empty = tmp_path / "tokens"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=NO_TOKENS):
        ApiSettings(tokens_file=empty)
    assert ApiSettings(auth_disabled=True).tokens == {}
    assert Settings().tokens == {}  # workers need none


def test_only_the_api_reads_the_tokens_file(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    assert Settings(tokens_file=missing).tokens == {}  # a worker: the Secret is mounted only into the API pod
    with pytest.raises(FileNotFoundError):
        ApiSettings(tokens_file=missing)
