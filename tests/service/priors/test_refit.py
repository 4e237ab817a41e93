"""Refits on a real stack (Redis, API, workers): publish, gate, provenance, use through priors_from, isolation.

The model is conjugate (normal observations with a known sd, a normal prior on the mean), so every figure has
an exact answer; tolerances are Monte Carlo standard errors, stated where they are used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from redis import Redis

from service import keys
from service.client import ApiError, Client
from tests.service.conftest import finished

pytestmark = pytest.mark.slow

SIGMA, M0, S0 = 2.0, 0.0, 10.0
RNG = np.random.default_rng(20261201)
D1 = RNG.normal(1.5, SIGMA, size=40).round(6).tolist()
D2 = RNG.normal(1.5, SIGMA, size=40).round(6).tolist()
MODEL = {"spec": 1, "data": {"sigma": SIGMA}, "params": {"mu": f"Normal({M0}, {S0})"},
         "observe": {"y": "Normal(mu, sigma)"}}
SAMPLER = {"chains": 4, "warmup": 200, "draws": 1000, "seed": 11}


def exact(y: list[float], m0: float = M0, s0: float = S0) -> tuple[float, float]:
    """Posterior mean and sd of mu given y (normal prior, normal likelihood with known sd)."""
    precision = 1 / s0**2 + len(y) / SIGMA**2
    return (m0 / s0**2 + sum(y) / SIGMA**2) / precision, precision**-0.5


def refit_and_wait(client: Client, prior: str) -> tuple[dict[str, Any], dict[str, Any]]:
    job = client.refit(prior)
    done = finished(client, job["id"])
    return done, client.prior(prior)


@pytest.fixture(scope="module")
def published(stack: Any) -> dict[str, Any]:
    """Dataset `obs` with D1, prior `normal` refitted once (version 1)."""
    with Client(stack.url, "tok-alice") as alice:
        alice.put_dataset("obs", {"y": "float"})
        alice.append_rows("obs", columns={"y": D1})
        alice.put_prior("normal", {"model": MODEL, "data_from": {"dataset": "obs"}, "sampler": SAMPLER,
                                   "export": {"params": ["mu"]}})
        job, head = refit_and_wait(alice, "normal")
        return {"job": job, "head": head}


def test_a_refit_publishes_a_version_with_its_provenance(alice: Client, published: dict[str, Any]) -> None:
    job, head = published["job"], published["head"]
    assert job["state"] == "succeeded" and job["refit"]["prior"] == "normal"
    assert head["latest"] == 1 and head["last_refit"]["outcome"] == "succeeded"
    version = alice.prior_version("normal")
    dataset = alice.dataset("obs")
    assert version["source"] == "refit"
    assert version["provenance"]["job"] == job["id"]
    assert (version["provenance"]["dataset_version"], version["provenance"]["rows"],
            version["provenance"]["dataset_hash"]) == (1, 40, dataset["hash"])
    assert version["diagnostics"]["max_rhat"] < 1.01 and version["diagnostics"]["divergences"] == 0
    summary = alice.summary(job["id"])
    row = next(r for r in summary["variables"] if r["variable"] == "mu")
    comp, = version["export"]["components"]
    # the exported normal is the fit's: its mean is the draws' mean (the summary's), its sd their sd
    assert comp["loc"][0] == pytest.approx(row["mean"], rel=1e-9)
    assert comp["scale_tril"][0][0] == pytest.approx(row["sd"], rel=1e-3)  # ddof 0 or 1 of 4000 draws
    mean, _ = exact(D1)
    assert abs(comp["loc"][0] - mean) < 4 * row["mcse_mean"]


def test_a_job_with_priors_from_matches_the_exact_all_data_posterior(alice: Client,
                                                                     published: dict[str, Any]) -> None:
    job = alice.submit({"model": {**MODEL, "data": {"sigma": SIGMA, "y": D2}, "priors_from": "normal@latest"},
                        "sampler": SAMPLER})
    assert job["priors"] == [{"prior": "normal", "version": 1, "params": {"mu": "mu"}, "method": "mvn",
                              "ref": "normal@1"}]
    assert finished(alice, job["id"])["state"] == "succeeded"
    summary = alice.summary(job["id"])
    assert summary["priors"][0]["ref"] == "normal@1"
    row = next(r for r in summary["variables"] if r["variable"] == "mu")
    mean, sd = exact(D1 + D2)
    # two Monte Carlo errors add up: this fit's (mcse_mean) and the exported prior's mean (the refit's
    # mcse, weighted by the share of the posterior precision that the prior carries: one half here)
    refit_row = next(r for r in alice.summary(published["job"]["id"])["variables"] if r["variable"] == "mu")
    share = (1 / exact(D1)[1] ** 2) / (1 / sd**2)
    tolerance = 4 * float(np.hypot(row["mcse_mean"], share * refit_row["mcse_mean"]))
    assert abs(row["mean"] - mean) < tolerance
    assert row["sd"] == pytest.approx(sd, rel=0.05)  # an sd from ESS ~3000: relative error ~1/sqrt(2 ESS), 1.3%


def test_refitting_unchanged_data_is_the_same_job_and_new_rows_a_new_version(alice: Client,
                                                                             published: dict[str, Any],
                                                                             redis: Redis) -> None:
    again = alice.refit("normal")
    assert again["id"] == published["job"]["id"]
    alice.append_rows("obs", rows=[{"y": y} for y in D2])
    job, head = refit_and_wait(alice, "normal")
    assert head["latest"] == 2 and job["id"] != published["job"]["id"], (head["last_refit"]["reasons"], job["error"])
    # it warm-started from version 1's job, with the short warmup, and spent fewer warmup gradients
    assert job["sampler"]["warm_start"] == {"job": published["job"]["id"]} and job["sampler"]["warmup"] == 150
    assert job["sampling"]["gradients"]["warmup"] < published["job"]["sampling"]["gradients"]["warmup"]
    assert alice.refit("normal")["id"] == job["id"]  # and refitting that dataset version again is the same job
    first, second = (alice.prior_version("normal", n) for n in (1, 2))
    assert second["provenance"]["dataset_version"] == 2 and second["provenance"]["rows"] == 80
    # more data: the prior tightens, towards the exact all-data posterior
    assert second["export"]["components"][0]["scale_tril"][0][0] < first["export"]["components"][0]["scale_tril"][0][0]
    assert abs(second["export"]["components"][0]["scale_tril"][0][0] - exact(D1 + D2)[1]) < 0.05 * exact(D1 + D2)[1]
    # version 1 is immutable: a job pinned to it still resolves to the same numbers
    assert alice.prior_version("normal", 1) == first
    assert int(redis.hget(keys.PRIOR_VERSIONS, "alice/normal")) == 2
    assert int(redis.hget(keys.PRIOR_REFITS, "alice/normal|succeeded")) == 2


def test_a_refit_that_fails_the_gate_leaves_latest_and_is_recorded(alice: Client, published: dict[str, Any],
                                                                   redis: Redis) -> None:
    alice.put_prior("short", {"model": MODEL, "data_from": {"dataset": "obs"},
                              "sampler": {"chains": 2, "warmup": 20, "draws": 60, "seed": 3},
                              "export": {"params": ["mu"]}})
    job, head = refit_and_wait(alice, "short")
    assert job["state"] == "succeeded"  # the job ran; its fit is not good enough to publish
    assert head["latest"] is None and head["versions"] == 0
    entry = head["last_refit"]
    assert entry["outcome"] == "failed" and entry["job"] == job["id"]
    assert any("bulk ESS" in r for r in entry["reasons"])
    assert entry["diagnostics"]["min_ess_bulk"] < 400
    assert int(redis.hget(keys.PRIOR_REFITS, "alice/short|failed")) == 1
    assert redis.hget(keys.PRIOR_LAST_OUTCOME, "alice/short") == b"failed"
    with pytest.raises(ApiError) as caught:
        alice.submit({"model": {**MODEL, "data": {"sigma": SIGMA, "y": D2}, "priors_from": "short@latest"}})
    assert caught.value.status == 422 and caught.value.details[0]["path"] == "model.priors_from"


@pytest.mark.parametrize(("priors_from", "params", "path", "message"), [
    ("normal@7", {"mu": "Normal(0, 1)"}, "model.priors_from", "no version 7"),
    ("nothing@latest", {"mu": "Normal(0, 1)"}, "model.priors_from", "not found"),
    ("normal@latest", {"mu": "HalfNormal(1)"}, "model.priors_from", "support"),
    ("normal@latest", {"mu": {"dist": "Normal(0, 1)", "shape": [2]}}, "model.priors_from", "shape"),
    ({"prior": "normal@1", "params": {"tau": "mu"}}, {"mu": "Normal(0, 1)"}, "model.priors_from.params.tau",
     "exports mu"),
    ({"prior": "normal@1", "params": {"mu": "nu"}}, {"mu": "Normal(0, 1)"}, "model.priors_from.params.mu",
     "not a param"),
    ("normal", {"mu": "Normal(0, 1)"}, "model.priors_from", "name@latest"),
])
def test_bad_priors_from_is_a_422_naming_the_field(alice: Client, published: dict[str, Any], priors_from: Any,
                                                   params: dict[str, Any], path: str, message: str) -> None:
    observe = {"y": "Normal(mu, sigma)"} if "shape" not in str(params) else {"y": "Normal(sum(mu), sigma)"}
    model = {"spec": 1, "data": {"sigma": SIGMA, "y": D2}, "params": params, "observe": observe,
             "priors_from": priors_from}
    with pytest.raises(ApiError) as caught:
        alice.submit({"model": model})
    assert caught.value.status == 422
    assert any(d["path"] == path and message in d["message"] for d in caught.value.details), caught.value.details


def test_another_tenants_priors_are_not_found(bob: Client, published: dict[str, Any]) -> None:
    for call in (lambda: bob.prior("normal"), lambda: bob.refit("normal"), lambda: bob.prior_versions("normal"),
                 lambda: bob.prior_version("normal", 1), lambda: bob.delete_prior("normal")):
        with pytest.raises(ApiError) as caught:
            call()
        assert caught.value.status == 404
    with pytest.raises(ApiError) as caught:
        bob.submit({"model": {**MODEL, "data": {"sigma": SIGMA, "y": D2}, "priors_from": "normal@1"}})
    assert caught.value.status == 422 and "not found" in caught.value.details[0]["message"]
    assert bob.priors() == []


def test_a_pinned_job_is_reproducible_after_latest_moves(alice: Client, published: dict[str, Any]) -> None:
    body = {"model": {**MODEL, "data": {"sigma": SIGMA, "y": D2[:5]}, "priors_from": "normal@1"},
            "sampler": {"chains": 1, "warmup": 100, "draws": 100, "seed": 5}}
    first = alice.submit(body)
    assert alice.submit(body)["id"] == first["id"]  # content-addressed: version 1 pinned
    assert finished(alice, first["id"])["state"] == "succeeded"
    latest = {**body, "model": {**body["model"], "priors_from": "normal@latest"}}
    moved = alice.submit(latest)
    assert moved["priors"][0]["version"] == alice.prior("normal")["latest"]


def test_an_elicited_prior_is_saved_and_used(alice: Client) -> None:
    saved = alice.save_elicited("expert", {"p": {"family": "Beta", "quantiles": {"0.05": 0.5, "0.5": 0.7,
                                                                                  "0.95": 0.85}}})
    assert saved["version"] == 1 and saved["source"] == "elicited"
    (component,), = saved["export"]["marginals"]
    a, b = component["args"]["concentration1"], component["args"]["concentration0"]
    model = {"spec": 1, "params": {"theta": "Beta(1, 1)"}, "data": {"n": 10, "k": 7},
             "observe": {"k": "Binomial(n, theta)"}, "priors_from": {"prior": "expert@1", "params": {"p": "theta"}}}
    job = alice.submit({"model": model, "sampler": {"chains": 4, "warmup": 300, "draws": 1000, "seed": 2}})
    assert finished(alice, job["id"])["state"] == "succeeded"
    row = next(r for r in alice.summary(job["id"])["variables"] if r["variable"] == "theta")
    exact_mean = (a + 7) / (a + b + 10)  # Beta-Binomial conjugacy
    assert abs(row["mean"] - exact_mean) < 4 * row["mcse_mean"]
