"""Every rendered object against the API schemas it will meet on a cluster.

Kubernetes' own kinds: kubernetes-validate --strict (unknown fields are errors) for Kubernetes 1.29 to 1.34, the
versions the chart supports. Prometheus Operator kinds: the CRD schemas of @kubernetes-models/prometheus-operator
(tools/deploy: `npm ci`), and the PrometheusRule's rules with promtool.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.chart import ROOT, SCENARIOS, component, one, render

KUBERNETES_VERSIONS = ["1.29", "1.30", "1.31", "1.32", "1.33", "1.34"]
CRD_GROUP = "monitoring.coreos.com/"
TOOLS = ROOT / "tools" / "deploy"


def kubernetes_problems(objects: list[dict[str, Any]], version: str) -> list[str]:
    problems = []
    for obj in objects:
        if obj["apiVersion"].startswith(CRD_GROUP):
            continue  # validated against the CRDs below
        where = f"{obj['kind']} {obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: no schema for {obj['apiVersion']} in Kubernetes {version}")
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
    return problems


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_objects_are_valid_kubernetes(scenario: str, version: str) -> None:
    assert kubernetes_problems(render(SCENARIOS[scenario]), version) == []


def test_strict_validation_catches_an_unknown_field_and_a_wrong_type() -> None:
    objects = render()
    worker = component(objects, "StatefulSet", "worker")
    worker["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # misspelt
    component(objects, "Deployment", "api")["spec"]["replicas"] = "2"
    problems = kubernetes_problems(objects, "1.34")
    assert len(problems) == 2
    assert any(p.startswith("StatefulSet chainyard-worker: spec.template.spec.containers.0: Additional properties")
               and "'resource' was unexpected" in p for p in problems)
    assert any(p.startswith("Deployment chainyard-api: spec.replicas:") for p in problems)


def test_a_kind_kubernetes_does_not_know_is_reported() -> None:
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    assert kubernetes_problems([unknown], "1.29") == ["Gadget g: no schema for example.com/v1 in Kubernetes 1.29"]


# -- Prometheus Operator CRDs ------------------------------------------------------------------------------------------


def crd_objects() -> list[dict[str, Any]]:
    objects = [o for o in render(SCENARIOS["monitoring"]) if o["apiVersion"].startswith(CRD_GROUP)]
    assert sorted(o["kind"] for o in objects) == ["PrometheusRule", "ServiceMonitor", "ServiceMonitor"]
    return objects


def validate_crds(objects: list[dict[str, Any]], tmp_path: Path) -> tuple[int, list[dict[str, Any]]]:
    assert (TOOLS / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir(), (
        "the CRD schemas are not installed: run `npm ci --prefix tools/deploy`")
    node = shutil.which("node")
    assert node, "node is not installed"
    path = tmp_path / "objects.json"
    path.write_text(json.dumps(objects))
    done = subprocess.run([node, str(TOOLS / "validate-crds.mjs"), str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert not done.stderr, done.stderr
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def test_servicemonitors_and_prometheusrule_match_the_crd_schemas(tmp_path: Path) -> None:
    objects = crd_objects()
    status, results = validate_crds(objects, tmp_path)
    assert status == 0
    assert results == [{"kind": o["kind"], "name": o["metadata"]["name"], "errors": []} for o in objects]


def test_crd_schemas_catch_a_broken_rule_and_endpoint(tmp_path: Path) -> None:
    objects = crd_objects()
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "often"
    status, results = validate_crds(objects, tmp_path)
    assert status == 1
    errors = {r["kind"] + " " + r["name"]: r["errors"] for r in results}
    assert "must have required property expr" in errors["PrometheusRule chainyard"][0]
    assert "interval must match pattern" in errors[f"ServiceMonitor {monitor['metadata']['name']}"][0]


def promtool_check(groups: list[dict[str, Any]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (Debian package prometheus)"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)


def test_prometheusrule_rules_pass_promtool(tmp_path: Path) -> None:
    rule = one(render(SCENARIOS["monitoring"]), "PrometheusRule", "chainyard")
    done = promtool_check(rule["spec"]["groups"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_catches_a_bad_expression(tmp_path: Path) -> None:
    rule = one(render(SCENARIOS["monitoring"]), "PrometheusRule", "chainyard")
    rule["spec"]["groups"][0]["rules"][0]["expr"] = "sum(rate(chainyard_chain_iterations_total[5m]"
    done = promtool_check(rule["spec"]["groups"], tmp_path)
    assert done.returncode != 0
    assert "FAILED" in done.stdout + done.stderr
