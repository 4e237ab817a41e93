"""Run the rendered containers' commands as a kubelet would, on this machine, and probe them as the chart says.

No container runtime here: each container's command runs as a local process with the environment the chart gives
it (ConfigMap envFrom + env), its volume mounts mapped to temporary directories, Service names and ports mapped to
loopback ones, and the downward API's pod name filled in. What this checks that rendering cannot: the commands and
flags exist, the probes' paths answer as the probes expect, the tokens file is read from the Secret's mount path,
Redis accepts the chart's flags, a worker stops on SIGTERM within its grace period.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest

from cli.stack import find_redis_server, free_port
from service.client import Client
from service.language.loader import load_file
from tests.deploy.chart import ROOT, component, container_env, one, pod_spec, render
from tests.deploy.fake_kube import chart_job_template, fake_kube, write_kubeconfig

pytestmark = pytest.mark.slow

TOKEN = "deploy-test-token"


class Pod:
    """One rendered container as a local process: mounts -> temporary directories, ports -> free loopback ports."""

    def __init__(self, objects: list[dict[str, Any]], kind: str, name: str, root: Path, redis_url: str | None) -> None:
        self.workload = component(objects, kind, name)
        self.spec = pod_spec(self.workload)
        self.container = self.spec["containers"][0]
        self.mounts = {PurePosixPath(m["mountPath"]): root / m["name"] for m in self.container.get("volumeMounts", [])}
        for directory in self.mounts.values():
            directory.mkdir(parents=True, exist_ok=True)
        for volume in self.spec.get("volumes", []):  # a ConfigMap volume holds one file per key, as the kubelet does
            if "configMap" in volume:
                for key, text in one(objects, "ConfigMap", volume["configMap"]["name"])["data"].items():
                    (root / volume["name"] / key).write_text(text)
        self.ports = {p["name"]: free_port() for p in self.container.get("ports", [])}
        self.by_number = {p["containerPort"]: self.ports[p["name"]] for p in self.container.get("ports", [])}
        env = container_env(objects, self.workload, self.container)
        if redis_url is not None:
            env["CHAINYARD_REDIS_URL"] = redis_url  # the Service's DNS name, as the cluster would resolve it
        self.env = {k: self._value(k, v) for k, v in env.items()}
        self.args = [self._value("", a) for a in self.container.get("args", [])]
        self.proc: subprocess.Popen[bytes] | None = None

    def _value(self, name: str, value: str) -> str:
        if value.startswith("<metadata.name of "):
            return f"{self.workload['metadata']['name']}-0"  # a StatefulSet pod's name
        if value.startswith("<metadata.namespace of "):
            return str(self.workload["metadata"]["namespace"])
        if value.isdigit() and int(value) in self.by_number:
            return str(self.by_number[int(value)])
        path = PurePosixPath(value)
        for mount, directory in self.mounts.items():
            if path == mount or mount in path.parents:
                return str(directory / path.relative_to(mount))
        return value

    def start(self, argv0: str, log: Path) -> None:
        env = {"PATH": os.environ["PATH"], **self.env}
        with log.open("wb") as out:
            self.proc = subprocess.Popen([argv0, *self.args], env=env, stdout=out, stderr=subprocess.STDOUT)

    def probe(self, name: str) -> int:
        """Status of an httpGet probe (0: no answer)."""
        action = self.container[name]["httpGet"]
        port = self.ports[action["port"]] if isinstance(action["port"], str) else self.by_number[action["port"]]
        try:
            return httpx.get(f"http://127.0.0.1:{port}{action['path']}", timeout=5).status_code
        except httpx.TransportError:
            return 0

    def wait_for(self, name: str, status: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.probe(name)) != status:
            assert self.proc is not None and self.proc.poll() is None, f"exited with {self.proc and self.proc.poll()}"
            assert time.monotonic() < deadline, f"{name}: {got}, expected {status}"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def chainyard() -> str:
    return str(Path(sys.executable).parent / "chainyard")


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    started: list[Pod] = []
    yield started
    for pod in started:
        pod.stop()


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    """The API pod's way to a Kubernetes API (it schedules refits as CronJobs): in a cluster its ServiceAccount
    token, here a kubeconfig for the fake API server of tests/deploy/fake_kube.py."""
    with fake_kube(namespace="chainyard", job_template=chart_job_template()) as (_, url):
        yield write_kubeconfig(tmp_path / "kubeconfig", url, namespace="chainyard")


def api_pod(root: Path, redis_url: str, kubeconfig: Path) -> Pod:
    api = Pod(render(), "Deployment", "api", root, redis_url)
    api.env["CHAINYARD_KUBECONFIG"] = str(kubeconfig)  # instead of the in-cluster configuration
    (root / "tokens" / "tokens").write_text(f"{TOKEN}:team-a\n")  # the Secret's file
    return api


@pytest.fixture
def redis(tmp_path: Path, pods: list[Pod]) -> Pod:
    """The chart's Redis container: the rendered redis-server flags, bound to loopback."""
    pod = Pod(render(), "StatefulSet", "redis", tmp_path / "redis", None)
    assert pod.container["command"] == ["redis-server"]
    pod.args += ["--bind", "127.0.0.1"]  # this machine's network rules: loopback only
    pods.append(pod)
    pod.start(find_redis_server(), tmp_path / "redis.log")
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as s:  # the liveness probe: tcpSocket on the redis port
            if s.connect_ex(("127.0.0.1", pod.ports["redis"])) == 0:
                break
        assert pod.proc is not None and pod.proc.poll() is None, (tmp_path / "redis.log").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return pod


