"""Schedules end to end on a real local stack (Redis, `chainyard api` with its scheduler thread, a worker): the
REST routes and their errors, the CLI verbs, and a `* * * * *` schedule that refits and publishes within a
minute and stops when deleted. Real time: about two minutes."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.app import create_app
from cli.stack import Stack
from service.client import ApiError, Client
from tests.service.conftest import TOKENS, make_stack

pytestmark = pytest.mark.slow

MODEL = {"spec": 1, "data": {"sigma": 1.0}, "params": {"mu": "Normal(0, 5)"}, "observe": {"y": "Normal(mu, sigma)"}}
PRIOR = {"model": MODEL, "data_from": {"dataset": "obs"}, "sampler": {"chains": 2, "warmup": 200, "draws": 400},
         "export": {"params": ["mu"]}, "gate": {"max_rhat": 1.05, "min_ess_bulk": 100, "min_ess_tail": 100}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, compile_cache: Path) -> Iterator[Stack]:
    """One worker: a refit is two short chains."""
    s = make_stack(tmp_path_factory.mktemp("schedules"), compile_cache, workers=1)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module", autouse=True)
def dataset(stack: Stack) -> None:
    with Client(stack.url, TOKENS["alice"]) as alice:
        alice.put_dataset("obs", {"y": "float"})


def details(call: Any, status: int = 422) -> dict[str, str]:
    with pytest.raises(ApiError) as info:
        call()
    assert info.value.status == status, info.value
    return {d["path"]: d["message"] for d in info.value.details}


def test_routes_refuse_bad_schedules_with_the_field(alice: Client, bob: Client) -> None:
    alice.put_prior("checked", PRIOR)
    found = details(lambda: alice.schedule_prior("checked", "0 0 * * * *", "Europe/Berlin"))
    assert list(found) == ["cron"] and "seconds" in found["cron"]
    found = details(lambda: alice.schedule_prior("checked", "@reboot", "Mars/Olympus"))
    assert set(found) == {"cron", "timezone"}
    found = details(lambda: alice._call("PUT", "/v1/priors/checked/schedule",
                                        json={"cron": "@daily", "timezone": "UTC", "suspend": "yes"}))
    assert list(found) == ["suspend"]
    details(lambda: alice.schedule_prior("absent", "@daily"), 404)
    details(lambda: bob.schedule_prior("checked", "@daily"), 404)  # alice's prior
    details(lambda: alice.prior_schedule("checked"), 404)
    details(lambda: alice.unschedule_prior("checked"), 404)
    created = alice._call("PUT", "/v1/priors/checked/schedule", json={"cron": "30 2 * * *",
                                                                       "timezone": "Europe/Berlin"})
    assert created.status_code == 201
    body = created.json()
    assert body["next_run"].endswith(("+01:00", "+02:00")) and body["backend"] == "local" and body["in_sync"]
    assert body["next_run_unix"] > time.time() and body["last_run"] is None
    replaced = alice._call("PUT", "/v1/priors/checked/schedule", json={"cron": "@daily", "timezone": "UTC",
                                                                        "suspend": True})
    assert replaced.status_code == 200 and replaced.json()["next_run"] is None
    alice.delete_prior("checked")  # takes its schedule with it
    details(lambda: alice.prior_schedule("checked"), 404)


def test_cli_schedule_show_unschedule(stack: Stack, alice: Client) -> None:
    alice.put_prior("viacli", PRIOR)
    cli = CliRunner()
    auth = ["--url", stack.url, "--token", TOKENS["alice"]]
    done = cli.invoke(create_app(), ["prior", "schedule", "viacli", "--cron", "0 6 * * MON",
                                     "--timezone", "America/New_York", *auth])
    assert done.exit_code == 0, done.output
    assert "0 6 * * MON (America/New_York), next run 20" in done.output and "run by local" in done.output
    done = cli.invoke(create_app(), ["prior", "show", "viacli", *auth])
    assert done.exit_code == 0, done.output
    shown = json.loads(done.output)
    assert shown["schedule"]["cron"] == "0 6 * * MON" and shown["schedule"]["next_run"].endswith(("-04:00", "-05:00"))
    done = cli.invoke(create_app(), ["prior", "schedule", "viacli", "--cron", "@reboot", *auth])
    assert done.exit_code == 2 and "cron: @reboot is not supported" in done.output
    done = cli.invoke(create_app(), ["prior", "unschedule", "viacli", *auth])
    assert done.exit_code == 0, done.output
    done = cli.invoke(create_app(), ["prior", "show", "viacli", *auth])
    assert done.exit_code == 0 and json.loads(done.output)["schedule"] is None
    alice.delete_prior("viacli")


def test_every_minute_refits_and_publishes_then_delete_stops_it(alice: Client) -> None:
    alice.append_rows("obs", columns={"y": [0.3, 1.1, -0.4, 0.9, 0.2, 1.4, 0.0, 0.7]})
    alice.put_prior("minutely", PRIOR)
    assert alice.prior("minutely")["latest"] is None
    put_at = time.time()
    schedule = alice.schedule_prior("minutely", "* * * * *", "UTC")
    assert schedule["next_run_unix"] == (math.floor(put_at / 60) + 1) * 60
    assert schedule["next_run"].endswith("+00:00")

    deadline = put_at + 150  # the next minute (<= 60 s), then a short refit
    state = alice.prior_schedule("minutely")
    while time.time() < deadline:
        state = alice.prior_schedule("minutely")
        if (state["last_run"] or {}).get("refit"):
            break
        time.sleep(1)
    last = state["last_run"]
    assert last is not None and last["job"], state
    assert last["outcome"] in ("submitted", "unchanged")  # unchanged: a later minute found the same job
    assert (last["scheduled"] - schedule["next_run_unix"]) % 60 == 0 and 0 <= last["at"] - last["scheduled"] < 5
    job = alice.get(last["job"])  # submitted by the first run, in the minute after the PUT
    assert job["refit"]["prior"] == "minutely" and 0 <= job["created_at"] - schedule["next_run_unix"] < 5
    assert last["refit"]["outcome"] == "succeeded", last
    head = alice.prior("minutely")
    assert head["latest"] == 1
    assert alice.prior_version("minutely")["provenance"]["job"] == last["job"]

    alice.unschedule_prior("minutely")
    details(lambda: alice.prior_schedule("minutely"), 404)
    alice.append_rows("obs", columns={"y": [0.5, 0.6]})  # a run now would be a new refit job
    stopped_at = time.time()
    time.sleep((math.floor(stopped_at / 60) + 1) * 60 + 6 - stopped_at)  # past the next minute
    refits = alice.list(label="chainyard.prior=minutely")
    assert refits["total"] == 1 and refits["jobs"][0]["id"] == last["job"]
    assert alice.prior("minutely")["latest"] == 1
