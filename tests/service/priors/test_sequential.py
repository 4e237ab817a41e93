"""Sequential updating on a real stack: cohorts of new groups from a known population, refitted as they arrive.

Population: theta_g ~ Normal(MU, TAU); observations y ~ Normal(theta_g, 1), ten per group. Each cohort brings
15 new groups (new rows form new groups: the case in which exporting the population parameters is an exact
sequential update, docs/priors.md). Then a sparse cohort (3 groups, 2 rows each) is fitted with the published
prior and without it, and both are compared with the fit on all data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.client import Client
from tests.service.conftest import finished

pytestmark = pytest.mark.slow

MU, TAU = 2.0, 0.7
RNG = np.random.default_rng(7)
MODEL = {"spec": 1, "data": {"sigma": 1.0},
         "params": {"mu": "Normal(0, 5)", "tau": "HalfNormal(2)",
                    "theta": {"dist": "Normal(mu, tau)", "dims": ["group"], "reparam": "noncentered"}},
         "observe": {"y": "Normal(theta[group], sigma)"}}
SAMPLER = {"chains": 4, "warmup": 500, "draws": 1000, "seed": 1}


def cohort(start: int, groups: int, rows: int) -> list[dict[str, Any]]:
    out = []
    for g in range(start, start + groups):
        theta = RNG.normal(MU, TAU)
        out += [{"group": f"g{g:03d}", "y": round(float(RNG.normal(theta, 1.0)), 6)} for _ in range(rows)]
    return out


COHORTS = [cohort(0, 15, 10), cohort(15, 15, 10), cohort(30, 15, 10)]
SPARSE = cohort(45, 3, 2)


def as_data(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Data and coords as the prior's data_from builds them (string column -> codes and a coordinate)."""
    labels = list(dict.fromkeys(r["group"] for r in rows))
    return ({"sigma": 1.0, "y": [r["y"] for r in rows], "group": [labels.index(r["group"]) for r in rows]},
            {"group": labels})


def fit(client: Client, rows: list[dict[str, Any]], **extra: Any) -> dict[str, dict[str, Any]]:
    data, coords = as_data(rows)
    job = client.submit({"model": {**MODEL, "data": data, "coords": coords, **extra}, "sampler": SAMPLER})
    assert finished(client, job["id"], timeout=600)["state"] == "succeeded"
    return {r["variable"]: r for r in client.summary(job["id"])["variables"]}


def test_refits_tighten_around_the_truth_and_the_prior_carries_the_old_data(alice: Client) -> None:
    alice.put_dataset("cohorts", {"group": "string", "y": "float"})
    alice.put_prior("population", {"model": MODEL, "data_from": {"dataset": "cohorts"}, "sampler": SAMPLER,
                                   "export": {"params": ["mu", "tau"]}})
    spreads = []
    for i, rows in enumerate(COHORTS, start=1):
        alice.append_rows("cohorts", rows=rows)
        job = alice.refit("population")
        assert finished(alice, job["id"], timeout=600)["state"] == "succeeded"
        head = alice.prior("population")
        assert head["latest"] == i, head["last_refit"]
        export = alice.prior_version("population")["export"]
        (comp,) = export["components"]
        loc, cov = np.asarray(comp["loc"]), np.asarray(comp["scale_tril"]) @ np.asarray(comp["scale_tril"]).T
        sd = np.sqrt(np.diag(cov))
        # covers the truth: [mu, log tau] within 3.3 posterior sds (a 99.9% interval)
        assert np.all(np.abs(loc - [MU, np.log(TAU)]) < 3.3 * sd), (loc, sd)
        spreads.append(sd)
    assert np.all(np.diff(np.asarray(spreads), axis=0) < 0), spreads  # each refit tightens mu and tau

    everything = fit(alice, [r for rows in COHORTS for r in rows] + SPARSE)
    with_prior = fit(alice, SPARSE, priors_from="population@latest")
    without = fit(alice, SPARSE)
    sparse_groups = [f"theta[g{g:03d}]" for g in range(45, 48)]
    for name in ["mu", "tau", *sparse_groups]:
        truth = everything[name]
        near = abs(with_prior[name]["mean"] - truth["mean"]) / truth["sd"]
        far = abs(without[name]["mean"] - truth["mean"]) / truth["sd"]
        assert near * 2 <= far, (name, near, far)
