"""Kubernetes mode of schedules (service/priors/kube.py) against the fake API server of tests/deploy/fake_kube.py.

The official client, configured from a kubeconfig as `from_settings` does, talks HTTP to a loopback server that
answers the CronJob endpoints with the API server's codes and validates every applied CronJob (schemas of
Kubernetes 1.29-1.34, name, labels, the chart's refit template). Not a real API server: see its docstring.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from service.api.app import create_app
from service.client import ApiError, Client
from service.config import ApiSettings, Settings
from service.exceptions import BackendError
from service.priors.kube import MAX_NAME, KubernetesBackend, cronjob_name
from service.priors.schedule import Schedule
from tests.conftest import api_in_thread, settings_from
from tests.deploy.chart import component, render
from tests.deploy.fake_kube import FakeKube, chart_job_template, fake_kube, write_kubeconfig

NAMESPACE = "chainyard"
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NIGHTLY = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")


def template_text() -> str:
    """The file the API reads: the chart's ConfigMap value, as the kubelet mounts it."""
    text: str = component(render(), "ConfigMap", "refit-template")["data"]["job-template.yaml"]
    return text


def kube_settings(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch, **extra: str) -> Settings:
    template = tmp_path / "refit" / "job-template.yaml"
    template.parent.mkdir(exist_ok=True)
    template.write_text(template_text())
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, namespace=NAMESPACE)
    return settings_from({"CHAINYARD_SCHEDULER": "kubernetes", "CHAINYARD_KUBECONFIG": str(kubeconfig),
                          "CHAINYARD_KUBE_NAMESPACE": NAMESPACE, "CHAINYARD_REFIT_TEMPLATE_FILE": str(template),
                          **extra}, monkeypatch)


@pytest.fixture(scope="module")
def job_template() -> dict[str, Any]:
    return chart_job_template()


@pytest.fixture
def server(job_template: dict[str, Any]) -> Iterator[tuple[FakeKube, str]]:
    with fake_kube(namespace=NAMESPACE, job_template=job_template) as found:
        yield found


@pytest.fixture
def kube(server: tuple[FakeKube, str]) -> FakeKube:
    return server[0]


