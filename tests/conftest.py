"""Shared fixtures: one JAX compile cache per test session, spec factories."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from service.language.loader import load_file
from workers.jaxsetup import apply_xla_flags

if TYPE_CHECKING:
    from redis import Redis

    from service.config import Settings

apply_xla_flags()  # before any test starts JAX's backend, so every test process runs what the workers run
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One persistent JAX compile cache for the session, shared with subprocesses via the environment."""
    path = Path(os.environ.get("CHAINYARD_TEST_CACHE") or tmp_path_factory.mktemp("jax-cache"))
    return path


@pytest.fixture(scope="session")
def jax_ready(compile_cache: Path) -> Iterator[None]:
    from workers.jaxsetup import configure

    configure(compile_cache)
    yield


@pytest.fixture
def eight_schools() -> dict[str, Any]:
    return copy.deepcopy(load_file(EXAMPLES / "eight_schools.yaml"))


def subprocess_env(compile_cache: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CHAINYARD_COMPILE_CACHE_DIR"] = str(compile_cache)
    env.update(extra)
    return env


@contextlib.contextmanager
def real_redis(root: Path) -> Iterator[str]:
    """A real Redis server (files under `root`) for the duration; yields its URL."""
    from cli.stack import free_port, start_redis

    port = free_port()
    proc = start_redis(root, port, root / "redis.log")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait()


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a chainyard process builds from this environment (and none of this process's CHAINYARD_*)."""
    from service.config import Settings

    for name in list(os.environ):
        if name.startswith("CHAINYARD_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server shared by the tests of one module; its URL."""
    with real_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def empty_redis(redis_server: str) -> Redis:
    """A client of the module's Redis server, emptied for this test."""
    from redis import Redis

    r = Redis.from_url(redis_server)
    r.flushall()
    return r


@contextlib.contextmanager
def api_in_thread(app: Any, *, lifespan: str = "off") -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread of this process (no workers); yields its base URL."""
    import threading
    import time

    import uvicorn

    from cli.stack import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

