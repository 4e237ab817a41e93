"""Hostile specs against a real stack (Redis, API, 2 workers): each is a 422 naming the field, nothing is queued,
and no worker dies. Before validation bounded memory and refused unencodable text, these specs OOM-killed
workers (an outer product from a 236-byte spec), overflowed Redis' 512 MB value limit (200k params x 400 draws),
killed the worker assembling the results (a lone surrogate in the model's name), or were a plain-text 500 (33
dimensions)."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
from redis import Redis

from cli.stack import Stack
from service import keys
from service.client import Client
from service.language.loader import load_file
from tests.conftest import EXAMPLES
from tests.service.conftest import finished

TENANT = "alice"


def eight_schools(**changes: Any) -> dict[str, Any]:
    model = copy.deepcopy(load_file(EXAMPLES / "eight_schools.yaml"))
    model.update(changes)
    return model


def theta(**fields: Any) -> dict[str, Any]:
    return eight_schools(params={**eight_schools()["params"],
                                 "theta": {"dist": "Normal(mu, tau)", "dims": ["school"], **fields}})


SURROGATE = "\ud800"
SCHOOLS = eight_schools()["coords"]["school"]

HOSTILE: dict[str, tuple[dict[str, Any], str, str]] = {
    # kind: (job document, path of the problem, fragment of its message)
    "outer product (236 bytes)": (
        {"model": {"spec": 1, "params": {"a": {"dist": "Normal(0, 1)", "shape": [10000, 1]},
                                         "b": {"dist": "Normal(0, 1)", "shape": [1, 10000]}},
                   "define": {"c": "a * b"}}},
        "model.define.c", "800 MB per evaluation (a * b, shape (10000, 10000)), limit 256 MB"),
    "outer matrix product": (
        {"model": {"spec": 1, "params": {"a": {"dist": "Normal(0, 1)", "shape": [100000, 1]},
                                         "b": {"dist": "Normal(0, 1)", "shape": [1, 100000]}},
                   "define": {"c": "a @ b"}}},
        "model.define.c", "80 GB per evaluation"),
    "results over Redis' value limit": (
        {"model": {"spec": 1, "params": {"x": {"dist": "Normal(0, 1)", "shape": [200000]}}},
         "sampler": {"draws": 400}},
        "sampler.draws", "results of 640 MB per chain"),
    "surrogate in the model name": ({"model": eight_schools(name=f"eight{SURROGATE}")}, "model.name",
                                    "lone surrogate U+D800"),
    "surrogate in a coord label": ({"model": eight_schools(coords={"school": [*SCHOOLS[:7], f"H{SURROGATE}"]})},
                                   "model.coords.school[7]", "lone surrogate U+D800"),
    "surrogate in a variable label": ({"model": theta(label=f"t{SURROGATE}")}, "model.params.theta.label",
                                      "lone surrogate U+D800"),
    "surrogate in a data key": ({"model": eight_schools(data={**eight_schools()["data"], f"z{SURROGATE}": 1})},
                                "model.data.z\\ud800", "lone surrogate U+D800"),
    "surrogate in a job label": ({"model": eight_schools(), "labels": {"team": f"a{SURROGATE}"}}, "labels.team",
                                 "lone surrogate U+D800"),
    "NUL in a coord label": ({"model": eight_schools(coords={"school": [*SCHOOLS[:7], "H\x00"]})},
                             "model.coords.school[7]", "control character U+0000"),
    "mixed coord labels": ({"model": eight_schools(coords={"school": [1, "1", *SCHOOLS[2:]]})},
                           "model.coords.school", "all strings or all numbers"),
    # these validated, sampled, then crashed result assembly (xarray) in the worker
    "a variable named like a sample stat": ({"model": eight_schools(define={"lp": "mu + 1"})}, "model.define.lp",
                                            "names a sample stat"),
    "one dimension twice": ({"model": eight_schools(params={**eight_schools()["params"], "c": {
        "dist": "LKJ(8)", "dims": ["school", "school"]}})}, "model.params.c.dims", "school given twice"),
    "a coord of another size on an unnamed dimension": (
        {"model": eight_schools(coords={"school": SCHOOLS, "y_dim_0": ["a", "b"]})}, "model.coords.y_dim_0",
        "names dimension y_dim_0 of 'y', of size 8, but has 2 labels"),
    "33 dimensions": ({"model": theta(dims=None, shape=[1] * 33)}, "model.params.theta.shape",
                      "33 dimensions; at most 8"),
    "folded exponent": ({"model": eight_schools(define={"x": "mu ** (64 ** 64)"})}, "model.define.x",
                        "exponent 64 ** 64 = 3.94e+115 is too large"),
    "chained powers": ({"model": eight_schools(define={"x": "(tau ** 10) ** 10"})}, "model.define.x",
                       "chained powers raise to the power 100"),
    "integer to a negative power": ({"model": eight_schools(define={"x": "sigma ** -1"})}, "model.define.x",
                                    "JAX refuses integers to negative powers"),
}


def queued(redis: Redis) -> tuple[int, ...]:
    """What a submission would add: job records, the tenant's jobs and queue, dispatched tasks."""
    return (sum(1 for _ in redis.scan_iter(match=keys.job("*"))), redis.zcard(keys.tenant_jobs(TENANT)),
            redis.llen(keys.tenant_queue(TENANT)), redis.xlen(keys.TASKS) if redis.exists(keys.TASKS) else 0)


