"""The chart's side of prior schedules in Kubernetes: the refit Job template ConfigMap, the API's mount and env,
and RBAC granting exactly what service/priors/kube.py uses (shown by driving it against tests/deploy/fake_kube.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from service.priors.kube import KubernetesBackend
from service.priors.schedule import Schedule
from tests.conftest import settings_from
from tests.deploy import policy
from tests.deploy.chart import SCENARIOS, component, container_env, one, pod_labels, pod_spec, render
from tests.deploy.fake_kube import FakeKube, chart_job_template, fake_kube, schema_problems, write_kubeconfig

scenarios = pytest.mark.parametrize("scenario", sorted(SCENARIOS))
SCHEDULE = Schedule(cron="*/15 * * * *", timezone="Asia/Kolkata", suspend=False)

# the HTTP requests of the official client and the RBAC verbs the API server checks for them
VERBS = {"PATCH": {"patch", "create"},  # server-side apply: a patch that creates what does not exist
         "GET one": {"get"}, "GET list": {"list"}, "DELETE": {"delete"}}


def template_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    configmap = component(objects, "ConfigMap", "refit-template")
    assert list(configmap["data"]) == ["job-template.yaml"]
    template: dict[str, Any] = yaml.safe_load(configmap["data"]["job-template.yaml"])
    return template


def backend_for_chart(objects: list[dict[str, Any]]) -> KubernetesBackend:
    """A backend built from this render's template, not connected (for building bodies only)."""
    return KubernetesBackend(api=None, namespace="chainyard", job_template=template_of(objects))


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeKube, KubernetesBackend]]:
    objects = render()
    with fake_kube(namespace="chainyard", job_template=chart_job_template()) as (state, url):
        template = tmp_path / "job-template.yaml"
        template.write_text(component(objects, "ConfigMap", "refit-template")["data"]["job-template.yaml"])
        settings = settings_from({"CHAINYARD_KUBECONFIG": str(write_kubeconfig(tmp_path / "kc", url,
                                                                                namespace="chainyard")),
                                  "CHAINYARD_KUBE_NAMESPACE": "chainyard",
                                  "CHAINYARD_REFIT_TEMPLATE_FILE": str(template)}, monkeypatch)
        yield state, KubernetesBackend.from_settings(settings)


# -- RBAC -----------------------------------------------------------------------------------------------------------


def test_the_role_grants_exactly_the_verbs_the_client_uses(kube: tuple[FakeKube, KubernetesBackend]) -> None:
    state, backend = kube
    backend.apply(tenant="t", prior="p", schedule=SCHEDULE)
    backend.apply(tenant="t", prior="p", schedule=SCHEDULE)
    backend.observed(tenant="t", prior="p")
    backend.listed()
    backend.delete(tenant="t", prior="p")
    used = set()
    for request in state.requests:
        kind = request.method if request.method != "GET" else (
            "GET list" if request.path.endswith("/cronjobs") else "GET one")
        used |= VERBS[kind]
        assert request.path.startswith("/apis/batch/v1/namespaces/chainyard/cronjobs")  # batch, this namespace
    [rule] = component(render(), "Role", "schedules")["rules"]
    assert rule == {"apiGroups": ["batch"], "resources": ["cronjobs"],
                    "verbs": ["get", "list", "create", "patch", "delete"]}
    assert set(rule["verbs"]) == used


@scenarios
def test_the_role_is_bound_to_the_service_account_only_the_api_runs_as(scenario: str) -> None:
    objects = render(SCENARIOS[scenario])
    role = component(objects, "Role", "schedules")
    assert role["metadata"]["namespace"] == "chainyard"
    binding = component(objects, "RoleBinding", "schedules")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    [subject] = binding["subjects"]
    api = pod_spec(component(objects, "Deployment", "api"))
    assert subject == {"kind": "ServiceAccount", "name": api["serviceAccountName"], "namespace": "chainyard"}
    assert api["automountServiceAccountToken"] is True
    assert one(objects, "ServiceAccount", subject["name"])["automountServiceAccountToken"] is False
    assert pod_spec(template_of(objects) | {"kind": "Job"})["automountServiceAccountToken"] is False


# -- the refit Job template -----------------------------------------------------------------------------------------


