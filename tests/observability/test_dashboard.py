"""The Grafana dashboard: in sync with its generator, valid against Grafana's own dashboard schema
(@grafana/schema's types as JSON Schema, tools/grafana-schema), and showing what the issue asks for.
Its queries run against a real Prometheus in test_prometheus.py."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.observability.tooling import DASHBOARD, builder, grafana


@pytest.fixture
def doc() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_file_is_the_generators_output() -> None:
    assert DASHBOARD.read_text() == builder.render(), "run: python tools/dashboard.py"


def test_dashboard_validates_against_grafanas_schema(doc: dict[str, Any]) -> None:
    assert grafana.validate_dashboard(doc) == []


@pytest.mark.parametrize("breakage", ["gridPos width as text", "panel without type", "bad variable type",
                                      "bad thresholds mode"])
def test_the_schema_check_catches_a_broken_dashboard(doc: dict[str, Any], breakage: str) -> None:
    broken = copy.deepcopy(doc)
    panel = broken["panels"][1]
    if breakage == "gridPos width as text":
        panel["gridPos"]["w"] = "12"
    elif breakage == "panel without type":
        del panel["type"]
    elif breakage == "bad variable type":
        broken["templating"]["list"][1]["type"] = "jobpicker"
    else:
        panel["fieldConfig"]["defaults"]["thresholds"]["mode"] = "relative-ish"
    assert grafana.validate_dashboard(broken) != []


def test_panels_cover_convergence_throughput_queue_latency_workers_and_priors(doc: dict[str, Any]) -> None:
    exprs = " ".join(expr for _, expr in builder.queries(doc))
    for metric in ("chainyard_job_rhat_max", "chainyard_job_ess_bulk_min", "chainyard_job_ess_tail_min",
                   "chainyard_job_divergences", "chainyard_chain_iterations_total", "chainyard_queue_depth",
                   "chainyard_job_duration_seconds_bucket", "chainyard_worker_busy", "chainyard_prior_refit_total",
                   "chainyard_prior_version", "chainyard_gradient_evaluations_total", "chainyard_jobs",
                   "chainyard_http_requests_total"):
        assert metric in exprs, metric
    assert "histogram_quantile(0.99" in exprs


def test_threshold_lines_at_rhat_1_01_and_ess_400(doc: dict[str, Any]) -> None:
    by_title = {p["title"]: p for p in doc["panels"]}

    def lines(title: str) -> list[float]:
        defaults = by_title[title]["fieldConfig"]["defaults"]
        assert defaults["custom"]["thresholdsStyle"]["mode"] in ("line", "dashed")
        return [s["value"] for s in defaults["thresholds"]["steps"] if s["value"] is not None]

    assert lines("R-hat (max over parameters)") == [1.01]
    assert lines("Bulk ESS (min over parameters)") == [400]
    assert lines("Tail ESS (min over parameters)") == [400]


def test_job_variable_drills_into_the_per_job_panels(doc: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["job"]["type"] == "query" and variables["job"]["multi"] and variables["job"]["includeAll"]
    assert "label_values(chainyard_job_progress, job)" in variables["job"]["query"]["query"]
    per_job = [expr for _, expr in builder.queries(doc) if "chainyard_job_" in expr and "duration" not in expr]
    assert per_job and all('job=~"$job"' in expr for expr in per_job)
    assert all(p.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}
               for p in doc["panels"] if p["type"] != "row")


def test_panels_tile_the_grid_without_overlap(doc: dict[str, Any]) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, panel["title"]
        taken |= cells
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