def test_redis_keeps_its_append_only_file_on_its_volume(redis: Pod, tmp_path: Path) -> None:
    import redis as redis_client

    client = redis_client.Redis(port=redis.ports["redis"])
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    client.set("k", "v")
    assert client.config_get("dir")["dir"] == str(tmp_path / "redis" / "data")
    deadline = time.monotonic() + 10
    while not list((tmp_path / "redis" / "data").rglob("*.aof")):
        assert time.monotonic() < deadline, "no append-only file on the data volume"
        time.sleep(0.1)


def test_api_probes_and_tokens_file(redis: Pod, pods: list[Pod], tmp_path: Path, kubeconfig: Path) -> None:
    url = f"redis://127.0.0.1:{redis.ports['redis']}/0"
    api = api_pod(tmp_path / "api", url, kubeconfig)
    pods.append(api)
    api.start(chainyard(), tmp_path / "api.log")
    api.wait_for("startupProbe", 200)
    assert api.probe("livenessProbe") == 200
    api.wait_for("readinessProbe", 200)
    base = f"http://127.0.0.1:{api.ports['http']}"
    assert httpx.get(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.get(f"{base}/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{base}/metrics").status_code == 200
    redis.stop()  # Redis gone: not ready (traffic stops), still alive (no restart)
    api.wait_for("readinessProbe", 503)
    assert api.probe("livenessProbe") == 200


def test_worker_serves_its_liveness_probe_and_stops_on_sigterm_within_its_grace(redis: Pod, pods: list[Pod],
                                                                                tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{redis.ports['redis']}/0"
    worker = Pod(render(), "StatefulSet", "worker", tmp_path / "worker", url)
    pods.append(worker)
    worker.start(chainyard(), tmp_path / "worker.log")
    worker.wait_for("livenessProbe", 200, timeout=120)
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGTERM)
    grace = worker.spec["terminationGracePeriodSeconds"]
    assert worker.proc.wait(timeout=grace) == 0, (tmp_path / "worker.log").read_text()
    log = (tmp_path / "worker.log").read_text()
    assert f"worker chainyard-worker-0 serving (data dir {tmp_path / 'worker' / 'checkpoints'})" in log


def test_worker_stays_live_while_redis_is_down(redis: Pod, pods: list[Pod], tmp_path: Path) -> None:
    # a Redis outage must not make the kubelet restart every worker (they resume once Redis is back)
    url = f"redis://127.0.0.1:{redis.ports['redis']}/0"
    worker = Pod(render(), "StatefulSet", "worker", tmp_path / "worker", url)
    pods.append(worker)
    worker.start(chainyard(), tmp_path / "worker.log")
    worker.wait_for("livenessProbe", 200, timeout=120)
    redis.stop()
    for _ in range(3):
        assert worker.probe("livenessProbe") == 200
        time.sleep(0.5)


def test_a_sampling_worker_checkpoints_and_caches_compiles_on_its_volumes(redis: Pod, pods: list[Pod],
                                                                         tmp_path: Path, kubeconfig: Path) -> None:
    url = f"redis://127.0.0.1:{redis.ports['redis']}/0"
    api = api_pod(tmp_path / "api", url, kubeconfig)
    worker = Pod(render(), "StatefulSet", "worker", tmp_path / "worker", url)
    pods.extend([api, worker])
    api.start(chainyard(), tmp_path / "api.log")
    worker.start(chainyard(), tmp_path / "worker.log")
    api.wait_for("readinessProbe", 200)
    model = load_file(ROOT / "examples" / "eight_schools.yaml")
    with Client(f"http://127.0.0.1:{api.ports['http']}", TOKEN) as client:
        job = client.submit({"model": model, "sampler": {"chains": 1, "warmup": 20000, "draws": 20000, "seed": 1}})
        deadline = time.monotonic() + 180
        while client.get(job["id"])["chains"][0]["iteration"] == 0:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.2)
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=worker.spec["terminationGracePeriodSeconds"]) == 0
    blocks = list((tmp_path / "worker" / "checkpoints").rglob("block-*.npz"))
    assert blocks, (tmp_path / "worker.log").read_text()
    assert [p for p in (tmp_path / "worker" / "compile-cache").rglob("*") if p.is_file()], "compile cache is empty"


def test_refit_cronjob_command_succeeds(redis: Pod, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{redis.ports['redis']}/0"
    refit = Pod(render(), "CronJob", "refit", tmp_path / "refit", url)
    env = {"PATH": os.environ["PATH"], **refit.env}
    done = subprocess.run([chainyard(), *refit.args], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
