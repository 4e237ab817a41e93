"""Property-based fuzzing of the OpenAPI schema (schemathesis): no input gives a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings

from cli.stack import free_port, start_redis
from service.api.app import create_app
from service.config import ApiSettings
from tests.service.conftest import TOKENS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The API in-process over a real Redis server (no workers: jobs stay queued)."""
    root = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    redis = start_redis(root / "redis", port, root / "redis.log")
    try:
        yield create_app(ApiSettings(redis_url=f"redis://127.0.0.1:{port}/0",
                                     tokens=",".join(f"{t}:{n}" for n, t in TOKENS.items())))
    finally:
        redis.terminate()
        redis.wait()


def test_no_input_gives_a_server_error(app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    headers = {"Authorization": f"Bearer {TOKENS['alice']}"}
    statuses: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case: Any) -> None:
            response = case.call(headers=headers)
            statuses.append(response.status_code)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
            if response.status_code >= 400:
                assert set(response.json()) == {"error"}, response.text[:300]

        no_server_error()
    assert len(statuses) >= 10 * len(operations)
    assert {200, 404, 422} <= set(statuses)  # the fuzzer reached real handlers, not only the validator
