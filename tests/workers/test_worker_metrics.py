"""A worker's /metrics and /healthz: with a metrics token, /metrics needs it; /healthz never does."""

from __future__ import annotations

import httpx

from cli.stack import free_port
from workers.worker import serve_metrics


def test_worker_metrics_need_the_metrics_token() -> None:
    port = free_port()
    serve_metrics(port, "s3cret")
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and "chainyard_chain_iterations_total" in ok.text
    assert httpx.get(f"{url}/healthz").text == "ok\n"


def test_without_a_token_metrics_are_open() -> None:
    port = free_port()
    serve_metrics(port)
    assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
