"""Build the Grafana dashboard shipped in the chart: `python tools/dashboard.py` rewrites
helm/chainyard/dashboards/chainyard.json (a test checks the file equals this script's output).

Written as code so that panel geometry, datasource references and queries stay consistent; every query
is run against a real Prometheus by tests/observability/test_prometheus.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "helm" / "chainyard" / "dashboards" / "chainyard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
JOB = 'job=~"$job"'
RATE = "$__rate_interval"


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "editorMode": "code", "expr": expr, "legendFormat": legend, "range": True,
            "refId": ref}


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for color, value in steps]}


def timeseries(title: str, description: str, targets: list[tuple[str, str]], *, unit: str = "short",
               steps: tuple[tuple[str, float | None], ...] = (("green", None),), line: bool = False,
               stack: bool = False, minimum: float | None = None) -> dict[str, Any]:
    """A time series panel; `line` draws the thresholds as dashed lines (R-hat 1.01, ESS 400)."""
    custom: dict[str, Any] = {
        "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if stack else 0, "showPoints": "never",
        "spanNulls": False, "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": "dashed" if line else "off"},
    }
    defaults: dict[str, Any] = {"color": {"mode": "palette-classic"}, "custom": custom, "mappings": [],
                                "thresholds": thresholds(*steps), "unit": unit}
    if minimum is not None:
        defaults["min"] = minimum
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
    }


def stat(title: str, description: str, expr: str, *, unit: str = "short",
         steps: tuple[tuple[str, float | None], ...] = (("green", None),)) -> dict[str, Any]:
    return {
        "type": "stat", "title": title, "description": description, "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"color": {"mode": "thresholds"}, "mappings": [], "thresholds": thresholds(*steps),
                                     "unit": unit}, "overrides": []},
        "options": {"colorMode": "background", "graphMode": "area", "justifyMode": "auto", "textMode": "auto",
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        "targets": [target(expr, "", "A")],
    }


def bargauge(title: str, description: str, expr: str, legend: str) -> dict[str, Any]:
    return {
        "type": "bargauge", "title": title, "description": description, "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"color": {"mode": "thresholds"}, "mappings": [], "min": 0, "max": 1,
                                     "thresholds": thresholds(("blue", None), ("green", 1)), "unit": "percentunit"},
                        "overrides": []},
        "options": {"displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True,
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        "targets": [target(expr, legend, "A")],
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def layout() -> list[tuple[dict[str, Any], int, int]]:
    """(panel, width, height) in reading order; rows span the full width."""
    per_job = "{{job}} {{model}}"
    return [
        (row("Convergence of running jobs (select jobs above)"), 24, 1),
        (timeseries("R-hat (max over parameters)",
                    "Rank-normalized split R-hat of the draws so far (ArviZ), largest over all parameters. "
                    "Above 1.01 (dashed) the chains have not mixed.",
                    [(f"max by (job, model) (chainyard_job_rhat_max{{{JOB}}})", per_job)],
                    steps=(("green", None), ("red", 1.01)), line=True), 12, 9),
        (timeseries("Bulk ESS (min over parameters)",
                    "Smallest bulk effective sample size of the draws so far. Below 400 (dashed) means and "
                    "quantiles are imprecise.",
                    [(f"min by (job, model) (chainyard_job_ess_bulk_min{{{JOB}}})", per_job)],
                    steps=(("red", None), ("green", 400)), line=True, minimum=0), 12, 9),
        (timeseries("Tail ESS (min over parameters)",
                    "Smallest tail effective sample size (5% and 95% quantiles). Below 400 (dashed) intervals are "
                    "imprecise.",
                    [(f"min by (job, model) (chainyard_job_ess_tail_min{{{JOB}}})", per_job)],
                    steps=(("red", None), ("green", 400)), line=True, minimum=0), 12, 8),
        (timeseries("Divergent transitions",
                    "Divergences after warmup, all chains so far. Any divergence means the sampler missed part of the "
                    "posterior: reparameterize or raise target_accept.",
                    [(f"max by (job, model) (chainyard_job_divergences{{{JOB}}})", per_job)],
                    steps=(("green", None), ("red", 1)), minimum=0), 12, 8),
        (bargauge("Progress", "Fraction of each job's iterations (warmup and sampling, all chains) done.",
                  f"max by (job, model) (chainyard_job_progress{{{JOB}}})", per_job), 24, 6),
        (row("Throughput and queue"), 24, 1),
        (timeseries("Chain throughput",
                    "NUTS iterations per second over all workers, by phase, and gradient evaluations per second "
                    "(right: the cost per iteration is their ratio).",
                    [(f"sum by (phase) (rate(chainyard_chain_iterations_total[{RATE}]))", "iterations/s {{phase}}"),
                     (f"sum(rate(chainyard_gradient_evaluations_total[{RATE}]))", "gradients/s")],
                    unit="ops", minimum=0), 12, 8),
        (timeseries("Queue",
                    "Chain tasks waiting for a worker, and claimed by one (running or about to be reclaimed).",
                    [("max(chainyard_queue_depth)", "waiting"), ("max(chainyard_queue_pending)", "claimed")],
                    minimum=0), 12, 8),
        (timeseries("Jobs by state", "Jobs kept in Redis by state (finished ones until their retention ends).",
                    [("max by (state) (chainyard_jobs)", "{{state}}")], minimum=0), 12, 8),
        (timeseries("Job latency (submission to end)",
                    "Quantiles of the time from submission to the end of jobs that ended in the window.",
                    [(f"histogram_quantile({q}, sum by (le) (rate(chainyard_job_duration_seconds_bucket[{RATE}])))",
                      f"p{int(q * 100)}") for q in (0.5, 0.9, 0.99)],
                    unit="s", minimum=0), 12, 8),
        (timeseries("Jobs ended by outcome", "Jobs ending per minute by outcome (succeeded, failed, cancelled).",
                    [(f"sum by (outcome) (rate(chainyard_job_duration_seconds_count[{RATE}])) * 60", "{{outcome}}")],
                    unit="short", stack=True, minimum=0), 12, 8),
        (row("Workers and API"), 24, 1),
        (timeseries("Worker utilisation",
                    "Share of time each worker ran a chain, and the average over workers.",
                    [(f"max by (worker) (avg_over_time(chainyard_worker_busy[{RATE}]))", "{{worker}}"),
                     (f"avg(avg_over_time(chainyard_worker_busy[{RATE}]))", "all workers")],
                    unit="percentunit", minimum=0), 12, 8),
        (stat("Workers alive", "Workers with a heartbeat in Redis in the last 30 s.", "max(chainyard_workers)",
              steps=(("red", None), ("green", 1))), 6, 8),
        (stat("Queue waiting", "Chain tasks waiting for a worker now.", "max(chainyard_queue_depth)",
              steps=(("green", None), ("orange", 10), ("red", 100))), 6, 8),
        (timeseries("API requests", "Requests per second by route and status.",
                    [(f"sum by (route, status) (rate(chainyard_http_requests_total[{RATE}]))",
                      "{{status}} {{route}}")], unit="reqps", minimum=0), 12, 8),
        (timeseries("API latency p99", "99th percentile of request time by route.",
                    [("histogram_quantile(0.99, sum by (le, route) "
                      f"(rate(chainyard_http_request_duration_seconds_bucket[{RATE}])))", "{{route}}")],
                    unit="s", minimum=0), 12, 8),
        (row("Empirical priors"), 24, 1),
        (timeseries("Prior refits", "Refits of each empirical prior in the last day, by outcome.",
                    [("sum by (prior, outcome) (increase(chainyard_prior_refit_total[1d]))", "{{prior}} {{outcome}}"),
                     ("max by (prior) (chainyard_prior_last_refit_ok)", "{{prior}} last ok")], minimum=0), 12, 8),
        (timeseries("Prior versions", "Version of each empirical prior (it steps up at each successful refit).",
                    [("max by (prior) (chainyard_prior_version)", "{{prior}}")], minimum=0), 12, 8),
        (timeseries("Next scheduled refit", "Time until each scheduled prior's next refit (priors with a schedule "
                    "that is not suspended); it falls to 0 as a refit fires, then jumps to the next run.",
                    [("max by (prior) (chainyard_prior_next_refit_timestamp) - time()", "{{prior}}")], unit="s",
                    minimum=0), 24, 8),
    ]


def place(items: list[tuple[dict[str, Any], int, int]]) -> list[dict[str, Any]]:
    """Flow panels left to right, top to bottom on Grafana's 24-column grid; ids in order."""
    panels, x, y, height = [], 0, 0, 0
    for number, (panel, w, h) in enumerate(items, start=1):
        if x + w > 24 or panel["type"] == "row":
            x, y, height = 0, y + height, 0
        panels.append({**panel, "id": number, "gridPos": {"h": h, "w": w, "x": x, "y": y}})
        x, height = x + w, max(height, h)
    return panels


def dashboard() -> dict[str, Any]:
    return {
        "uid": "chainyard",
        "title": "chainyard",
        "description": "Live convergence (R-hat, ESS, divergences) of running jobs, chain throughput, queue, job "
                       "latency, workers and empirical-prior refits.",
        "tags": ["chainyard", "mcmc"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "15s",
        "time": {"from": "now-1h", "to": "now"},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
             "regex": "", "skipUrlSync": False},
            {"name": "job", "label": "Job", "type": "query", "datasource": DATASOURCE,
             "definition": "label_values(chainyard_job_progress, job)",
             "query": {"qryType": 1, "query": "label_values(chainyard_job_progress, job)",
                       "refId": "PrometheusVariableQueryEditor-VariableQuery"},
             "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
             "hide": 0, "includeAll": True, "allValue": ".*", "multi": True, "options": [], "refresh": 2,
             "regex": "", "skipUrlSync": False, "sort": 1},
        ]},
        "panels": place(layout()),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel (for the tests)."""
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
