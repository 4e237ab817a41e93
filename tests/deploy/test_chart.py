"""The Helm chart: lint, values.schema.json, and what the rendered objects promise (volumes, RBAC, network, ...)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import helm_python
import pytest
import yaml

from tests.conftest import settings_from
from tests.deploy import policy
from tests.deploy.chart import (
    CHART,
    ROOT,
    SCENARIOS,
    component,
    container_env,
    notes,
    one,
    pod_labels,
    pod_spec,
    render,
    workloads,
)

scenarios = pytest.mark.parametrize("scenario", sorted(SCENARIOS))


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# -- lint and values.schema.json --------------------------------------------------------------------------------------


@scenarios
def test_helm_lint_strict_finds_nothing_above_info(scenario: str) -> None:
    report = helm_python.lint(CHART, SCENARIOS[scenario], strict=True, namespace="chainyard", kube_version="v1.29.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_helm_lint_reports_values_the_schema_refuses() -> None:
    report = helm_python.lint(CHART, {"worker": {"replicaCount": 0}}, strict=True)
    assert any("/worker/replicaCount" in m["error"] and m["severity"] == 3 for m in report["messages"])


def test_values_yaml_points_editors_at_the_schema() -> None:
    first = (CHART / "values.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=values.schema.json"
    assert json.loads((CHART / "values.schema.json").read_text())["$schema"].startswith("http://json-schema.org/")


@scenarios
def test_schema_accepts_every_scenario(scenario: str) -> None:
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(SCENARIOS[scenario])


BAD_VALUES = {
    "zero workers": ({"worker": {"replicaCount": 0}}, "/worker/replicaCount"),
    "zero API replicas": ({"api": {"replicaCount": 0}}, "/api/replicaCount"),
    "unknown scheduler": ({"api": {"scheduler": "cron"}}, "/api/scheduler"),
    "a container without limits": ({"api": {"resources": {"limits": None}}}, "/api/resources"),
    "limits without memory": ({"worker": {"resources": {"limits": {"memory": None}}}}, "/worker/resources/limits"),
    "grace period shorter than a compile": ({"worker": {"terminationGracePeriodSeconds": 5}},
                                            "/worker/terminationGracePeriodSeconds"),
    "writable root filesystem": ({"securityContext": {"readOnlyRootFilesystem": False}},
                                 "/securityContext/readOnlyRootFilesystem"),
    "root allowed": ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
    "no Redis at all": ({"redis": {"enabled": False}}, "/externalRedis"),
    "Redis URL of another scheme": ({"externalRedis": {"url": "http://redis:6379"}}, "/externalRedis/url"),
    "token without tenant": ({"auth": {"tokens": ["just-a-token"]}}, "/auth/tokens/0"),
    "misspelt key": ({"worker": {"replicas": 3}}, "replicas"),
    "bad schedule": ({"refit": {"schedule": "nightly"}}, "/refit/schedule"),
    "bad appendfsync": ({"redis": {"appendfsync": "sometimes"}}, "/redis/appendfsync"),
    "bad image digest": ({"image": {"digest": "latest"}}, "/image/digest"),
    "relative mount path": ({"worker": {"persistence": {"checkpoints": {"mountPath": "data"}}}},
                            "/worker/persistence/checkpoints"),
    "zero GPUs": ({"worker": {"gpu": {"enabled": True, "count": 0}}}, "/worker/gpu/count"),
    "GPU count as a string": ({"worker": {"gpu": {"count": "1"}}}, "/worker/gpu/count"),
    "misspelt GPU key": ({"worker": {"gpu": {"enable": True}}}, "enable"),
    "GPU resource without a domain": ({"worker": {"gpu": {"resourceName": "gpu"}}}, "/worker/gpu/resourceName"),
    "GPU tag suffix with a colon": ({"worker": {"gpu": {"imageTagSuffix": ":cuda"}}}, "/worker/gpu/imageTagSuffix"),
    "bad CUDA image digest": ({"worker": {"gpu": {"imageDigest": "latest"}}}, "/worker/gpu/imageDigest"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects(case: str) -> None:
    values, path = BAD_VALUES[case]
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError) as caught:
        chart.validate_schema(values)
    assert path in str(caught.value)


def test_render_refuses_values_the_schema_refuses() -> None:
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError, match="replicaCount"):
        chart.render({"worker": {"replicaCount": 0}}, name="chainyard")


# -- what each scenario renders ------------------------------------------------------------------------------------


def kinds(objects: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj["kind"]] = counts.get(obj["kind"], 0) + 1
    return counts


def test_default_render_has_every_component() -> None:
    assert kinds(render()) == {
        "ConfigMap": 3, "CronJob": 1, "Deployment": 1, "NetworkPolicy": 1, "PodDisruptionBudget": 1, "Role": 1,
        "RoleBinding": 1, "Service": 4, "ServiceAccount": 1, "StatefulSet": 2,
    }


def test_monitoring_and_autoscaling_are_off_by_default_and_on_in_their_scenarios() -> None:
    assert {"ServiceMonitor", "PrometheusRule", "HorizontalPodAutoscaler"}.isdisjoint(kinds(render()))
    monitoring = kinds(render(SCENARIOS["monitoring"]))
    assert (monitoring["ServiceMonitor"], monitoring["PrometheusRule"]) == (2, 1)
    assert kinds(render(SCENARIOS["autoscaling"]))["HorizontalPodAutoscaler"] == 1


@scenarios
def test_every_object_carries_the_standard_labels_and_the_release_namespace(scenario: str) -> None:
    for obj in render(SCENARIOS[scenario]):
        labels = obj["metadata"]["labels"]
        for key in ("helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance",
                    "app.kubernetes.io/version", "app.kubernetes.io/managed-by"):
            assert key in labels, (obj["kind"], obj["metadata"]["name"], key)
        expected = "monitoring" if obj["metadata"]["name"].endswith("-dashboard") and scenario == "monitoring" \
            else "chainyard"
        assert obj["metadata"]["namespace"] == expected


# -- policies ----------------------------------------------------------------------------------------------------


@scenarios
def test_every_workload_meets_the_policies(scenario: str) -> None:
    assert policy.violations(render(SCENARIOS[scenario])) == []


def test_policies_catch_a_container_without_limits() -> None:
    objects = render()
    del pod_spec(component(objects, "StatefulSet", "worker"))["containers"][0]["resources"]["limits"]
    assert policy.resources(objects) == [
        "StatefulSet chainyard-worker container worker: no cpu limit",
        "StatefulSet chainyard-worker container worker: no memory limit",
    ]


def test_policies_catch_a_missing_probe_and_an_unknown_container() -> None:
    objects = render()
    api = pod_spec(component(objects, "Deployment", "api"))
    del api["containers"][0]["readinessProbe"]
    api["containers"].append({"name": "sidecar", "image": "busybox"})
    assert policy.probes(objects) == [
        "Deployment chainyard-api container api: no readinessProbe",
        "Deployment chainyard-api container sidecar: unknown container, no probe policy for it",
    ]


def test_policies_catch_root_and_writable_root_filesystem() -> None:
    objects = render()
    redis = pod_spec(component(objects, "StatefulSet", "redis"))
    redis["securityContext"]["runAsUser"] = 0
    del redis["securityContext"]["runAsNonRoot"]
    redis["containers"][0]["securityContext"] = {"readOnlyRootFilesystem": False}
    found = policy.security(objects)
    assert "StatefulSet chainyard-redis container redis: runAsNonRoot is not true" in found
    assert "StatefulSet chainyard-redis container redis: root filesystem is writable" in found
    assert "StatefulSet chainyard-redis container redis: capabilities not all dropped" in found
    assert len(found) == 5


def test_policies_catch_a_token_mounted_where_it_is_not_needed() -> None:
    objects = render()
    pod_spec(component(objects, "CronJob", "refit"))["automountServiceAccountToken"] = True
    assert policy.service_account_tokens(objects) == [
        "CronJob chainyard-refit: automountServiceAccountToken should be False"]


# -- worker: volumes, identity, shutdown -----------------------------------------------------------------------------


def worker_volume_problems(objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Where the worker's Settings put checkpoints and the compile cache must be its two volumeClaimTemplates."""
    sts = component(objects, "StatefulSet", "worker")
    container = pod_spec(sts)["containers"][0]
    settings = settings_from(container_env(objects, sts, container), monkeypatch)
    mounts = {PurePosixPath(m["mountPath"]): m["name"] for m in container["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    # workers/worker.py: the compile cache defaults to <data_dir>/jax-cache
    cache = settings.compile_cache_dir or settings.data_dir / "jax-cache"
    problems = []
    for what, path, volume in (("data dir", settings.data_dir, "checkpoints"), ("compile cache", cache,
                                                                                  "compile-cache")):
        if mounts.get(PurePosixPath(path)) != volume:
            problems.append(f"{what} {path} is not the mount of volume {volume} ({mounts})")
        if volume not in claims:
            problems.append(f"{volume} is not a volumeClaimTemplate")
    return problems


@scenarios
def test_worker_checkpoints_and_compile_cache_are_its_volume_claims(scenario: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert worker_volume_problems(render(SCENARIOS[scenario]), monkeypatch) == []


def test_worker_volume_paths_follow_the_values(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"worker": {"persistence": {"checkpoints": {"mountPath": "/var/lib/chainyard"},
                                         "compileCache": {"mountPath": "/var/cache/jax"}}}}
    assert worker_volume_problems(render(values), monkeypatch) == []
    env = pod_spec(component(render(values), "StatefulSet", "worker"))["containers"][0]["env"]
    assert {"name": "CHAINYARD_DATA_DIR", "value": "/var/lib/chainyard"} in env


def test_worker_volume_check_catches_a_data_dir_off_the_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render()
    env = pod_spec(component(objects, "StatefulSet", "worker"))["containers"][0]["env"]
    next(var for var in env if var["name"] == "CHAINYARD_DATA_DIR")["value"] = "/home/chainyard/data"
    assert worker_volume_problems(objects, monkeypatch) == [
        "data dir /home/chainyard/data is not the mount of volume checkpoints "
        "({PurePosixPath('/data'): 'checkpoints', PurePosixPath('/cache'): 'compile-cache', "
        "PurePosixPath('/tmp'): 'tmp'})"]


def test_worker_identity_is_its_pod_name_and_its_volumes_are_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render()
    sts = component(objects, "StatefulSet", "worker")
    container = pod_spec(sts)["containers"][0]
    settings = settings_from(container_env(objects, sts, container), monkeypatch)
    assert settings.worker_name == "<metadata.name of chainyard-worker>"  # the downward API: the stable pod name
    assert [t["spec"]["accessModes"] for t in sts["spec"]["volumeClaimTemplates"]] == [["ReadWriteOnce"]] * 2
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


@scenarios
def test_worker_gets_time_to_finish_a_block_and_checkpoint(scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(SCENARIOS[scenario])
    sts = component(objects, "StatefulSet", "worker")
    container = pod_spec(sts)["containers"][0]
    settings = settings_from(container_env(objects, sts, container), monkeypatch)
    # a block is ~block_seconds; the first one of a model includes a JAX compile of 10-20 s
    assert pod_spec(sts)["terminationGracePeriodSeconds"] >= 30 + settings.block_seconds
    assert "preStop" not in container.get("lifecycle", {})  # SIGTERM itself starts the checkpoint


def test_worker_pdb_and_service_select_the_worker_pods() -> None:
    objects = render()
    sts = component(objects, "StatefulSet", "worker")
    pdb = component(objects, "PodDisruptionBudget", "worker")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels(sts))
    service = one(objects, "Service", sts["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert matches(service["spec"]["selector"], pod_labels(sts))
    for other in workloads(objects):
        if other is not sts:
            assert not matches(pdb["spec"]["selector"]["matchLabels"], pod_labels(other))


# -- worker: GPUs (worker.gpu) -------------------------------------------------------------------------------------


def test_gpu_workers_ask_for_gpus_on_gpu_nodes_and_run_the_cuda_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(SCENARIOS["gpu"])
    sts = component(objects, "StatefulSet", "worker")
    spec = pod_spec(sts)
    [container] = spec["containers"]
    # Kubernetes refuses an extended resource whose request differs from its limit
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": 1},
                                      "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": 1}}
    assert spec["nodeSelector"] == {"kubernetes.io/arch": "amd64", "nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert container["image"] == "ghcr.io/chainyard/chainyard:0.1.0-cuda"
    settings = settings_from(container_env(objects, sts, container), monkeypatch)
    assert settings.platform == "gpu"


def test_gpu_values_add_to_the_workers_own_placement_and_resources() -> None:
    values = {"worker": {"nodeSelector": {"pool": "cpu", "zone": "a"},
                         "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "chainyard",
                                          "effect": "NoSchedule"}],
                         "resources": {"limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 4}},
                         "gpu": {"enabled": True, "count": 2, "nodeSelector": {"pool": "gpu"},
                                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}}}
    spec = pod_spec(component(render(values), "StatefulSet", "worker"))
    assert spec["nodeSelector"] == {"pool": "gpu", "zone": "a"}  # the GPU selector wins where both set a key
    assert [t["key"] for t in spec["tolerations"]] == ["dedicated", "nvidia.com/gpu"]
    resources = spec["containers"][0]["resources"]
    assert resources["limits"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 2}  # count, not a stray limit
    assert resources["requests"] == {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": 2}


def test_gpu_resource_name_tag_suffix_and_digest_follow_the_values() -> None:
    digest = "sha256:" + "ab" * 32

    def worker(gpu: dict[str, Any], image: dict[str, Any] | None = None) -> dict[str, Any]:
        values = {"worker": {"gpu": {"enabled": True} | gpu}, "image": image or {}}
        return pod_spec(component(render(values), "StatefulSet", "worker"))["containers"][0]

    amd = worker({"resourceName": "amd.com/gpu", "imageTagSuffix": "-rocm"}, {"tag": "1.2.3"})
    assert amd["resources"]["limits"]["amd.com/gpu"] == amd["resources"]["requests"]["amd.com/gpu"] == 1
    assert "nvidia.com/gpu" not in amd["resources"]["limits"]
    assert amd["image"] == "ghcr.io/chainyard/chainyard:1.2.3-rocm"
    assert worker({"imageDigest": digest})["image"] == f"ghcr.io/chainyard/chainyard@{digest}"
    # image.digest names the CPU image: GPU workers keep the tag plus suffix unless imageDigest pins theirs
    assert worker({}, {"digest": "sha256:" + "cd" * 32})["image"] == "ghcr.io/chainyard/chainyard:0.1.0-cuda"


def test_only_the_workers_change_with_gpu_workers() -> None:
    default, gpu = render(), render(SCENARIOS["gpu"])
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    changed = [key(o) for o, p in zip(sorted(default, key=key), sorted(gpu, key=key), strict=True) if o != p]
    assert changed == [("StatefulSet", "chainyard-worker")]  # the API, refit CronJob and refit template stay on CPU


@pytest.mark.parametrize("scenario", sorted(set(SCENARIOS) - {"gpu"}))
def test_without_gpu_values_nothing_asks_for_a_gpu(scenario: str) -> None:
    for workload in workloads(render(SCENARIOS[scenario])):
        spec = pod_spec(workload)
        assert "tolerations" not in spec and "nodeSelector" not in spec
        for container in spec["containers"]:
            assert {k for kind in container["resources"].values() for k in kind} <= {"cpu", "memory"}
            assert "CHAINYARD_PLATFORM" not in {var["name"] for var in container.get("env", [])}
            assert not container["image"].endswith("-cuda")


def test_disabled_gpu_values_render_exactly_the_default() -> None:
    values = {"worker": {"gpu": {"enabled": False, "count": 4, "resourceName": "amd.com/gpu", "imageTagSuffix": "-x",
                                 "nodeSelector": {"pool": "gpu"}, "tolerations": [{"operator": "Exists"}]}}}
    assert render(values) == render()


# -- writable paths under a read-only root filesystem ------------------------------------------------------------------


@scenarios
def test_every_path_the_processes_write_is_a_volume(scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(SCENARIOS[scenario])
    for workload in workloads(objects):
        for container in pod_spec(workload)["containers"]:
            if container["name"] == "redis":
                continue  # redis-server writes only to --dir, checked with Redis below
            env = container_env(objects, workload, container)
            settings = settings_from(env, monkeypatch)
            mounts = [PurePosixPath(m["mountPath"]) for m in container["volumeMounts"]]
            writes = [PurePosixPath(env["HOME"]), PurePosixPath(env["MPLCONFIGDIR"])]
            if container["name"] == "worker":  # the refit pod only queues refit jobs: no data dir
                writes += [PurePosixPath(settings.data_dir)]
            for path in writes:
                assert any(path == m or m in path.parents for m in mounts), (container["name"], path, mounts)


# -- API, tokens, RBAC -------------------------------------------------------------------------------------------


def test_api_service_probes_and_token_file(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render()
    deployment = component(objects, "Deployment", "api")
    container = pod_spec(deployment)["containers"][0]
    service = component(objects, "Service", "api")
    assert matches(service["spec"]["selector"], pod_labels(deployment))
    port = service["spec"]["ports"][0]["targetPort"]
    assert {"name": port, "containerPort": 8000, "protocol": "TCP"} in container["ports"]
    assert container["args"][:5] == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    settings = settings_from(container_env(objects, deployment, container), monkeypatch)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tokens")
    assert settings.tokens_file is not None and PurePosixPath(settings.tokens_file).parent == PurePosixPath(
        mount["mountPath"])
    assert not settings.auth_disabled


def test_without_tokens_no_secret_is_generated_and_the_api_waits_for_its_own() -> None:
    objects = render()
    assert [o for o in objects if o["kind"] == "Secret"] == []
    volume = next(v for v in pod_spec(component(objects, "Deployment", "api"))["volumes"] if v["name"] == "tokens")
    assert volume["secret"] == {"secretName": "chainyard-tokens", "items": [{"key": "tokens", "path": "tokens"}]}
    assert "create secret generic chainyard-tokens" in notes()


def test_tokens_from_values_become_the_tokens_file() -> None:
    objects = render(SCENARIOS["external-redis-url"])
    secret = component(objects, "Secret", "tokens")
    tokens = base64.b64decode(secret["data"]["tokens"]).decode()
    assert tokens == "0123456789abcdef:team-a\nfedcba9876543210:team-b\n"


def test_existing_secrets_are_used_as_named() -> None:
    objects = render(SCENARIOS["external-redis"])
    assert [o for o in objects if o["kind"] == "Secret"] == []
    volume = next(v for v in pod_spec(component(objects, "Deployment", "api"))["volumes"] if v["name"] == "tokens")
    assert volume["secret"] == {"secretName": "chainyard-api-tokens",
                                "items": [{"key": "tokens.txt", "path": "tokens"}]}


def test_tokens_change_rolls_the_api_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = component(render(values), "Deployment", "api")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/tokens"]

    assert checksum({"auth": {"tokens": ["a:t"]}}) != checksum({"auth": {"tokens": ["b:t"]}})


@scenarios
def test_rbac_allows_only_cronjobs_in_the_namespace_and_only_the_api_uses_it(scenario: str) -> None:
    objects = render(SCENARIOS[scenario])
    assert {"ClusterRole", "ClusterRoleBinding"}.isdisjoint(kinds(objects))
    role = component(objects, "Role", "schedules")
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["cronjobs"],
                              "verbs": ["get", "list", "create", "patch", "delete"]}]
    binding = component(objects, "RoleBinding", "schedules")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "chainyard-schedules"}
    account = one(objects, "ServiceAccount", "chainyard")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "chainyard", "namespace": "chainyard"}]
    assert account["automountServiceAccountToken"] is False
    users = [w["metadata"]["name"] for w in workloads(objects) if pod_spec(w).get("serviceAccountName") == "chainyard"]
    assert users == ["chainyard-api"]


# -- Redis: in-chart or external -------------------------------------------------------------------------------------


def test_in_chart_redis_keeps_an_append_only_file_on_its_volume() -> None:
    objects = render()
    sts = component(objects, "StatefulSet", "redis")
    container = pod_spec(sts)["containers"][0]
    args = container["args"]
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert container["command"] == ["redis-server"]
    assert flags["--appendonly"] == "yes"
    [mount] = container["volumeMounts"]
    assert flags["--dir"] == mount["mountPath"]
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == [mount["name"]]
    service = component(objects, "Service", "redis")
    assert matches(service["spec"]["selector"], pod_labels(sts))
    config = one(objects, "ConfigMap", "chainyard")["data"]
    assert config["CHAINYARD_REDIS_URL"] == f"redis://chainyard-redis:{flags['--port']}/0"
    assert service["spec"]["ports"][0]["port"] == int(flags["--port"])


def test_networkpolicy_admits_this_release_only() -> None:
    objects = render()
    netpol = component(objects, "NetworkPolicy", "redis")
    redis = component(objects, "StatefulSet", "redis")
    assert netpol["spec"]["policyTypes"] == ["Ingress"]
    assert matches(netpol["spec"]["podSelector"]["matchLabels"], pod_labels(redis))
    [rule] = netpol["spec"]["ingress"]
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"}  # no namespaceSelector, no ipBlock: this namespace's pods only
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    clients = [w for w in workloads(objects) if w is not redis]
    assert sorted(w["metadata"]["name"] for w in clients) == ["chainyard-api", "chainyard-refit", "chainyard-worker"]
    for workload in clients:
        assert matches(peer["podSelector"]["matchLabels"], pod_labels(workload))
    for workload in workloads(render(release="other")):
        assert not matches(peer["podSelector"]["matchLabels"], pod_labels(workload)), workload["metadata"]["name"]


@pytest.mark.parametrize("scenario", ["external-redis", "external-redis-url"])
def test_external_redis_replaces_the_in_chart_one(scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(SCENARIOS[scenario])
    assert [o["metadata"]["name"] for o in objects if "redis" in o["metadata"]["name"]] == []
    external = SCENARIOS[scenario]["externalRedis"]
    expected = (f"<secret {external['existingSecret']}/{external['existingSecretKey']}>"
                if "existingSecret" in external else external["url"])
    for workload in workloads(objects):
        container = pod_spec(workload)["containers"][0]
        settings = settings_from(container_env(objects, workload, container), monkeypatch)
        assert settings.redis_url == expected, workload["metadata"]["name"]


# -- refit CronJob and the image's commands ---------------------------------------------------------------------------


def test_refit_cronjob_runs_nightly_one_at_a_time() -> None:
    cronjob = component(render(), "CronJob", "refit")
    assert cronjob["spec"]["schedule"] == "17 3 * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert pod_spec(cronjob)["restartPolicy"] == "Never"
    assert pod_spec(cronjob)["containers"][0]["args"] == ["refit"]
    assert "CronJob" not in kinds(render({"refit": {"enabled": False}}))


def chainyard_script() -> Path:
    script = Path(sys.executable).parent / "chainyard"
    assert script.exists(), f"{script} missing: pip install -e . installs the chainyard console script"
    return script


def command_exists(command: str) -> bool:
    done = subprocess.run([chainyard_script(), command, "--help"], capture_output=True, text=True, timeout=120)
    return done.returncode == 0


def test_image_entrypoint_is_the_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "chainyard" in scripts
    entrypoint = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("ENTRYPOINT")]
    assert entrypoint == ['ENTRYPOINT ["chainyard"]']


def test_every_container_command_exists_in_the_image_entrypoint() -> None:
    commands = set()
    for scenario in SCENARIOS.values():
        for workload in workloads(render(scenario)):
            for container in pod_spec(workload)["containers"]:
                if container["name"] != "redis":
                    assert "command" not in container  # the image's ENTRYPOINT (chainyard) runs the args
                    commands.add(container["args"][0])
    assert commands == {"api", "worker", "refit"}
    missing = sorted(c for c in commands if not command_exists(c))
    assert missing == []


def test_command_check_tells_a_missing_command() -> None:
    assert not command_exists("no-such-command")


# -- monitoring ------------------------------------------------------------------------------------------------------


def test_servicemonitors_scrape_the_api_and_worker_services() -> None:
    objects = render(SCENARIOS["monitoring"])
    for name in ("api", "worker"):
        monitor = component(objects, "ServiceMonitor", name)
        service = component(objects, "Service", name)
        assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        others = [s for s in objects if s["kind"] == "Service" and s is not service]
        assert not any(matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"]) for s in others)
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics" and endpoint["interval"] == "15s" and endpoint["honorLabels"] is True
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheusrule_carries_the_rules_file() -> None:
    rule = one(render(SCENARIOS["monitoring"]), "PrometheusRule", "chainyard")
    rules_file = yaml.safe_load((CHART / "rules" / "chainyard.rules.yaml").read_text())
    assert rule["spec"]["groups"] == rules_file["groups"] and rules_file["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@pytest.mark.parametrize("scenario", ["default", "monitoring"])
def test_dashboard_configmap_is_the_dashboard_with_the_sidecar_label(scenario: str) -> None:
    configmap = component(render(SCENARIOS[scenario]), "ConfigMap", "dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads((CHART / "dashboards" / "chainyard.json").read_text())
    assert json.loads(configmap["data"]["chainyard.json"]) == dashboard
    off = render({"metrics": {"dashboard": {"enabled": False}}})
    assert [o for o in off if o["metadata"]["name"] == "chainyard-dashboard"] == []


def test_hpa_owns_the_api_replica_count() -> None:
    objects = render(SCENARIOS["autoscaling"])
    deployment = component(objects, "Deployment", "api")
    hpa = component(objects, "HorizontalPodAutoscaler", "api")
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chainyard-api"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert component(render(), "Deployment", "api")["spec"]["replicas"] == 2


def test_image_is_pinned_by_tag_or_digest() -> None:
    default = {c["image"] for w in workloads(render()) for c in pod_spec(w)["containers"]}
    assert default == {"ghcr.io/chainyard/chainyard:0.1.0", "docker.io/library/redis:7.4.6-alpine"}
    digest = SCENARIOS["autoscaling"]["image"]["digest"]
    pinned = {c["image"] for w in workloads(render(SCENARIOS["autoscaling"])) for c in pod_spec(w)["containers"]}
    assert f"ghcr.io/chainyard/chainyard@{digest}" in pinned
