"""Until converged, extend and warm start through the real stack (Redis, uvicorn, worker processes).

Every result is compared bit for bit with the engine run locally: the service's rounds run on whichever worker
takes them, continuing from the chain states stored with the job.
"""

from __future__ import annotations

import copy
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis import Redis

from cli.stack import Stack
from service.client import ApiError, Client
from service.language.loader import load_file
from service.sampler import parse_job
from tests.conftest import EXAMPLES
from tests.service.conftest import TOKENS, finished, make_stack, wait_for
from tests.service.test_api import open_netcdf

pytestmark = [pytest.mark.usefixtures("jax_ready"), pytest.mark.slow]

NORMAL = {"spec": 1, "data": {"y": [0.3, -1.2, 0.8, 1.9, 0.1]}, "params": {"mu": "Normal(0, 10)"},
          "observe": {"y": "Normal(mu, 1)"}}
UNTIL = {"chains": 2, "warmup": 100, "draws": 100, "seed": 3,
         "until": {"ess_bulk": 500, "ess_tail": 300, "check_every": 100, "max_draws": 2000}}


def local(job: dict[str, Any], **warm: Any) -> Any:
    from workers.engine import Engine

    model, settings = parse_job(job)
    return Engine().run(model, settings, **warm)


def posterior(client: Client, job_id: str) -> dict[str, np.ndarray]:
    with open_netcdf(client.netcdf(job_id)) as idata:
        return {k: idata.posterior[k].values for k in idata.posterior.data_vars}


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory, compile_cache: Path) -> Iterator[Stack]:
    s = make_stack(tmp_path_factory.mktemp("one"), compile_cache, workers=1)
    s.start()
    yield s
    s.stop()


def test_until_decides_as_the_engine_does_on_one_or_two_workers_and_across_a_kill(
        stack: Stack, alice: Client, one_worker: Stack) -> None:
    job = {"model": NORMAL, "sampler": UNTIL}
    want = local(job)
    assert len(want.rounds) >= 2
    done = finished(alice, alice.submit(job)["id"])
    assert done["state"] == "succeeded", done["error"]
    sampling = done["sampling"]
    assert [r["draws"] for r in sampling["rounds"]] == [r.draws for r in want.rounds]
    assert [r["reason"] for r in sampling["rounds"]] == [r.reason for r in want.rounds]
    assert sampling["stopped"] == want.stopped and sampling["draws_per_chain"] == want.rounds[-1].draws
    assert sampling["gradients"]["total"] > sampling["gradients"]["warmup"] > 0
    same(posterior(alice, done["id"]), want.draws)
    summary = alice.summary(done["id"])
    assert summary["sampling"]["stopped"].startswith("converged at")
    # the live metrics show the targets beside the figures
    from service.live import exported
    from service.metrics import ClusterCollector

    figures = [f for f in exported(Redis.from_url(stack.redis_url)) if f["job"] == done["id"]]
    series = {m.name: m.samples[0].value for m in ClusterCollector._per_job(figures) if m.samples}
    assert series["chainyard_job_rhat_target"] == 1.01 and series["chainyard_job_ess_bulk_target"] == 500
    assert series["chainyard_job_draws_target"] == want.rounds[-1].draws
    assert summary["totals"]["draws_per_chain"] == want.rounds[-1].draws
    # on one worker, SIGKILLed after some rounds and restarted: the same decisions and draws
    many = {"model": NORMAL, "sampler": {**UNTIL, "until": {"ess_bulk": 2500, "ess_tail": 1500, "check_every": 50,
                                                           "max_draws": 4000}}}
    want = local(many)
    assert len(want.rounds) > 8
    with Client(one_worker.url, TOKENS["alice"]) as client:
        job_id = client.submit(many)["id"]
        wait_for(client, job_id, lambda j: len(j["sampling"]["rounds"]) >= 3 or j["state"] != "running", 120)
        killed_after = len(client.get(job_id)["sampling"]["rounds"])
        one_worker.worker_procs["worker-0"].send_signal(signal.SIGKILL)
        one_worker.worker_procs["worker-0"].wait(10)
        one_worker.restart("worker-0")
        done = finished(client, job_id)
        assert done["state"] == "succeeded", done["error"]
        assert killed_after < len(want.rounds), "the kill came after the last round"
        assert [r["draws"] for r in done["sampling"]["rounds"]] == [r.draws for r in want.rounds]
        assert done["sampling"]["stopped"] == want.stopped
        same(posterior(client, job_id), want.draws)


def test_a_hard_model_runs_to_max_draws_and_the_job_says_why(alice: Client) -> None:
    spec = copy.deepcopy(load_file(EXAMPLES / "eight_schools.yaml"))
    spec["params"]["theta"] = {"dist": "Normal(mu, tau)", "dims": ["school"]}  # centered
    job = {"model": spec, "sampler": {"chains": 2, "warmup": 30, "draws": 100, "seed": 1,
                                      "until": {"check_every": 100, "max_draws": 300}}}
    done = finished(alice, alice.submit(job)["id"])
    assert done["state"] == "succeeded"
    assert [r["reason"] for r in done["sampling"]["rounds"]] == ["continue", "continue", "max_draws"]
    assert done["sampling"]["stopped"].startswith("max_draws reached (300 draws per chain)")
    assert done["sampling"]["stopped"] == local(job).stopped


