"""Policies every rendered workload must meet; each function returns the violations it finds, as messages.

Kept apart from the tests so the tests can also show that a broken object is caught.
"""

from __future__ import annotations

from typing import Any

from tests.deploy.chart import pod_spec, workloads

# which probes each container must have: long-running servers need to be restarted when dead (liveness); the
# ones behind a Service also need readiness; a run-to-completion job (refit) has none
REQUIRED_PROBES = {
    "api": {"livenessProbe", "readinessProbe"},
    "worker": {"livenessProbe"},
    "redis": {"livenessProbe", "readinessProbe"},
    "refit": set(),
}


def _containers(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    spec = pod_spec(obj)
    where = f"{obj['kind']} {obj['metadata']['name']}"
    return [(f"{where} container {c['name']}", c, spec) for c in spec.get("initContainers", []) + spec["containers"]]


def resources(objects: list[dict[str, Any]]) -> list[str]:
    """Every container requests and limits CPU and memory."""
    problems = []
    for obj in workloads(objects):
        for where, container, _ in _containers(obj):
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in container.get("resources", {}).get(kind, {}):
                        problems.append(f"{where}: no {resource} {kind[:-1]}")
    return problems


def probes(objects: list[dict[str, Any]]) -> list[str]:
    """Every container has the probes its role needs (REQUIRED_PROBES); an unknown container is a violation."""
    problems = []
    for obj in workloads(objects):
        for where, container, _ in _containers(obj):
            if container["name"] not in REQUIRED_PROBES:
                problems.append(f"{where}: unknown container, no probe policy for it")
                continue
            for probe in sorted(REQUIRED_PROBES[container["name"]] - container.keys()):
                problems.append(f"{where}: no {probe}")
    return problems


def _effective(container: dict[str, Any], spec: dict[str, Any], key: str) -> Any:
    """A security setting as Kubernetes applies it: the container's, else the pod's."""
    value = container.get("securityContext", {}).get(key)
    return spec.get("securityContext", {}).get(key) if value is None else value


def security(objects: list[dict[str, Any]]) -> list[str]:
    """Non-root with a non-zero uid, read-only root filesystem, no privilege escalation, all capabilities dropped."""
    problems = []
    for obj in workloads(objects):
        for where, container, spec in _containers(obj):
            sc = container.get("securityContext", {})
            if _effective(container, spec, "runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if _effective(container, spec, "runAsUser") in (None, 0):
                problems.append(f"{where}: no non-zero runAsUser (the kubelet can check runAsNonRoot only on a uid)")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []) or sc.get("capabilities", {}).get("add"):
                problems.append(f"{where}: capabilities not all dropped")
            if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
                problems.append(f"{where}: shares a host namespace")
    return problems


def service_account_tokens(objects: list[dict[str, Any]]) -> list[str]:
    """Only the API pods get a Kubernetes API token (to manage schedule CronJobs); every other pod opts out."""
    problems = []
    for obj in workloads(objects):
        spec = pod_spec(obj)
        names = {c["name"] for c in spec["containers"]}
        wants = names == {"api"}
        if spec.get("automountServiceAccountToken") is not wants:
            problems.append(f"{obj['kind']} {obj['metadata']['name']}: automountServiceAccountToken should be {wants}")
    return problems


ALL = (resources, probes, security, service_account_tokens)


def violations(objects: list[dict[str, Any]]) -> list[str]:
    return [problem for policy in ALL for problem in policy(objects)]
