"""The API's front door against a real stack (Redis server, the API under service.api.server, 2 workers):
slow clients, unauthenticated and oversized bodies, a hung Redis, /metrics, and the small contract points.

Every load loop is bounded in count and in time; everything is on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from cli.stack import Stack
from service import keys
from service.client import Client
from service.language.loader import load_file
from service.metrics import LABEL_MAX, ClusterCollector
from tests.conftest import EXAMPLES
from tests.service.conftest import TOKENS, finished, make_stack

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
MAX_CONNECTIONS = 500
METRICS_TOKEN = "tok-metrics"
FLOOD = 2000
MB = 1024 * 1024


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, compile_cache: Path) -> Iterator[Stack]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < FLOOD + 500:  # this process holds the flood's client sockets
        if hard < FLOOD + 500:
            pytest.skip(f"needs {FLOOD + 500} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    s = make_stack(tmp_path_factory.mktemp("front"), compile_cache, header_timeout_seconds=HEADER_TIMEOUT,
                   body_timeout_seconds=BODY_TIMEOUT, max_connections=MAX_CONNECTIONS, metrics_token=METRICS_TOKEN,
                   readiness_timeout=1.0)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def alice(front: Stack) -> Iterator[Client]:
    with Client(front.url, TOKENS["alice"]) as c:
        yield c


@pytest.fixture
def bob(front: Stack) -> Iterator[Client]:
    with Client(front.url, TOKENS["bob"]) as c:
        yield c


@pytest.fixture
def redis(front: Stack) -> Redis:
    return Redis.from_url(front.redis_url)


def small_job(seed: int, **extra: Any) -> dict[str, Any]:
    return {"model": load_file(EXAMPLES / "eight_schools.yaml"),
            "sampler": {"chains": 1, "warmup": 20, "draws": 20, "seed": seed}, **extra}


def poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def api_pid(stack: Stack) -> int:
    assert stack.api is not None
    return stack.api.pid


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def connect(stack: Stack, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", stack.port), timeout=5)
    sock.sendall(head)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed the connection (EOF or reset); never blocks."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 response with a Content-Length."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def error_code(body: bytes) -> str:
    payload = json.loads(body)
    assert set(payload) == {"error"} and {"code", "message", "details"} <= set(payload["error"]), payload
    code: str = payload["error"]["code"]
    return code


def metrics_text(stack: Stack) -> str:
    response = httpx.get(f"{stack.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


# -- slow clients ------------------------------------------------------------------------------------------


def test_a_slow_header_flood_neither_exhausts_descriptors_nor_blocks_healthz(front: Stack) -> None:
    pid = api_pid(front)
    base = open_fds(pid)
    peak = base
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, open_fds(pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    flood: list[socket.socket] = []
    slowest_healthz = 0.0
    started = time.monotonic()
    try:
        for i in range(FLOOD):  # bounded: FLOOD connections, and the time check below
            with contextlib.suppress(OSError):  # closed before the head was sent (over capacity): as it should
                flood.append(connect(front, b"GET /healthz HTTP/1.1\r\nHost: chainyard\r\nX-Slow: "))
            if i % 250 == 249:
                t = time.monotonic()
                assert httpx.get(f"{front.url}/healthz", timeout=3).status_code == 200
                slowest_healthz = max(slowest_healthz, time.monotonic() - t)
            assert time.monotonic() - started < 60, "opening the flood took over a minute"
        # every flood connection is closed by the server: the oldest when over capacity, the rest at the deadline
        poll(lambda: all(closed_by_server(s) for s in flood), HEADER_TIMEOUT + 10,
             "the server closes every connection that sent no whole head")
    finally:
        stop.set()
        watcher.join()
        for s in flood:
            s.close()
    assert slowest_healthz < 2.0, slowest_healthz
    # the cap, not the flood, bounds descriptors: open connections, plus at most a listen backlog (min(2048,
    # max_connections)) accepted in one burst before the cap closes them
    assert peak <= base + 2 * MAX_CONNECTIONS + 20 < FLOOD, (base, peak)
    text = metrics_text(front)
    assert sample(text, "chainyard_http_connections_closed_total", reason="over_capacity") > 0
    assert sample(text, "chainyard_http_connections_closed_total", reason="header_timeout") > 0


def test_a_dripped_head_is_closed_at_its_deadline_however_it_drips(front: Stack) -> None:
    sock = connect(front, b"GET /healthz HTTP/1.1\r\n")
    opened = time.monotonic()
    try:
        while time.monotonic() - opened < HEADER_TIMEOUT + 5:  # one header byte every 0.25 s
            try:
                sock.sendall(b"X")
            except OSError:
                break
            if closed_by_server(sock):
                break
            sock.setblocking(True)
            time.sleep(0.25)
        lasted = time.monotonic() - opened
    finally:
        sock.close()
    assert HEADER_TIMEOUT - 0.5 < lasted < HEADER_TIMEOUT + 1.5, lasted


def test_a_stalled_body_is_closed_after_the_body_timeout(front: Stack) -> None:
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: chainyard\r\nAuthorization: Bearer {TOKENS['alice']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":").encode()
    sock = connect(front, head)
    opened = time.monotonic()
    try:
        poll(lambda: closed_by_server(sock), BODY_TIMEOUT + 3, "a body that stops arriving is dropped")
    finally:
        sock.close()
    assert time.monotonic() - opened > BODY_TIMEOUT - 0.5


# -- bodies: auth first, limits for chunked bodies ---------------------------------------------------------


def test_an_unauthenticated_body_is_refused_before_it_is_read(front: Stack) -> None:
    head = (b"POST /v1/jobs HTTP/1.1\r\nHost: chainyard\r\nContent-Type: application/json\r\n"
            b"Content-Length: 31457280\r\n\r\n")
    sock = connect(front, head)  # and not one byte of the announced 30 MB
    try:
        status, headers, body = read_response(sock, timeout=5)
    finally:
        sock.close()
    assert status == 401 and error_code(body) == "unauthorized" and headers["www-authenticate"] == "Bearer"


def test_eight_unauthenticated_30_mb_posts_leave_the_api_memory_flat(front: Stack) -> None:
    pid = api_pid(front)
    body = json.dumps({"model": {"spec": 1, "data": {"y": [0.123456789] * (30 * MB // 13)}}}).encode()
    before = rss_mb(pid)
    peak = before
    statuses: list[int] = []
    done = threading.Event()

    def post() -> None:
        response = httpx.post(f"{front.url}/v1/jobs", content=body, timeout=60,
                              headers={"Content-Type": "application/json"})
        statuses.append(response.status_code)

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(pid))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    posters = [threading.Thread(target=post) for _ in range(8)]
    for t in posters:
        t.start()
    for t in posters:
        t.join(timeout=120)
    done.set()
    watcher.join()
    assert statuses == [401] * 8
    assert peak - before < 60, (before, peak)  # parsing them would take ~500 MB


def test_a_chunked_body_over_the_limit_is_a_413(front: Stack) -> None:
    limit = front.settings.max_request_bytes
    sock = connect(front, (f"POST /v1/jobs HTTP/1.1\r\nHost: chainyard\r\nAuthorization: Bearer {TOKENS['alice']}"
                           "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
    chunk = b"%x\r\n%s\r\n" % (MB, b" " * MB)
    try:
        for _ in range(limit // MB + 1):  # just over the limit, then wait for the answer
            sock.sendall(chunk)
        status, _, body = read_response(sock, timeout=10)
    finally:
        sock.close()
    assert status == 413 and error_code(body) == "too_large"


# -- small contract points ---------------------------------------------------------------------------------


def test_every_405_names_the_allowed_methods(front: Stack) -> None:
    auth = {"Authorization": f"Bearer {TOKENS['alice']}"}
    cases = [("HEAD", "/healthz", "GET"), ("DELETE", "/v1/jobs", "GET, POST"),
             ("HEAD", "/v1/jobs/jwhatever", "DELETE, GET"), ("PUT", "/v1/models/validate", "POST")]
    for method, path, allowed in cases:
        response = httpx.request(method, f"{front.url}{path}", headers=auth)
        assert response.status_code == 405, (method, path)
        assert response.headers.get("allow") == allowed, (method, path, response.headers)
        if method != "HEAD":
            assert response.json()["error"]["code"] == "method_not_allowed"


def test_a_label_without_a_value_means_has_the_label(alice: Client) -> None:
    tagged = alice.submit(small_job(401, labels={"team": "x"}))
    other = alice.submit(small_job(402, labels={"other": "y"}))
    for job in (tagged, other):
        finished(alice, job["id"])
    assert {j["id"] for j in alice.list(label="team")["jobs"]} == {tagged["id"]}
    assert {j["id"] for j in alice.list(label="team=x")["jobs"]} == {tagged["id"]}
    assert alice.list(label="team=z")["total"] == 0
    assert other["id"] in {j["id"] for j in alice.list(label="other")["jobs"]}


def test_listing_reads_whole_records_only_for_the_page(bob: Client, redis: Redis) -> None:
    ids = [bob.submit(small_job(500 + i))["id"] for i in range(8)]
    for job_id in ids:
        finished(bob, job_id)
    for job_id in ids:  # records as large as a big job's could be
        redis.hset(keys.job(job_id), "padding", b"p" * (2 * MB))

    def redis_output() -> int:
        return int(redis.info("stats")["total_net_output_bytes"])

    before = redis_output()
    page = bob.list(limit=1)
    read = redis_output() - before
    assert page["total"] == 8 and len(page["jobs"]) == 1
    assert read < 4 * MB, read  # one padded record, not eight


def test_the_event_stream_of_a_deleted_job_ends_with_deleted(front: Stack, alice: Client) -> None:
    log = front.logs / "api.log"
    log_before = log.stat().st_size
    job = alice.submit({"model": load_file(EXAMPLES / "eight_schools.yaml"),
                        "sampler": {"chains": 2, "warmup": 100, "draws": 200_000, "seed": 9}})
    events: list[tuple[str, dict[str, Any]]] = []
    failure: list[BaseException] = []
    first = threading.Event()

    def listen() -> None:
        try:
            with Client(front.url, TOKENS["alice"]) as client:
                for event in client.events(job["id"]):
                    events.append(event)
                    first.set()
        except BaseException as exc:  # reported by the assertion below
            failure.append(exc)
        first.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert first.wait(30), "no first event"
    alice.delete(job["id"])
    listener.join(timeout=15)
    assert not listener.is_alive() and not failure, failure
    assert events[-1] == ("end", {"state": "deleted"}), events[-3:]
    with open(log, "rb") as f:
        f.seek(log_before)
        assert b"Traceback" not in f.read()


def test_an_unexpected_error_is_a_500_in_the_error_shape(front: Stack, redis: Redis) -> None:
    job_id = "jcorrupt000000000000000000"
    redis.hset(keys.job(job_id), mapping={"id": job_id, "tenant": "alice", "state": "no-such-state"})
    try:
        response = httpx.get(f"{front.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {TOKENS['alice']}"})
    finally:
        redis.delete(keys.job(job_id))
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json" and response.json()["error"]["code"] == "internal"


# -- /metrics ----------------------------------------------------------------------------------------------


def test_metrics_need_the_metrics_token_and_bound_their_labels(front: Stack, redis: Redis) -> None:
    for headers in ({}, {"Authorization": f"Bearer {TOKENS['alice']}"}, {"Authorization": "Bearer nope"}):
        response = httpx.get(f"{front.url}/metrics", headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    job_id = "jugly00000000000000000000"
    redis.hset(keys.diagnostics(job_id), mapping={"job": job_id, "model": "bad\x00\x1bname\n" + "m" * 5000,
                                                   "progress": "0.5"})
    redis.zadd(keys.DIAGNOSTICS_INDEX, {job_id: "+inf"})
    httpx.request("BREW", f"{front.url}/v1/jobs", headers={"Authorization": f"Bearer {TOKENS['alice']}"})
    try:
        text = metrics_text(front)
    finally:
        redis.delete(keys.diagnostics(job_id))
        redis.zrem(keys.DIAGNOSTICS_INDEX, job_id)
    models = [s.labels["model"] for family in text_string_to_metric_families(text) for s in family.samples
              if s.name == "chainyard_job_progress" and s.labels.get("job") == job_id]
    assert len(models) == 1 and len(models[0]) <= LABEL_MAX and models[0].isprintable(), models
    methods = {s.labels["method"] for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "chainyard_http_requests_total"}
    assert "BREW" not in methods and "other" in methods


def test_a_lone_surrogate_in_a_model_name_does_not_break_the_exposition() -> None:
    registry = CollectorRegistry(auto_describe=False)

    class Figures(ClusterCollector):
        def collect(self) -> Iterator[Any]:
            yield from self._per_job([{"job": "j1", "model": "eight\ud800schools", "progress": "1"}])

    registry.register(Figures(None))
    text = generate_latest(registry).decode()
    assert 'model="eight?schools"' in text


# -- Redis that hangs --------------------------------------------------------------------------------------


def test_readyz_fails_while_redis_hangs_and_healthz_stays_up(front: Stack) -> None:
    assert front.redis is not None
    os.kill(front.redis.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        ready = httpx.get(f"{front.url}/readyz", timeout=10)
        took = time.monotonic() - started
        assert ready.status_code == 503 and took < 3.0, (ready.status_code, took)
        assert httpx.get(f"{front.url}/healthz", timeout=2).status_code == 200
    finally:
        os.kill(front.redis.pid, signal.SIGCONT)
    poll(lambda: httpx.get(f"{front.url}/readyz", timeout=5).status_code == 200, 15, "ready again after SIGCONT")
