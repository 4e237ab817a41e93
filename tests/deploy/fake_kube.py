"""A stand-in for the Kubernetes API server's CronJob endpoints in one namespace, for testing the API's client.

Not a real API server (none can run on these machines): an HTTP server on loopback that answers what
service/priors/kube.py calls, with the API server's status codes and Status bodies:

    PATCH  /apis/batch/v1/namespaces/{ns}/cronjobs/{name}   server-side apply: 201 created, 200 updated
    GET    /apis/batch/v1/namespaces/{ns}/cronjobs/{name}   200, 404
    GET    /apis/batch/v1/namespaces/{ns}/cronjobs          200 (labelSelector: equality terms)
    DELETE /apis/batch/v1/namespaces/{ns}/cronjobs/{name}   200, 404

Every applied body is checked before it is stored, and refused with a 422 naming each problem: against the
Kubernetes 1.29-1.34 OpenAPI schemas with kubernetes-validate --strict (unknown fields are errors), a name that
is a DNS-1123 label of at most 52 characters, the labels the chart's NetworkPolicy and chainyard's listing
select on, and a job template equal to the chart's rendered refit template but for the container's args.
What it does not do: merge fields per manager (an apply replaces the object; without `force` any object of
another manager conflicts), defaulting, admission, RBAC (a 403 is injected), watches, or running anything.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import yaml

from tests.deploy.chart import component, render

KUBERNETES_VERSIONS = ["1.29", "1.30", "1.31", "1.32", "1.33", "1.34"]
TOKEN = "fake-kube-token"
PATH = re.compile(r"^/apis/batch/v1/namespaces/(?P<namespace>[^/]+)/cronjobs(?:/(?P<name>[^/]+))?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
REQUIRED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                   "app.kubernetes.io/managed-by")
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
           415: "UnsupportedMediaType", 422: "Invalid", 500: "InternalError"}


def chart_job_template(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The refit job template the chart renders into its ConfigMap (tests/deploy/chart.py: Helm's own code)."""
    configmap = component(render(values), "ConfigMap", "refit-template")
    template: dict[str, Any] = yaml.safe_load(configmap["data"]["job-template.yaml"])
    return template


def schema_problems(obj: dict[str, Any]) -> list[str]:
    """kubernetes-validate --strict for every supported Kubernetes version."""
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"Kubernetes {version}: {'.'.join(map(str, error.path))}: {error.message}")
    return problems


@dataclass
class Request:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    body: Any


@dataclass
class FakeKube:
    """The server's state: stored CronJobs, what it received, failures to inject."""

    namespace: str
    job_template: dict[str, Any]
    """The chart's rendered refit job template every applied CronJob must carry (but for the args)."""
    cronjobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    """The status code of each answer, in order."""
    failures: list[tuple[str, int, str]] = field(default_factory=list)
    """(method, status, message) to answer instead of serving, first match first, each once."""
    versions: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, method: str, status: int, message: str = "injected") -> None:
        self.failures.append((method, status, message))

    def take_failure(self, method: str) -> tuple[int, str] | None:
        for i, (m, status, message) in enumerate(self.failures):
            if m == method:
                del self.failures[i]
                return status, message
        return None

    def problems(self, body: Any, namespace: str, name: str) -> list[str]:
        """Why the API server (or the chart's policies) would refuse this applied body; [] if none."""
        if not isinstance(body, dict):
            return ["the body is not an object"]
        problems = schema_problems(body)
        metadata = body.get("metadata", {})
        if body.get("apiVersion") != "batch/v1" or body.get("kind") != "CronJob":
            problems.append("not a batch/v1 CronJob")
        if metadata.get("name") != name or metadata.get("namespace", namespace) != namespace:
            problems.append("metadata.name/namespace differ from the URL's")
        if len(name) > 52 or not DNS_LABEL.match(name):
            problems.append(f"metadata.name: Invalid value: {name!r}: must be a DNS-1123 label of at most 52 "
                            "characters")
        labels = metadata.get("labels", {})
        for key in REQUIRED_LABELS:
            if key not in labels:
                problems.append(f"metadata.labels: {key} is missing")
        if labels.get("app.kubernetes.io/managed-by") != "chainyard":
            problems.append("metadata.labels: app.kubernetes.io/managed-by is not chainyard")
        template_labels = self.job_template["spec"]["template"]["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance"):
            if labels.get(key) != template_labels[key]:
                problems.append(f"metadata.labels: {key} is not the release's")
        annotations = metadata.get("annotations", {})
        expected = copy.deepcopy(self.job_template)
        refit = next(c for c in expected["spec"]["template"]["spec"]["containers"] if c["name"] == "refit")
        refit["args"] = ["refit", "--tenant", annotations.get("chainyard.io/tenant"), "--prior",
                         annotations.get("chainyard.io/prior")]
        if body.get("spec", {}).get("jobTemplate") != expected:
            problems.append("spec.jobTemplate is not the chart's refit template with this prior's args")
        return problems

    def apply(self, namespace: str, name: str, body: Any, manager: str | None,
              force: bool) -> tuple[int, dict[str, Any]]:
        problems = self.problems(body, namespace, name)
        if problems:
            return 422, status_body(422, f'CronJob.batch "{name}" is invalid: ' + "; ".join(problems))
        old = self.cronjobs.get(name)
        owners = {f["manager"] for f in (old or {}).get("metadata", {}).get("managedFields", [])}
        if old is not None and not force and owners - {manager}:
            # the real server compares fields; here any other manager's object conflicts with a non-forced apply
            return 409, status_body(409, f"Apply failed with 1 conflict: conflict with {sorted(owners)[0]!r}")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self.lock:
            old = self.cronjobs.get(name)
            stored = copy.deepcopy(body)
            metadata = stored["metadata"]
            metadata["namespace"] = namespace
            managed = [{"manager": manager, "operation": "Apply", "apiVersion": "batch/v1", "time": now,
                        "fieldsType": "FieldsV1", "fieldsV1": {}}]
            if old is None:
                metadata |= {"uid": str(uuid.uuid4()), "creationTimestamp": now, "generation": 1,
                             "resourceVersion": str(next(self.versions)), "managedFields": managed}
            else:
                # an apply that changes nothing is a no-op: same resourceVersion, same object
                changed = stored["spec"] != old["spec"] or any(
                    metadata.get(k) != old["metadata"].get(k) for k in ("labels", "annotations"))
                metadata |= {k: old["metadata"][k] for k in ("uid", "creationTimestamp")}
                metadata["generation"] = old["metadata"]["generation"] + (stored["spec"] != old["spec"])
                metadata["resourceVersion"] = str(next(self.versions)) if changed else old["metadata"][
                    "resourceVersion"]
                metadata["managedFields"] = managed if changed else old["metadata"]["managedFields"]
            stored["status"] = {}
            self.cronjobs[name] = stored
        return (201 if old is None else 200), stored


