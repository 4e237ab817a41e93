"""Shared fixtures: one JAX compile cache per test session, spec factories."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.language.loader import load_file

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