@scenarios
def test_the_template_configmap_renders_into_a_valid_cronjob_that_meets_the_policies(scenario: str) -> None:
    objects = render(SCENARIOS[scenario])
    cronjob = backend_for_chart(objects).cronjob(tenant="team-a", prior="p", schedule=SCHEDULE)
    assert schema_problems(cronjob) == []  # kubernetes-validate --strict, 1.29-1.34
    assert policy.violations([cronjob]) == []  # limits, non-root, read-only root, no token
    for netpol in [o for o in objects if o["kind"] == "NetworkPolicy"]:  # its pods reach Redis like the chart's
        [peer] = netpol["spec"]["ingress"][0]["from"]
        assert all(pod_labels(cronjob).get(k) == v for k, v in peer["podSelector"]["matchLabels"].items())


def test_a_broken_template_is_caught_by_the_checks_above() -> None:
    objects = render()
    cronjob = backend_for_chart(objects).cronjob(tenant="team-a", prior="p", schedule=SCHEDULE)
    pod_spec(cronjob)["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    cronjob["spec"]["jobTemplate"]["spec"]["backoffLimit"] = "1"
    assert policy.violations([cronjob]) == [
        f"CronJob {cronjob['metadata']['name']} container refit: root filesystem is writable"]
    assert len(schema_problems(cronjob)) == 6


@scenarios
def test_the_template_is_the_nightly_cronjobs_but_for_args_and_manager(scenario: str) -> None:
    objects = render(SCENARIOS[scenario])
    template = template_of(objects)
    nightly = component(objects, "CronJob", "refit")["spec"]["jobTemplate"]
    for labels in (template["metadata"]["labels"], template["spec"]["template"]["metadata"]["labels"]):
        assert labels.pop("app.kubernetes.io/managed-by") == "chainyard"
    for labels in (nightly["metadata"]["labels"], nightly["spec"]["template"]["metadata"]["labels"]):
        assert labels.pop("app.kubernetes.io/managed-by") == "Helm"
    assert template["spec"]["template"]["spec"]["containers"][0].pop("args") == ["refit"]
    assert nightly["spec"]["template"]["spec"]["containers"][0].pop("args")[0] == "refit"
    assert template == nightly


def test_the_template_follows_the_refit_values() -> None:
    values = {"refit": {"resources": {"requests": {"cpu": "10m", "memory": "64Mi"},
                                      "limits": {"cpu": "100m", "memory": "256Mi"}},
                        "nodeSelector": {"pool": "small"}, "enabled": False}}
    objects = render(values)
    spec = template_of(objects)["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"] == values["refit"]["resources"]
    assert spec["nodeSelector"] == {"pool": "small"}
    assert "CronJob" not in {o["kind"] for o in objects}  # no nightly refit, schedules still possible


def test_the_refit_pod_only_queues_jobs() -> None:
    # `chainyard refit` submits refit jobs to the queue and exits: no threads, no scratch volume, small resources
    cronjob = component(render(), "CronJob", "refit")
    container = pod_spec(cronjob)["containers"][0]
    assert "CHAINYARD_THREADS" not in {v["name"] for v in container.get("env", [])}
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    assert container["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"},
                                      "limits": {"cpu": "500m", "memory": "512Mi"}}


# -- the API's mount and environment ----------------------------------------------------------------------------------


@scenarios
def test_the_api_mounts_the_template_and_runs_in_kubernetes_mode(scenario: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(SCENARIOS[scenario])
    deployment = component(objects, "Deployment", "api")
    container = pod_spec(deployment)["containers"][0]
    settings = settings_from(container_env(objects, deployment, container), monkeypatch)
    assert settings.scheduler == "kubernetes"
    assert settings.kube_namespace == "<metadata.namespace of chainyard-api>"  # the downward API
    assert settings.kubeconfig is None  # in-cluster: the ServiceAccount token
    assert settings.refit_template_file is not None
    path = PurePosixPath(settings.refit_template_file)
    mount = next(m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == path.parent)
    assert mount["readOnly"] is True
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
    configmap = one(objects, "ConfigMap", volume["configMap"]["name"])
    assert path.name in configmap["data"]


def test_the_scheduler_follows_its_value_and_a_new_template_rolls_the_api() -> None:
    def api(values: dict[str, Any]) -> dict[str, Any]:
        return component(render(values), "Deployment", "api")

    env = {v["name"]: v.get("value") for v in pod_spec(api({"api": {"scheduler": "none"}}))["containers"][0]["env"]}
    assert env["CHAINYARD_SCHEDULER"] == "none"
    checksum = "checksum/refit-template"
    small = {"refit": {"resources": {"requests": {"cpu": "10m", "memory": "64Mi"},
                                     "limits": {"cpu": "100m", "memory": "256Mi"}}}}
    assert api({})["spec"]["template"]["metadata"]["annotations"][checksum] != \
        api(small)["spec"]["template"]["metadata"]["annotations"][checksum]
