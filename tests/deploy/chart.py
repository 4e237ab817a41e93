"""Render the Helm chart offline (helm-python-sdk: Helm's Go SDK, no helm binary, no cluster) and walk the objects."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "chainyard"
RELEASE = "chainyard"
NAMESPACE = "chainyard"

# default values plus every ci/*-values.yaml scenario (helm lint and chart-testing read the same files)
SCENARIOS: dict[str, dict[str, Any]] = {"default": {}} | {
    path.name.removesuffix("-values.yaml"): yaml.safe_load(path.read_text())
    for path in sorted((CHART / "ci").glob("*-values.yaml"))
}

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


@cache
def _render(values_json: str, release: str) -> tuple[tuple[str, str], ...]:
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(json.loads(values_json), name=release, namespace=NAMESPACE)
    return tuple(sorted(rendered.items()))


def render(values: dict[str, Any] | None = None, *, release: str = RELEASE) -> list[dict[str, Any]]:
    """Every object the chart renders with these values (NOTES.txt left out), parsed anew on each call."""
    objects = []
    for source, text in _render(json.dumps(values or {}, sort_keys=True), release):
        if source.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def notes(values: dict[str, Any] | None = None) -> str:
    rendered = dict(_render(json.dumps(values or {}, sort_keys=True), RELEASE))
    return next(text for source, text in rendered.items() if source.endswith("NOTES.txt"))


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The object of this kind and name; fails the test if there is not exactly one."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def component(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """`one` for an object of this release named <release>-<name> (the default release's full name is "chainyard")."""
    return one(objects, kind, f"{RELEASE}-{name}")


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec a workload runs."""
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return obj["spec"]["template"]["metadata"]["labels"]


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def container_env(objects: list[dict[str, Any]], workload: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """The environment the container starts with: its ConfigMap envFrom, then env (which wins), as Kubernetes does.

    Values from Secrets or the downward API are shown as placeholders naming their source.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env |= one(objects, "ConfigMap", ref)["data"]
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var["valueFrom"]:
            ref = var["valueFrom"]["fieldRef"]["fieldPath"]
            env[var["name"]] = f"<{ref} of {workload['metadata']['name']}>"
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = f"<secret {ref['name']}/{ref['key']}>"
    return env