@pytest.fixture(scope="module")
def worker_pids(stack: Stack) -> dict[str, int]:
    """The workers' process ids before any attack."""
    return {name: proc.pid for name, proc in stack.processes().items() if name.startswith("worker") and proc}


def post(client: Client, route: str, body: dict[str, Any]) -> Any:
    # raw JSON text as an attacker sends it: json.dumps writes the lone surrogate as the escape \ud800
    return client.http.post(route, content=json.dumps(body), headers={"content-type": "application/json"})


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_spec_is_a_422_naming_the_field_and_nothing_is_queued(alice: Client, redis: Redis,
                                                                       worker_pids: dict[str, int], kind: str) -> None:
    body, path, fragment = HOSTILE[kind]
    before = queued(redis)
    routes = ["/v1/jobs"] + (["/v1/models/validate"] if set(body) <= {"model", "sampler"} else [])
    for route in routes:
        response = post(alice, route, body)
        assert response.status_code == 422, (route, response.text)
        error = response.json()
        assert set(error) == {"error"} and error["error"]["code"] == "invalid_spec"
        found = [(d["path"], d["message"]) for d in error["error"]["details"]]
        assert any(p == path and fragment in m for p, m in found), (route, found)
    assert queued(redis) == before


def test_workers_survive_and_the_power_that_crashed_jax_now_runs(alice: Client, stack: Stack,
                                                                   worker_pids: dict[str, int]) -> None:
    """After every attack the same two workers serve an ordinary job; `tau ** 2 ** -1` (an integer power JAX
    refused with a traceback) is folded to `tau ** 0.5` at validation."""
    model = eight_schools(define={"root": "tau ** 2 ** -1"})
    job = alice.submit({"model": model, "sampler": {"chains": 2, "warmup": 100, "draws": 100, "seed": 5}})
    done = finished(alice, job["id"])
    assert done["state"] == "succeeded", done["error"]
    draws = alice.draws(job["id"], ["tau", "root"])["draws"]
    assert np.allclose(np.asarray(draws["root"]), np.sqrt(np.asarray(draws["tau"])), rtol=1e-12, atol=0)
    alive = {name: proc.pid for name, proc in stack.processes().items()
             if name.startswith("worker") and proc and proc.poll() is None}
    assert len(worker_pids) == 2 and alive == worker_pids