@pytest.fixture
def backend(server: tuple[FakeKube, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KubernetesBackend:
    return KubernetesBackend.from_settings(kube_settings(tmp_path, server[1], monkeypatch))


# -- apply, observed, delete, list -------------------------------------------------------------------------------------


def test_apply_creates_then_a_second_apply_changes_nothing(kube: FakeKube, backend: KubernetesBackend) -> None:
    backend.apply(tenant="team-a", prior="hospital-effects", schedule=NIGHTLY)
    name = backend.name(tenant="team-a", prior="hospital-effects")
    assert list(kube.cronjobs) == [name] and kube.codes == [201]
    [patch] = kube.requests
    assert patch.method == "PATCH" and patch.content_type == "application/apply-patch+yaml"
    assert patch.query["fieldManager"] == ["chainyard"] and patch.query["force"] == ["true"]
    first = kube.cronjobs[name]
    assert first["metadata"]["managedFields"][0]["manager"] == "chainyard"

    backend.apply(tenant="team-a", prior="hospital-effects", schedule=NIGHTLY)
    assert kube.codes == [201, 200]
    assert kube.requests[1].body == patch.body  # the same request: PUT of a schedule is idempotent
    assert kube.cronjobs[name] == first  # a no-op on the server: same resourceVersion, same object


def test_the_cronjob_runs_the_refit_of_this_prior_as_the_chart_says(kube: FakeKube,
                                                                    backend: KubernetesBackend) -> None:
    backend.apply(tenant="team-a", prior="hospital-effects", schedule=NIGHTLY)
    body = kube.requests[-1].body
    spec = body["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["suspend"]) == ("30 2 * * *", "Europe/Berlin", False)
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    pod = spec["jobTemplate"]["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["args"] == ["refit", "--tenant", "team-a", "--prior", "hospital-effects"]
    labels = body["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "chainyard" == pod["metadata"]["labels"][
        "app.kubernetes.io/instance"]
    assert labels["app.kubernetes.io/managed-by"] == "chainyard"
    assert body["metadata"]["annotations"] == {"chainyard.io/tenant": "team-a",
                                               "chainyard.io/prior": "hospital-effects"}


def test_apply_updates_what_changed_and_observed_reads_it_back(kube: FakeKube, backend: KubernetesBackend) -> None:
    assert backend.observed(tenant="team-a", prior="p") is None
    backend.apply(tenant="team-a", prior="p", schedule=NIGHTLY)
    assert backend.observed(tenant="team-a", prior="p") == NIGHTLY
    name = backend.name(tenant="team-a", prior="p")
    version = kube.cronjobs[name]["metadata"]["resourceVersion"]
    hourly = Schedule(cron="@hourly", timezone="America/New_York", suspend=True)
    backend.apply(tenant="team-a", prior="p", schedule=hourly)
    assert kube.codes[-1] == 200
    assert kube.cronjobs[name]["metadata"]["resourceVersion"] != version
    assert backend.observed(tenant="team-a", prior="p") == hourly
    assert list(kube.cronjobs) == [name]


def test_a_cronjob_edited_by_someone_else_is_taken_back(kube: FakeKube, backend: KubernetesBackend) -> None:
    backend.apply(tenant="team-a", prior="p", schedule=NIGHTLY)
    edited = kube.cronjobs[backend.name(tenant="team-a", prior="p")]
    edited["spec"]["schedule"] = "0 0 * * *"
    edited["metadata"]["managedFields"][0]["manager"] = "kubectl-edit"
    backend.apply(tenant="team-a", prior="p", schedule=NIGHTLY)  # forced: chainyard owns its fields
    assert backend.observed(tenant="team-a", prior="p") == NIGHTLY
    assert kube.cronjobs[backend.name(tenant="team-a", prior="p")]["metadata"]["managedFields"][0][
        "manager"] == "chainyard"


def test_observed_of_a_cronjob_without_time_zone_never_equals_a_schedule(kube: FakeKube,
                                                                         backend: KubernetesBackend) -> None:
    backend.apply(tenant="team-a", prior="p", schedule=NIGHTLY)
    del kube.cronjobs[backend.name(tenant="team-a", prior="p")]["spec"]["timeZone"]  # edited by hand
    observed = backend.observed(tenant="team-a", prior="p")
    assert observed == Schedule(cron="30 2 * * *", timezone="") and observed != NIGHTLY


def test_delete_removes_the_cronjob_and_an_absent_one_is_fine(kube: FakeKube, backend: KubernetesBackend) -> None:
    backend.apply(tenant="team-a", prior="p", schedule=NIGHTLY)
    backend.apply(tenant="team-a", prior="q", schedule=NIGHTLY)
    backend.delete(tenant="team-a", prior="p")
    assert list(kube.cronjobs) == [backend.name(tenant="team-a", prior="q")]
    assert kube.requests[-1].query["propagationPolicy"] == ["Background"]  # its Jobs go too
    backend.delete(tenant="team-a", prior="p")
    assert kube.codes[-2:] == [200, 404]
    assert backend.observed(tenant="team-a", prior="p") is None


def test_listed_lists_this_releases_schedules_only(kube: FakeKube, backend: KubernetesBackend) -> None:
    backend.apply(tenant="team-a", prior="p", schedule=NIGHTLY)
    backend.apply(tenant="team-b", prior="p", schedule=NIGHTLY)
    other = dict(kube.cronjobs[backend.name(tenant="team-a", prior="p")])
    other["metadata"] = {**other["metadata"], "name": "cy-refit-other",
                         "labels": {**other["metadata"]["labels"], "app.kubernetes.io/instance": "other"}}
    kube.cronjobs["cy-refit-other"] = other  # another release's, in the same namespace
    assert backend.listed() == {("team-a", "p"), ("team-b", "p")}
    selector = kube.requests[-1].query["labelSelector"][0]
    assert "app.kubernetes.io/instance=chainyard" in selector and "app.kubernetes.io/managed-by=chainyard" in selector


# -- names ------------------------------------------------------------------------------------------------------------

ALIKE = [  # pairs whose readable parts are the same
    (("a-b", "c"), ("a", "b-c")),
    (("Team", "x"), ("team", "x")),
    (("a.b", "c"), ("a_b", "c")),
    (("t" * 80, "p1"), ("t" * 80, "p2")),  # cut off before the prior
    (("équipe", "p"), ("-quipe", "p")),
]
ODD = [("team-a", "hospital-effects"), ("T" * 300, "P" * 300), ("___", "..."), ("日本", "事前分布"),
       ("a", "-"), ("UPPER", "Case.Prior_1")]


@pytest.mark.parametrize(("tenant", "prior"), ODD + [p for pair in ALIKE for p in pair])
def test_names_are_dns_labels_of_at_most_52_characters(tenant: str, prior: str) -> None:
    name = cronjob_name(release="chainyard", tenant=tenant, prior=prior)
    assert len(name) <= MAX_NAME == 52
    assert DNS_1123_LABEL.match(name), name
    assert name.startswith("cy-refit-")


def test_names_are_stable_readable_and_apart() -> None:
    # pinned: a renamed CronJob would orphan the old one on upgrade
    digest = hashlib.sha256(b"chainyard\0team-a\0hospital-effects").hexdigest()[:10]
    assert cronjob_name(release="chainyard", tenant="team-a", prior="hospital-effects") == \
        f"cy-refit-team-a-hospital-effects-{digest}"
    for one, other in ALIKE:
        assert cronjob_name(release="r", tenant=one[0], prior=one[1]) != \
            cronjob_name(release="r", tenant=other[0], prior=other[1])
    assert cronjob_name(release="a", tenant="t", prior="p") != cronjob_name(release="b", tenant="t", prior="p")
    assert cronjob_name(release="r", tenant="___", prior="...").startswith("cy-refit-")


def test_the_server_accepts_the_oddest_names(kube: FakeKube, backend: KubernetesBackend) -> None:
    for tenant, prior in ODD:
        backend.apply(tenant=tenant, prior=prior, schedule=NIGHTLY)
        assert backend.observed(tenant=tenant, prior=prior) == NIGHTLY
    assert len(kube.cronjobs) == len(ODD)
    assert backend.listed() == set(ODD)  # annotations carry what labels cannot


# -- errors -----------------------------------------------------------------------------------------------------------


def refused(backend: KubernetesBackend) -> BackendError:
    with pytest.raises(BackendError) as caught:
        backend.apply(tenant="team-a", prior="p", schedule=NIGHTLY)
    return caught.value


def test_forbidden_is_a_503_naming_the_role(kube: FakeKube, backend: KubernetesBackend) -> None:
    kube.fail("PATCH", 403, 'cronjobs.batch "x" is forbidden: User "system:serviceaccount:chainyard:chainyard" '
                            'cannot patch resource "cronjobs" in API group "batch"')
    error = refused(backend)
    assert error.status == 503
    assert "cannot patch resource" in str(error)
    assert "Role" in str(error) and "get, list, create, patch, delete on batch/cronjobs in namespace chainyard" \
        in str(error)


@pytest.mark.parametrize("status", [409, 422])
def test_conflict_and_invalid_keep_their_status_and_the_servers_message(kube: FakeKube, backend: KubernetesBackend,
                                                                        status: int) -> None:
    kube.fail("PATCH", status, f"the server says {status}")
    error = refused(backend)
    assert error.status == status
    assert f"the server says {status}" in str(error)


@pytest.mark.parametrize("status", [401, 500])
def test_other_refusals_are_503(kube: FakeKube, backend: KubernetesBackend, status: int) -> None:
    kube.fail("GET", status, "nope")
    with pytest.raises(BackendError) as caught:
        backend.observed(tenant="team-a", prior="p")
    assert caught.value.status == 503 and f"({status})" in str(caught.value)


def test_a_namespace_the_server_does_not_have_is_a_503_not_absent(backend: KubernetesBackend) -> None:
    elsewhere = KubernetesBackend(api=backend.api, namespace="elsewhere", job_template=backend.job_template)
    with pytest.raises(BackendError, match=r"\(404\)") as caught:
        elsewhere.apply(tenant="team-a", prior="p", schedule=NIGHTLY)
    assert caught.value.status == 503
    with pytest.raises(BackendError, match=r"\(404\)"):
        elsewhere.listed()


def test_delete_and_list_errors_are_mapped_too(kube: FakeKube, backend: KubernetesBackend) -> None:
    kube.fail("DELETE", 403, "forbidden")
    with pytest.raises(BackendError, match="Role") as caught:
        backend.delete(tenant="team-a", prior="p")
    assert caught.value.status == 503
    kube.fail("GET", 403, "forbidden")
    with pytest.raises(BackendError, match="Role"):
        backend.listed()


def test_an_unreachable_server_is_a_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    backend = KubernetesBackend.from_settings(kube_settings(tmp_path, url, monkeypatch))
    error = refused(backend)
    assert error.status == 503 and "unreachable" in str(error)
    with pytest.raises(BackendError, match="unreachable") as caught:
        backend.observed(tenant="t", prior="p")
    assert caught.value.status == 503


def test_a_silent_server_is_a_503_after_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:  # accepts connections (the backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        configured = KubernetesBackend.from_settings(kube_settings(tmp_path, url, monkeypatch))
        backend = KubernetesBackend(api=configured.api, namespace=NAMESPACE, job_template=configured.job_template,
                                    timeout=(1.0, 0.5))
        started = time.monotonic()
        with pytest.raises(BackendError) as caught:
            backend.observed(tenant="t", prior="p")
        assert time.monotonic() - started < 5
    assert caught.value.status == 503 and "unreachable" in str(caught.value)


# -- what the fake server refuses (so that its acceptance above means something) ----------------------------------


def test_the_server_refuses_a_cronjob_the_schemas_refuse(kube: FakeKube, backend: KubernetesBackend) -> None:
    backend.job_template["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # misspelt
    error = refused(backend)
    assert error.status == 422
    assert "Kubernetes 1.29: spec.jobTemplate.spec.template.spec.containers.0: Additional properties" in str(error)
    assert kube.cronjobs == {}


def test_the_server_refuses_a_template_that_is_not_the_charts(kube: FakeKube, backend: KubernetesBackend) -> None:
    backend.job_template["spec"]["backoffLimit"] = 7  # valid Kubernetes, but not what the chart rendered
    error = refused(backend)
    assert error.status == 422 and "not the chart's refit template" in str(error)


def test_the_server_refuses_a_long_name_and_missing_labels(kube: FakeKube, backend: KubernetesBackend) -> None:
    body = backend.cronjob(tenant="t", prior="p", schedule=NIGHTLY)
    body["metadata"]["name"] = "cy-refit-" + "x" * 44
    del body["metadata"]["labels"]["app.kubernetes.io/instance"]
    problems = kube.problems(body, NAMESPACE, body["metadata"]["name"])
    assert any("at most 52 characters" in p for p in problems)
    assert "metadata.labels: app.kubernetes.io/instance is missing" in problems


# -- configuration ----------------------------------------------------------------------------------------------------


def test_from_settings_needs_the_template_and_a_namespace(server: tuple[FakeKube, str], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    settings = kube_settings(tmp_path, server[1], monkeypatch)
    with pytest.raises(ValueError, match="CHAINYARD_REFIT_TEMPLATE_FILE"):
        KubernetesBackend.from_settings(settings.model_copy(update={"refit_template_file": None}))
    monkeypatch.setattr("service.priors.kube.IN_CLUSTER_NAMESPACE", tmp_path / "no-such-file")
    with pytest.raises(ValueError, match="CHAINYARD_KUBE_NAMESPACE"):
        KubernetesBackend.from_settings(settings.model_copy(update={"kube_namespace": None}))
    (tmp_path / "bad.yaml").write_text("spec: {}\n")
    with pytest.raises(ValueError, match="not a job template"):
        KubernetesBackend.from_settings(settings.model_copy(update={"refit_template_file": tmp_path / "bad.yaml"}))


def test_backend_for_builds_it_in_kubernetes_mode(server: tuple[FakeKube, str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from service.priors.backends import backend_for

    backend = backend_for(kube_settings(tmp_path, server[1], monkeypatch))
    assert isinstance(backend, KubernetesBackend) and backend.kind == "kubernetes"
    backend.apply(tenant="t", prior="p", schedule=NIGHTLY)
    assert server[0].codes == [201]


# -- through the API: PUT/GET/DELETE /v1/priors/{name}/schedule in Kubernetes mode ----------------------------------


@pytest.fixture
def api(server: tuple[FakeKube, str], redis_server: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The API (uvicorn in a thread, lifespan on: it reconciles at start) on a real Redis, in Kubernetes mode."""
    Redis.from_url(redis_server).flushall()
    kube_settings(tmp_path, server[1], monkeypatch, CHAINYARD_REDIS_URL=redis_server)  # the environment
    app = create_app(ApiSettings(tokens={"tok-alice": "alice"}))
    with api_in_thread(app, lifespan="on") as url:
        yield url


def test_schedule_routes_manage_the_cronjob(kube: FakeKube, api: str) -> None:
    with Client(api, "tok-alice") as alice:
        alice.put_dataset("obs", {"y": "float"})
        alice.append_rows("obs", columns={"y": [0.1, -0.3, 1.2]})
        alice.put_prior("normal", {"model": {"spec": 1, "data": {"sigma": 1.0}, "params": {"mu": "Normal(0, 5)"},
                                             "observe": {"y": "Normal(mu, sigma)"}},
                                   "data_from": {"dataset": "obs"}, "export": {"params": ["mu"]}})
        shown = alice.schedule_prior("normal", "30 2 * * *", "Europe/Berlin")
        assert (shown["backend"], shown["in_sync"]) == ("kubernetes", True)
        [name] = kube.cronjobs
        cronjob = kube.cronjobs[name]
        assert (cronjob["spec"]["schedule"], cronjob["spec"]["timeZone"]) == ("30 2 * * *", "Europe/Berlin")
        assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] == [
            "refit", "--tenant", "alice", "--prior", "normal"]
        alice.schedule_prior("normal", "30 2 * * *", "Europe/Berlin")
        assert kube.cronjobs[name] == cronjob  # the same PUT again: nothing changed in the cluster

        kube.cronjobs.clear()  # deleted by hand: the next GET puts it back
        shown = alice.prior_schedule("normal")
        assert shown["in_sync"] is True and "re-applied" in shown["note"]
        assert kube.cronjobs[name]["spec"]["schedule"] == "30 2 * * *"

        kube.fail("PATCH", 403, 'cronjobs.batch is forbidden: User "system:serviceaccount:chainyard:chainyard" '
                                'cannot patch resource "cronjobs"')
        with pytest.raises(ApiError) as caught:
            alice.schedule_prior("normal", "@hourly", "UTC")
        assert caught.value.status == 503 and "Role" in caught.value.message
        assert alice.prior_schedule("normal")["cron"] == "30 2 * * *"  # Redis unchanged, as the cluster
        assert kube.cronjobs[name]["spec"]["schedule"] == "30 2 * * *"

        alice.unschedule_prior("normal")
        assert kube.cronjobs == {}