def test_extend_equals_the_longer_job_from_the_start(alice: Client) -> None:
    short = {"model": NORMAL, "sampler": {"chains": 2, "warmup": 100, "draws": 150, "thin": 2, "seed": 8}}
    job_id = finished(alice, alice.submit(short)["id"])["id"]
    before = alice.summary(job_id)
    with pytest.raises(ApiError) as caught:
        alice.extend(job_id, 0)
    assert caught.value.status == 422 and caught.value.details[0]["path"] == "draws"
    running = alice.extend(job_id, 250)
    assert running["id"] == job_id and running["state"] in ("running", "succeeded")
    if alice.get(job_id)["state"] == "running":  # while it runs again there is no summary
        with pytest.raises(ApiError) as caught:
            alice.summary(job_id)
        assert caught.value.status == 409
    done = finished(alice, job_id)
    assert done["state"] == "succeeded" and done["sampling"]["draws_per_chain"] == 400
    assert [(e["draws"], e["from"], e["to"]) for e in done["sampling"]["extensions"]] == [(250, 150, 400)]
    longer = {"model": NORMAL, "sampler": {**short["sampler"], "draws": 400}}
    same(posterior(alice, job_id), local(longer).draws)
    after = alice.summary(job_id)
    assert after["totals"]["draws_per_chain"] == 200 and before["totals"]["draws_per_chain"] == 75
    # the same request again is the same (extended) job
    assert alice.submit(short)["id"] == job_id


def test_extend_refuses_jobs_that_have_not_succeeded(alice: Client, bob: Client) -> None:
    slow = {"model": NORMAL, "sampler": {"chains": 1, "warmup": 100, "draws": 100000, "seed": 2}}
    job_id = alice.submit(slow)["id"]
    with pytest.raises(ApiError) as caught:
        alice.extend(job_id, 10)
    assert caught.value.status == 409 and "only a succeeded job" in caught.value.message
    with pytest.raises(ApiError) as caught:
        bob.extend(job_id, 10)
    assert caught.value.status == 404
    alice.delete(job_id)


def test_warm_start_starts_from_the_earlier_job_and_needs_fewer_warmup_gradients(alice: Client,
                                                                                  bob: Client) -> None:
    from workers.state import WarmStart

    spec = load_file(EXAMPLES / "eight_schools.yaml")
    cold_doc = {"model": spec, "sampler": {"chains": 2, "warmup": 500, "draws": 200, "seed": 4}}
    cold = finished(alice, alice.submit(cold_doc)["id"])
    new_data = copy.deepcopy(spec)
    new_data["data"]["y"] = [v + 3 for v in spec["data"]["y"]]  # same shapes and dtypes, new values
    warm_doc = {"model": new_data, "sampler": {"chains": 2, "warmup": 60, "draws": 200, "seed": 4,
                                              "warm_start": {"job": cold["id"]}}}
    warm = finished(alice, alice.submit(warm_doc)["id"])
    assert warm["state"] == "succeeded", warm["error"]
    assert warm["sampling"]["warm_start"] == cold["id"]
    assert warm["sampling"]["gradients"]["warmup"] < 0.5 * cold["sampling"]["gradients"]["warmup"]
    # the same draws as the engine started from the cold job's final states (locally computed)
    states = local(cold_doc).states
    same(posterior(alice, warm["id"]), local(warm_doc, warm=[WarmStart.of(s) for s in states]).draws)
    # another tenant's job, another structure, another dense_mass: 422 naming the field
    for who, doc, path in (
        (bob, warm_doc, "sampler.warm_start.job"),
        (alice, {"model": NORMAL, "sampler": {"warm_start": {"job": cold["id"]}}}, "sampler.warm_start.job"),
        (alice, {"model": spec, "sampler": {"dense_mass": True, "warm_start": {"job": cold["id"]}}},
         "sampler.dense_mass"),
    ):
        with pytest.raises(ApiError) as caught:
            who.submit(doc)
        assert caught.value.status == 422
        assert [d["path"] for d in caught.value.details] == [path], caught.value


def test_the_cli_extends_and_warm_starts(stack: Stack, alice: Client, tmp_path: Path, compile_cache: Path) -> None:
    import json
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    env = subprocess_env(compile_cache, CHAINYARD_URL=stack.url, CHAINYARD_TOKEN=TOKENS["alice"])

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    doc = tmp_path / "job.json"
    doc.write_text(json.dumps({"model": NORMAL, "sampler": {"chains": 2, "warmup": 100, "draws": 100, "seed": 12}}))
    job_id = cli("submit", str(doc), "--wait").split()[0]
    out = cli("extend", job_id, "--draws", "50", "--wait")
    assert out.startswith(f"{job_id} running: 150 draws per chain")
    assert "extended by 50 draws per chain (100 -> 150)" in " ".join(out.split())
    warm_id = cli("submit", str(doc), "--warm-start", job_id).strip()
    done = finished(alice, warm_id)
    assert done["state"] == "succeeded" and done["sampler"]["warm_start"] == {"job": job_id}
