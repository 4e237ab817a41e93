"""Kubernetes mode of prior schedules: one CronJob per (tenant, prior), managed with server-side apply.

The CronJob's job template (image, env, resources, security contexts, service account, the release's labels) is
the one the chart renders into a ConfigMap that the API mounts (Settings.refit_template_file); only the refit
container's args are set here. Imported only in Kubernetes mode (service.priors.backends), so that the
`kubernetes` package is loaded only there.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from service.config import Settings
from service.exceptions import BackendError
from service.priors.schedule import Schedule

FIELD_MANAGER = "chainyard"
"""Server-side apply field manager: the fields chainyard sets on its CronJobs are owned under this name."""
NAME_PREFIX = "cy-refit-"
MAX_NAME = 52
"""A CronJob name is at most 52 characters: its Jobs are named <cronjob>-<8 digits> within 63."""
HASH_CHARS = 10
TENANT_ANNOTATION = "chainyard.io/tenant"
PRIOR_ANNOTATION = "chainyard.io/prior"
MANAGED_BY = "chainyard"
STARTING_DEADLINE_SECONDS = 3600
"""A run missed by less than this (API server or controller down) still starts, once (concurrencyPolicy Forbid)."""
SUCCESSFUL_JOBS_HISTORY = 3
FAILED_JOBS_HISTORY = 3
REQUEST_TIMEOUT = (3.0, 10.0)
"""Seconds to connect to the Kubernetes API and to wait for its answer: a PUT of a schedule must not hang."""
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

T = TypeVar("T")


def cronjob_name(*, release: str, tenant: str, prior: str) -> str:
    """The CronJob of one (tenant, prior): a DNS-1123 label of at most 52 characters, readable and stable.

    The readable part is `<tenant>-<prior>` lowercased, every other character a dash, cut to fit; the hash of
    release, tenant and prior keeps pairs that read alike (`a-b`/`c` and `a`/`b-c`, `Ab`/`ab`) and two releases
    in one namespace apart.
    """
    digest = hashlib.sha256(f"{release}\0{tenant}\0{prior}".encode()).hexdigest()[:HASH_CHARS]
    room = MAX_NAME - len(NAME_PREFIX) - 1 - HASH_CHARS
    readable = re.sub(r"[^a-z0-9]+", "-", f"{tenant}-{prior}".lower())[:room].strip("-")
    return f"{NAME_PREFIX}{readable}-{digest}" if readable else f"{NAME_PREFIX}{digest}"


def load_job_template(path: Path) -> dict[str, Any]:
    """The chart's refit job template (a JobTemplateSpec: metadata and a Job spec with its pod template).

    Raises ValueError when the file does not hold one with a `refit` container and the release's labels.
    """
    template: dict[str, Any] = yaml.safe_load(path.read_text())
    try:
        labels = template["metadata"]["labels"]
        containers = template["spec"]["template"]["spec"]["containers"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a job template (metadata.labels, spec.template.spec.containers)") from exc
    if not any(c.get("name") == "refit" for c in containers):
        raise ValueError(f"{path}: the job template has no container named refit")
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance"):
        if key not in labels:
            raise ValueError(f"{path}: the job template lacks the label {key}")
    return template


class KubernetesBackend:
    """Schedules as CronJobs in one namespace (service.priors.schedule.ScheduleBackend)."""

    kind = "kubernetes"

    def __init__(self, *, api: client.BatchV1Api, namespace: str, job_template: dict[str, Any],
                 timeout: tuple[float, float] = REQUEST_TIMEOUT) -> None:
        self.api = api
        self.timeout = timeout
        self.namespace = namespace
        self.job_template = job_template
        labels = job_template["metadata"]["labels"]
        self.release = labels["app.kubernetes.io/instance"]
        self.labels = {**labels, "app.kubernetes.io/component": "refit", "app.kubernetes.io/managed-by": MANAGED_BY}

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesBackend:
        """In-cluster configuration (the pod's ServiceAccount token), or Settings.kubeconfig when it is set."""
        if settings.refit_template_file is None:
            raise ValueError("CHAINYARD_REFIT_TEMPLATE_FILE is required in Kubernetes mode (the chart mounts it)")
        configuration = client.Configuration()
        if settings.kubeconfig:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(settings.kubeconfig), client_configuration=configuration, persist_config=False)
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        # one retry (a pooled connection the server closed meanwhile), not urllib3's three: an unreachable API
        # server is a 503 within the timeouts
        configuration.retries = 1
        namespace = settings.kube_namespace or _in_cluster_namespace()
        return cls(api=client.BatchV1Api(client.ApiClient(configuration)), namespace=namespace,
                   job_template=load_job_template(settings.refit_template_file))

    def name(self, *, tenant: str, prior: str) -> str:
        return cronjob_name(release=self.release, tenant=tenant, prior=prior)

    def cronjob(self, *, tenant: str, prior: str, schedule: Schedule) -> dict[str, Any]:
        """The whole CronJob chainyard applies for this schedule."""
        job_template = copy.deepcopy(self.job_template)
        container = next(c for c in job_template["spec"]["template"]["spec"]["containers"] if c["name"] == "refit")
        container["args"] = ["refit", "--tenant", tenant, "--prior", prior]
        return {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {
                "name": self.name(tenant=tenant, prior=prior),
                "namespace": self.namespace,
                "labels": self.labels,
                # labels cannot hold arbitrary tenant and prior names; annotations can
                "annotations": {TENANT_ANNOTATION: tenant, PRIOR_ANNOTATION: prior},
            },
            "spec": {
                "schedule": schedule.cron,
                "timeZone": schedule.timezone,
                "suspend": schedule.suspend,
                "concurrencyPolicy": "Forbid",
                "startingDeadlineSeconds": STARTING_DEADLINE_SECONDS,
                "successfulJobsHistoryLimit": SUCCESSFUL_JOBS_HISTORY,
                "failedJobsHistoryLimit": FAILED_JOBS_HISTORY,
                "jobTemplate": job_template,
            },
        }

    def apply(self, *, tenant: str, prior: str, schedule: Schedule) -> None:
        """Create or update the CronJob (server-side apply, forced: chainyard owns the fields it sets)."""
        body = self.cronjob(tenant=tenant, prior=prior, schedule=schedule)
        self._call("apply the CronJob", self.api.patch_namespaced_cron_job, body["metadata"]["name"], self.namespace,
                   body,
                   field_manager=FIELD_MANAGER, force=True, _content_type="application/apply-patch+yaml")

    def delete(self, *, tenant: str, prior: str) -> None:
        """Delete the CronJob and, in the background, its Jobs; one already gone is fine."""
        with contextlib.suppress(_Absent):
            self._call("delete the CronJob", self.api.delete_namespaced_cron_job,
                       self.name(tenant=tenant, prior=prior), self.namespace, propagation_policy="Background",
                       absent_ok=True)

    def observed(self, *, tenant: str, prior: str) -> Schedule | None:
        """The schedule the cluster runs for this prior; None when it has no CronJob.

        A CronJob without a timeZone (edited by hand) reports timezone "": the controller's local zone, which
        chainyard cannot know, so it never equals a stored schedule.
        """
        try:
            found = self._call("read the CronJob", self.api.read_namespaced_cron_job,
                               self.name(tenant=tenant, prior=prior), self.namespace, absent_ok=True)
        except _Absent:
            return None
        spec = found.spec
        if spec is None:  # not from a real API server: a CronJob has a spec
            return None
        return Schedule(cron=spec.schedule, timezone=spec.time_zone or "", suspend=bool(spec.suspend))

    def listed(self) -> set[tuple[str, str]]:
        """(tenant, prior) of every CronJob chainyard manages for this release (reconciling deletes orphans)."""
        selector = (f"app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/component=refit,"
                    f"app.kubernetes.io/instance={self.release}")
        found = self._call("list the CronJobs", self.api.list_namespaced_cron_job, self.namespace,
                           label_selector=selector)
        pairs = set()
        for item in found.items:
            annotations = (item.metadata.annotations if item.metadata else None) or {}
            if TENANT_ANNOTATION in annotations and PRIOR_ANNOTATION in annotations:
                pairs.add((annotations[TENANT_ANNOTATION], annotations[PRIOR_ANNOTATION]))
        return pairs

    def _call(self, what: str, method: Callable[..., T], *args: Any, absent_ok: bool = False, **kwargs: Any) -> T:
        """One request to the Kubernetes API; its failures as BackendError (with `absent_ok`, a 404 as _Absent)."""
        try:
            return method(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as exc:
            if exc.status == 404 and absent_ok:
                raise _Absent from exc
            raise api_error(exc, what=what, namespace=self.namespace) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise BackendError(f"the Kubernetes API server is unreachable (to {what}): {exc}", status=503) from exc


class _Absent(Exception):  # noqa: N818 - a 404 on the way to the caller, not an error
    """The CronJob does not exist."""


def api_error(exc: ApiException, *, what: str, namespace: str) -> BackendError:
    """A refusal of the Kubernetes API as the error the API returns: 409 and 422 pass through, others are 503."""
    message = _server_message(exc)
    if exc.status == 403:
        return BackendError(
            f"the Kubernetes API refused to {what}: {message}. The API's ServiceAccount needs the "
            f"chart's Role (rbac.create: get, list, create, patch, delete on batch/cronjobs in namespace "
            f"{namespace}) bound to it", status=503)
    if exc.status in (409, 422):
        return BackendError(f"the Kubernetes API refused to {what}: {message}", status=exc.status)
    return BackendError(f"the Kubernetes API failed to {what} ({exc.status}): {message}", status=503)


def _server_message(exc: ApiException) -> str:
    """The `message` of the API server's Status object, else its reason."""
    try:
        status = json.loads(exc.body or "")
    except ValueError:
        status = None
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])
    return str(exc.reason or exc.status)


def _in_cluster_namespace() -> str:
    try:
        return IN_CLUSTER_NAMESPACE.read_text().strip()
    except OSError as exc:
        raise ValueError("CHAINYARD_KUBE_NAMESPACE is not set and this is not a pod (no service account "
                         f"namespace file {IN_CLUSTER_NAMESPACE})") from exc
