"""The REST API against a real stack: Redis server, uvicorn, worker processes."""

from __future__ import annotations

import copy
import json
import time
import warnings
from typing import Any

import httpx
import numpy as np
import pytest
from redis import Redis

from cli.stack import Stack
from service import keys
from service.client import ApiError, Client
from service.language.loader import load_file
from service.sampler import parse_job
from tests.conftest import EXAMPLES
from tests.service.conftest import TOKENS, finished, wait_for
from tests.service.language.test_validate import BAD_SPECS

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

pytestmark = pytest.mark.usefixtures("jax_ready")


def eight_schools_job(**sampler: Any) -> dict[str, Any]:
    return {"model": load_file(EXAMPLES / "eight_schools.yaml"),
            "sampler": {"chains": 3, "warmup": 200, "draws": 200, "seed": 21, **sampler}}


def reference_draws(job: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    from workers.engine import Engine

    model, settings = parse_job(job)
    return Engine().run(model, settings.model_copy(update={"seed": seed})).draws


def test_submit_watch_summary_and_netcdf_equal_to_a_local_run(alice: Client) -> None:
    job_doc = eight_schools_job()
    job = alice.submit(job_doc)
    assert job["state"] == "queued" and len(job["chains"]) == 3
    events = list(alice.events(job["id"]))
    assert events[-1] == ("end", {"state": "succeeded"})
    assert events[0][0] == "progress" and all(e == "progress" for e, _ in events[:-1])
    done = alice.get(job["id"])
    assert done["state"] == "succeeded" and all(c["phase"] == "done" for c in done["chains"])
    assert done["diagnostics"]["max_rhat"] < 1.05 and done["diagnostics"]["draws_per_chain"] == 200
    summary = alice.summary(job["id"])
    rows = {r["variable"]: r for r in summary["variables"]}
    assert "theta[Choate]" in rows and summary["totals"]["chains"] == 3
    with open_netcdf(alice.netcdf(job["id"])) as idata:
        theta = idata.posterior["theta"]
        assert theta.dims == ("chain", "draw", "school") and theta.shape == (3, 200, 8)
        got = {k: idata.posterior[k].values for k in idata.posterior.data_vars}
    want = reference_draws(job_doc, seed=21)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    as_json = alice.draws(job["id"], ["mu"])
    assert np.array_equal(np.asarray(as_json["draws"]["mu"]), want["mu"])


class open_netcdf:  # noqa: N801
    def __init__(self, blob: bytes) -> None:
        import tempfile

        self.tmp = tempfile.NamedTemporaryFile(suffix=".nc")  # noqa: SIM115
        self.tmp.write(blob)
        self.tmp.flush()

    def __enter__(self) -> Any:
        self.idata = az.from_netcdf(self.tmp.name)
        return self.idata

    def __exit__(self, *exc: object) -> None:
        self.idata.close()
        self.tmp.close()


def test_identical_seeded_request_returns_the_same_job(alice: Client) -> None:
    doc = eight_schools_job(draws=50, warmup=50)
    first, second = alice.submit(doc), alice.submit(copy.deepcopy(doc))
    assert first["id"] == second["id"]
    unseeded = eight_schools_job(draws=50, warmup=50, seed=None)
    a, b = alice.submit(unseeded), alice.submit(unseeded)
    assert a["id"] != b["id"] and a["seed"] != b["seed"]
    for job_id in {first["id"], a["id"], b["id"]}:
        assert finished(alice, job_id)["state"] == "succeeded"


def test_tokens_and_tenants(stack: Stack, alice: Client, bob: Client) -> None:
    job = alice.submit(eight_schools_job(draws=30, warmup=30, seed=77))
    raw = httpx.get(f"{stack.url}/v1/jobs/{job['id']}")
    assert raw.status_code == 401 and raw.json()["error"]["code"] == "unauthorized"
    wrong = httpx.get(f"{stack.url}/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    for call in (lambda: bob.get(job["id"]), lambda: bob.cancel(job["id"]), lambda: bob.delete(job["id"]),
                 lambda: bob.summary(job["id"])):
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status == 404
    assert job["id"] not in {j["id"] for j in bob.list()["jobs"]}
    assert job["id"] in {j["id"] for j in alice.list()["jobs"]}
    # the same seeded request from another tenant is another job
    assert bob.submit(eight_schools_job(draws=30, warmup=30, seed=77))["id"] != job["id"]


@pytest.mark.parametrize("kind", list(BAD_SPECS))
def test_every_bad_spec_is_a_422_naming_the_field(alice: Client, kind: str) -> None:
    doc, path, fragment = BAD_SPECS[kind]
    body = doc if isinstance(doc, dict) and "model" in doc else {"model": doc}
    # raw JSON text: NaN and Infinity arrive as users' JSON libraries write them
    text = json.dumps(body) if kind != "deep data nesting" else json.dumps(
        {"model": {**body["model"], "data": {**body["model"]["data"], "z": "NESTED"}}}
    ).replace('"NESTED"', "[" * 5000 + "1.0" + "]" * 5000)
    response = alice.http.post("/v1/jobs", content=text, headers={"content-type": "application/json"})
    if kind == "deep data nesting":  # refused by the JSON parser itself, before any validation
        assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"
        return
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    if not isinstance(body.get("model"), dict):
        assert details and details[0]["path"] == "model"
        return
    expected = path if path.startswith("sampler") or path.startswith("model.") else f"model.{path}".rstrip(".")
    found = [(d["path"], d["message"]) for d in details]
    assert any(p == expected and fragment in m for p, m in found), found


def test_request_errors_have_one_shape(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {TOKENS['alice']}"}
    cases = [
        (httpx.post(f"{stack.url}/v1/jobs", content=b"{not json", headers={**headers, "content-type":
                                                                           "application/json"}), 422),
        (httpx.post(f"{stack.url}/v1/jobs", json={"sampler": {}}, headers=headers), 422),
        (httpx.post(f"{stack.url}/v1/jobs", json={"model": {}, "bogus": 1}, headers=headers), 422),
        (httpx.get(f"{stack.url}/v1/jobs/jnope", headers=headers), 404),
        (httpx.get(f"{stack.url}/v1/jobs?limit=0", headers=headers), 422),
        (httpx.post(f"{stack.url}/v1/jobs", content=b"x" * (33 * 1024 * 1024), headers=headers), 413),
        (httpx.delete(f"{stack.url}/v1/jobs", headers=headers), 405),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])


def test_validate_route_returns_shapes_and_graph(alice: Client) -> None:
    info = alice.validate({"spec": 1, "formula": "y ~ x + (1 | g)",
                           "data": {"y": [1.0, 2.0, 3.0, 4.0], "x": [0.0, 1.0, 0.0, 1.0], "g": ["a", "a", "b", "b"]}})
    assert {v["name"] for v in info["variables"]} >= {"Intercept", "x", "1|g", "1|g_sigma", "sigma"}
    assert info["graph"]["observe"]["y"].startswith("Normal(")
    with pytest.raises(ApiError) as err:
        alice.validate({"spec": 1, "params": {"mu": "Normal(0, -1)"}})
    assert err.value.status == 422 and err.value.details[0]["path"] == "model.params.mu"


def poll(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def tasks_of(redis: Redis, job_id: str) -> list[Any]:
    """The job's entries in the chain queue (each stays until its chain is done or need not run)."""
    return [e for e in redis.xrange(keys.TASKS) if e[1][b"job"] == job_id.encode()]


def test_cancel_stops_every_chain_within_a_block(alice: Client, redis: Redis) -> None:
    job = alice.submit(eight_schools_job(warmup=300, draws=200_000, chains=2, seed=5))
    wait_for(alice, job["id"], lambda j: all(c["phase"] == "sampling" for c in j["chains"]))
    alice.cancel(job["id"])
    at_cancel = [c["iteration"] for c in alice.get(job["id"])["chains"]]
    poll(lambda: not tasks_of(redis, job["id"]))  # both workers stopped and acknowledged their chains
    after = alice.get(job["id"])
    assert after["state"] == "cancelled"
    moved = [a["iteration"] - b for a, b in zip(after["chains"], at_cancel, strict=True)]
    assert all(m <= 50 for m in moved), moved  # CHAINYARD_MAX_BLOCK=50: at most one more block each
    with pytest.raises(ApiError) as info:
        alice.summary(job["id"])
    assert info.value.status == 409


def test_delete_removes_every_key_of_the_job(alice: Client, redis: Redis) -> None:
    job = alice.submit(eight_schools_job(draws=100, warmup=100, seed=8))
    finished(alice, job["id"])
    assert redis.keys(f"*{job['id']}*")
    alice.delete(job["id"])
    assert redis.keys(f"*{job['id']}*") == []
    with pytest.raises(ApiError) as info:
        alice.get(job["id"])
    assert info.value.status == 404
    running = alice.submit(eight_schools_job(draws=200_000, warmup=100, chains=2, seed=9))
    wait_for(alice, running["id"], lambda j: j["state"] == "running")
    alice.delete(running["id"])
    poll(lambda: not tasks_of(redis, running["id"]))  # the workers noticed at their next block
    assert redis.keys(f"*{running['id']}*") == []  # and wrote nothing after it (guarded writes)


def test_failing_chain_fails_its_job_and_the_worker_keeps_serving(alice: Client) -> None:
    bad = {"model": {"spec": 1, "data": {"y": [1.0, 2.0]}, "params": {"mu": "Normal(0, 1)"},
                     "observe": {"y": "Normal(mu, exp(1000 + mu))"}},
           "sampler": {"chains": 2, "warmup": 20, "draws": 20, "seed": 1}}
    job = finished(alice, alice.submit(bad)["id"])
    assert job["state"] == "failed"
    assert "initialization failed: log density is -inf" in job["error"]
    ok = finished(alice, alice.submit(eight_schools_job(draws=40, warmup=40, seed=2))["id"])
    assert ok["state"] == "succeeded"


def test_list_filters_by_state_and_label_and_pages(alice: Client) -> None:
    ids = [alice.submit({**eight_schools_job(draws=20, warmup=20, seed=100 + i), "labels": {"batch": "b1"},
                         "name": f"n{i}"})["id"] for i in range(3)]
    for job_id in ids:
        finished(alice, job_id)
    listed = alice.list(label="batch=b1")
    assert {j["id"] for j in listed["jobs"]} == set(ids) and listed["total"] == 3
    page = alice.list(label="batch=b1", limit=2, offset=2)
    assert len(page["jobs"]) == 1 and page["total"] == 3
    assert all(j["state"] == "succeeded" for j in alice.list(state="succeeded")["jobs"])


def http_count(stack: Stack, route: str, status: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(f"{stack.url}/metrics").text):
        for sample in family.samples:
            if (sample.name == "chainyard_http_requests_total" and sample.labels["route"] == route
                    and sample.labels["status"] == status and sample.labels["method"] == "GET"):
                return sample.value
    return 0.0


def test_health_and_metrics(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{stack.url}/readyz").status_code == 200
    before = http_count(stack, "/v1/jobs/{job_id}", "404")
    for _ in range(3):
        assert httpx.get(f"{stack.url}/v1/jobs/jnope", headers={"Authorization": f"Bearer {TOKENS['bob']}"}
                         ).status_code == 404
    assert http_count(stack, "/v1/jobs/{job_id}", "404") == before + 3  # by route template, not by id


def test_openapi_documents_the_error_shape_on_every_route(stack: Stack) -> None:
    schema = httpx.get(f"{stack.url}/openapi.json").json()
    error = schema["components"]["schemas"]["ErrorResponse"]
    assert set(error["properties"]) == {"error"}
    v1 = {(path, method): op for path, ops in schema["paths"].items() if path.startswith("/v1/")
          for method, op in ops.items()}
    assert ("/v1/jobs/{job_id}/summary", "get") in v1 and ("/v1/models/validate", "post") in v1
    for (path, method), op in v1.items():
        for status in ("401", "422"):
            ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/ErrorResponse", (path, method, status)
    states = schema["components"]["schemas"]["JobState"]["enum"]
    assert states == ["queued", "running", "succeeded", "failed", "cancelled"]


def test_the_chain_queue_empties_once_every_job_ended(alice: Client, redis: Redis) -> None:
    jobs = [alice.submit(eight_schools_job(draws=30, warmup=30, seed=300 + i)) for i in range(3)]
    alice.cancel(jobs[1]["id"])
    alice.delete(jobs[2]["id"])
    assert finished(alice, jobs[0]["id"])["state"] == "succeeded"
    poll(lambda: redis.xlen(keys.TASKS) == 0, timeout=240)  # every job of this module has ended by now


def test_no_jax_in_the_api_process(stack: Stack) -> None:
    assert stack.api is not None
    with open(f"/proc/{stack.api.pid}/maps") as f:
        maps = f.read()
    assert "jaxlib" not in maps and "xla_extension" not in maps