def status_body(code: int, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A meta/v1 Status, as the API server answers errors (and deletes)."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success" if code < 300 else "Failure", "code": code}
    if code >= 300:
        body |= {"message": message, "reason": REASONS.get(code, "Unknown")}
    if details:
        body["details"] = details
    return body


def selects(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selectors (`a=b,c=d`), the only kind the client here sends."""
    terms = [t for t in selector.split(",") if t]
    return all(labels.get(k) == v for k, _, v in (t.partition("=") for t in terms))


def handler(state: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def answer(self, code: int, body: dict[str, Any]) -> None:
            state.codes.append(code)
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def serve(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type")
            body = yaml.safe_load(raw) if raw else None  # JSON is YAML: apply-patch+yaml bodies are either
            state.requests.append(Request(self.command, url.path, query, content_type, body))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self.answer(401, status_body(401, "Unauthorized"))
            match = PATH.match(url.path)
            if not match or match["namespace"] != state.namespace:
                return self.answer(404, status_body(404, "the server could not find the requested resource"))
            name = match["name"]
            injected = state.take_failure(self.command)
            if injected:
                return self.answer(injected[0], status_body(*injected))
            if self.command == "PATCH" and name:
                if content_type != "application/apply-patch+yaml":
                    return self.answer(415, status_body(415, f"the body of the request was in an unknown format "
                                                             f"- accepted media types include: "
                                                             f"application/apply-patch+yaml ({content_type})"))
                manager = query.get("fieldManager", [None])[0]
                if not manager:
                    return self.answer(422, status_body(422, "PatchOptions.meta.k8s.io \"\" is invalid: "
                                                             "fieldManager: Required value: is required for apply "
                                                             "patch"))
                force = query.get("force", ["false"])[0] == "true"
                return self.answer(*state.apply(match["namespace"], name, body, manager, force))
            if self.command == "GET" and name:
                found = state.cronjobs.get(name)
                if found is None:
                    return self.answer(404, status_body(404, f'cronjobs.batch "{name}" not found'))
                return self.answer(200, found)
            if self.command == "GET":
                selector = query.get("labelSelector", [""])[0]
                items = [o for o in state.cronjobs.values() if selects(selector, o["metadata"].get("labels", {}))]
                return self.answer(200, {"apiVersion": "batch/v1", "kind": "CronJobList",
                                         "metadata": {"resourceVersion": "1"}, "items": items})
            if self.command == "DELETE" and name:
                with state.lock:
                    gone = state.cronjobs.pop(name, None)
                if gone is None:
                    return self.answer(404, status_body(404, f'cronjobs.batch "{name}" not found'))
                return self.answer(200, status_body(200, "", {"name": name, "group": "batch", "kind": "cronjobs",
                                                               "uid": gone["metadata"]["uid"]}))
            return self.answer(405, status_body(405, "method not allowed"))

        do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = serve  # noqa: N815 - http.server's names

    return Handler


@contextmanager
def fake_kube(*, namespace: str, job_template: dict[str, Any]) -> Iterator[tuple[FakeKube, str]]:
    """The fake API server on a free loopback port: its state and its URL."""
    state = FakeKube(namespace=namespace, job_template=job_template)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def write_kubeconfig(path: Path, server: str, *, namespace: str, token: str = TOKEN) -> Path:
    """A kubeconfig with one context: this server over plain http, a bearer token."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "chainyard", "user": {"token": token}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "chainyard", "namespace": namespace}}],
    }))
    return path
