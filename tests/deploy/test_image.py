"""The image, for real: built by tools/image/build.sh (a debootstrap base, no Docker Hub) and run by a Docker engine.

Each chart container runs from the image as a kubelet would start it: the rendered args and environment (ConfigMap
envFrom + env), the pod's user and group, a read-only root filesystem, all capabilities dropped, no privilege
escalation, the CPU and memory limits, and its volume mounts: emptyDir -> tmpfs, ConfigMap/Secret volumes ->
read-only bind mounts of their files, volumeClaimTemplates -> host directories group-owned by the fsGroup.
Networking is this machine's: every container uses `--network host` (loopback only; no bridge network), so the
chart's container ports are mapped to free loopback ports in args and environment, and Redis is a redis-server
on a loopback port. The API schedules refits through the fake Kubernetes API of tests/deploy/fake_kube.py (a
kubeconfig mounted instead of the in-cluster ServiceAccount); the CronJob it applies is then run as a container.

Without root, docker.io and debootstrap these tests skip, unless CHAINYARD_IMAGE_TESTS=required (CI: .ci/run).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from redis import Redis

from cli.stack import free_port, start_redis
from service import keys
from service.client import Client
from service.codec import unpack
from service.jobs import blobs
from service.language.loader import load_file
from tests.deploy.chart import NAMESPACE, ROOT, component, container_env, one, pod_spec, render
from tests.deploy.fake_kube import FakeKube, chart_job_template, fake_kube, write_kubeconfig

pytestmark = pytest.mark.slow

IMAGE = os.environ.get("CHAINYARD_IMAGE", "chainyard:local")
BUILD = ROOT / "tools" / "image" / "build.sh"
TOKEN, TENANT = "image-test-token", "team-a"
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stdout}{done.stderr}"
    return done


@dataclass(frozen=True)
class Built:
    tag: str
    size_bytes: int
    build_seconds: int
    report: str


@pytest.fixture(scope="session")
def image() -> Built:
    """The image of this tree, built (or brought up to date, layers cached) by tools/image/build.sh."""
    missing = [tool for tool in ("dockerd", "debootstrap") if not shutil.which(tool)]
    if missing or os.geteuid() != 0:
        why = f"needs root and {', '.join(missing) or 'a Docker engine'} (.ci/run installs docker.io, debootstrap)"
        if os.environ.get("CHAINYARD_IMAGE_TESTS") == "required":
            pytest.fail(why)
        pytest.skip(why)
    started = time.monotonic()
    done = subprocess.run([str(BUILD), IMAGE], capture_output=True, text=True, timeout=2400, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-6000:]
    report = done.stdout.strip().splitlines()[-1]
    fields = dict(part.split("=", 1) for part in report.split()[2:])
    print(f"\n{report} (fixture: {time.monotonic() - started:.0f} s)")
    return Built(tag=IMAGE, size_bytes=int(fields["size_bytes"]), build_seconds=int(fields["build_seconds"]),
                 report=report)


def quantity(value: str) -> str:
    """A Kubernetes memory quantity as docker's (bytes)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return str(int(float(value.removesuffix(suffix)) * factor))
    return value


def cpus(value: str) -> str:
    return str(int(value.removesuffix("m")) / 1000) if value.endswith("m") else value


class Container:
    """One rendered chart container, run from the image with the pod's settings (see the module docstring)."""

    def __init__(self, objects: list[dict[str, Any]], workload: dict[str, Any], root: Path, *, image: str,
                 pod: str, redis_url: str, prefix: str) -> None:
        self.spec = pod_spec(workload)
        self.container = self.spec["containers"][0]
        self.pod, self.name, self.root, self.image = pod, f"{prefix}-{pod}", root, image
        self.grace = int(self.spec.get("terminationGracePeriodSeconds", 30))
        self.ports = {p["name"]: free_port() for p in self.container.get("ports", [])}
        by_number = {str(p["containerPort"]): str(self.ports[p["name"]]) for p in self.container.get("ports", [])}
        env = container_env(objects, workload, self.container) | {"CHAINYARD_REDIS_URL": redis_url}
        placeholders = {f"<metadata.name of {workload['metadata']['name']}>": pod,
                        f"<metadata.namespace of {workload['metadata']['name']}>": NAMESPACE}
        self.env = {k: by_number.get(v, placeholders.get(v, v)) for k, v in env.items()}
        assert not [v for v in self.env.values() if v.startswith("<")], self.env
        self.args = [by_number.get(a, a) for a in self.container.get("args", [])]
        self.options = self._security() + self._resources() + self._mounts(objects)

    def _security(self) -> list[str]:
        pod, own = self.spec.get("securityContext", {}), self.container.get("securityContext", {})
        options = ["--user", f"{pod['runAsUser']}:{pod['runAsGroup']}"]
        if "fsGroup" in pod:
            options += ["--group-add", str(pod["fsGroup"])]
        if own.get("readOnlyRootFilesystem"):
            options.append("--read-only")
        if own.get("allowPrivilegeEscalation") is False:
            options += ["--security-opt", "no-new-privileges"]
        options += [f"--cap-drop={cap}" for cap in own.get("capabilities", {}).get("drop", [])]
        return options

    def _resources(self) -> list[str]:
        limits = self.container.get("resources", {}).get("limits", {})
        return ([f"--memory={quantity(limits['memory'])}"] if "memory" in limits else []) + (
            [f"--cpus={cpus(str(limits['cpu']))}"] if "cpu" in limits else [])

    def _mounts(self, objects: list[dict[str, Any]]) -> list[str]:
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        gid = self.spec.get("securityContext", {}).get("fsGroup")
        options = []
        for mount in self.container.get("volumeMounts", []):
            volume, path = volumes.get(mount["name"]), mount["mountPath"]
            host = self.root / mount["name"]
            if volume is not None and "emptyDir" in volume:
                size = quantity(volume["emptyDir"].get("sizeLimit", "64Mi"))
                options += ["--tmpfs", f"{path}:rw,nosuid,nodev,mode=1777,size={size}"]
                continue
            host.mkdir(parents=True, exist_ok=True)
            if volume is not None and "configMap" in volume:  # one file per key, as the kubelet writes them
                for key, text in one(objects, "ConfigMap", volume["configMap"]["name"])["data"].items():
                    (host / key).write_text(text)
            if volume is None and gid is not None:  # a volumeClaimTemplate: the kubelet applies the fsGroup
                os.chown(host, 0, gid)
                host.chmod(0o2775)
            readonly = ",readonly" if mount.get("readOnly") else ""
            options += ["--mount", f"type=bind,source={host},target={path}{readonly}"]
        return options

    def mount(self, path: str, host: Path) -> None:
        """An extra read-only mount (the kubeconfig that stands in for the in-cluster ServiceAccount)."""
        self.options += ["--mount", f"type=bind,source={host},target={path},readonly"]

    def start(self) -> None:
        env = [f"--env={k}={v}" for k, v in sorted(self.env.items())]
        docker("run", "--detach", "--name", self.name, "--hostname", self.pod, "--network", "host",
               *self.options, *env, self.image, *self.args)

    def url(self, port: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    def probe(self, name: str) -> int:
        action = self.container[name]["httpGet"]
        port = self.ports[action["port"]] if isinstance(action["port"], str) else next(
            self.ports[p["name"]] for p in self.container["ports"] if p["containerPort"] == action["port"])
        try:
            return httpx.get(f"http://127.0.0.1:{port}{action['path']}", timeout=5).status_code
        except httpx.TransportError:
            return 0

    def wait_for(self, probe: str, status: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.probe(probe)) != status:
            assert self.running(), f"{self.name} exited: {self.logs()}"
            assert time.monotonic() < deadline, f"{probe}: {got}; {self.logs()}"
            time.sleep(0.3)

    def running(self) -> bool:
        done = docker("inspect", "-f", "{{.State.Running}}", self.name, check=False)
        return done.stdout.strip() == "true"

    def exit_code(self, timeout: float) -> int:
        return int(docker("wait", self.name, timeout=timeout).stdout.strip())

    def logs(self) -> str:
        done = docker("logs", "--tail", "60", self.name, check=False)
        return (done.stdout + done.stderr)[-4000:]

    def remove(self) -> None:
        docker("rm", "--force", self.name, check=False)


@dataclass
class Deployment:
    objects: list[dict[str, Any]]
    root: Path
    image: str
    prefix: str
    redis_url: str
    kube: FakeKube
    kubeconfig: Path
    api: Container
    workers: dict[str, Container]
    others: list[Container]

    def worker(self, pod: str) -> Container:
        workload = component(self.objects, "StatefulSet", "worker")
        worker = Container(self.objects, workload, self.root / pod, image=self.image, pod=pod,
                           redis_url=self.redis_url, prefix=self.prefix)
        self.workers[pod] = worker
        return worker

    def client(self) -> Client:
        return Client(self.api.url("http"), TOKEN)


@pytest.fixture(scope="module")
def deployment(image: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Redis on loopback, the fake Kubernetes API, the API container and two worker containers."""
    root = tmp_path_factory.mktemp("image")
    objects = render()
    port = free_port()
    redis = start_redis(root / "redis", port, root / "redis.log")
    prefix = f"cy-{uuid.uuid4().hex[:8]}"
    with fake_kube(namespace=NAMESPACE, job_template=chart_job_template()) as (kube, kube_url):
        (root / "kube").mkdir()
        kubeconfig = write_kubeconfig(root / "kube" / "config", kube_url, namespace=NAMESPACE)
        url = f"redis://127.0.0.1:{port}/0"
        api = Container(objects, component(objects, "Deployment", "api"), root / "api", image=image.tag,
                        pod="chainyard-api", redis_url=url, prefix=prefix)
        (root / "api" / "tokens" / "tokens").write_text(f"{TOKEN}:{TENANT}\n")  # the Secret's one key
        api.mount("/etc/chainyard/kube", kubeconfig.parent)
        api.env["CHAINYARD_KUBECONFIG"] = "/etc/chainyard/kube/config"
        kubeconfig.parent.chmod(0o755)
        kubeconfig.chmod(0o644)
        (root / "api" / "tokens" / "tokens").chmod(0o644)
        deployment = Deployment(objects=objects, root=root, image=image.tag, prefix=prefix, redis_url=url,
                                kube=kube, kubeconfig=kubeconfig, api=api, workers={}, others=[])
        try:
            api.start()
            for pod in ("chainyard-worker-0", "chainyard-worker-1"):
                deployment.worker(pod).start()
            api.wait_for("readinessProbe", 200)
            for worker in deployment.workers.values():
                worker.wait_for("livenessProbe", 200, timeout=180)
            yield deployment
        finally:
            for container in [api, *deployment.workers.values(), *deployment.others]:
                container.remove()
            redis.terminate()
            redis.wait()


def finished(client: Client, job_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := client.get(job_id))["state"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


def draws(redis: Redis, job_id: str) -> dict[str, np.ndarray]:
    return unpack(blobs.read(redis, keys.result_file(job_id, "draws")) or b"")


def chain_field(redis: Redis, job_id: str, chain: int, name: str) -> str:
    value = redis.hget(keys.chain(job_id, chain), name)
    return value.decode() if isinstance(value, bytes) else str(value or "")


def test_the_image_runs_as_10001_on_a_read_only_root(image: Built) -> None:
    config = docker("image", "inspect", "-f", "{{.Config.User}} {{json .Config.Entrypoint}}", image.tag).stdout
    assert config.split() == ["10001:10001", '["chainyard"]']
    probe = ("id -u; id -g; touch /opt/chainyard/x 2>/dev/null && echo root-writable || echo root-read-only;"
             " touch /tmp/x && echo tmp-writable")
    done = docker("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", "--entrypoint", "/bin/sh",
                  image.tag, "-c", probe)
    assert done.stdout.split() == ["10001", "10001", "root-read-only", "tmp-writable"]
    help_text = docker("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", image.tag, "--help")
    assert all(command in help_text.stdout for command in ("api", "worker", "refit"))
    assert image.size_bytes < 2 * 2**30  # JAX and its dependencies: about a gigabyte


def test_api_and_two_workers_serve_a_job(deployment: Deployment) -> None:
    model = load_file(ROOT / "examples" / "eight_schools.yaml")
    with deployment.client() as client:
        job = client.submit({"model": model, "sampler": {"chains": 2, "warmup": 300, "draws": 300, "seed": 7}})
        done = finished(client, job["id"])
        assert done["state"] == "succeeded", done
        summary = client.summary(job["id"])
    assert {row["variable"] for row in summary["variables"]} >= {"mu", "tau"}
    for pod, worker in deployment.workers.items():
        assert worker.running(), worker.logs()
        assert f"worker {pod} serving (data dir /data)" in worker.logs()


def test_sigterm_checkpoints_exits_in_grace_and_the_same_name_resumes_bit_identically(
        deployment: Deployment) -> None:
    redis = Redis.from_url(deployment.redis_url)
    model = load_file(ROOT / "examples" / "eight_schools.yaml")
    # long enough that a chain is part-way when the signal lands: eight schools runs ~40k iterations a second, and
    # a block is a second of sampling (at 1500 + 6000 a chain once finished between the poll and the signal)
    doc = {"model": model, "sampler": {"chains": 2, "warmup": 1500, "draws": 150_000, "seed": 34}}
    pod = "chainyard-worker-0"
    worker = deployment.workers[pod]
    with deployment.client() as client:
        job = client.submit(doc)
        # wait for a chain of worker-0's to be part-way through
        deadline = time.monotonic() + 300
        while True:
            mine = [c for c in (0, 1) if chain_field(redis, job["id"], c, "worker") == pod
                    and int(chain_field(redis, job["id"], c, "iteration") or 0) >= 200]
            if mine:
                break
            assert client.get(job["id"])["state"] != "succeeded", "the job ended before worker-0 ran a chain"
            assert time.monotonic() < deadline, worker.logs()
            time.sleep(0.05)
        chain = mine[0]
        started = time.monotonic()
        docker("kill", "--signal", "TERM", worker.name)
        assert worker.exit_code(timeout=worker.grace) == 0, worker.logs()
        assert time.monotonic() - started < worker.grace
        assert f"worker {pod} stopped" in worker.logs()
        stopped_at = int(chain_field(redis, job["id"], chain, "iteration"))
        assert stopped_at < 151_500 and client.get(job["id"])["state"] == "running"
        volume = deployment.root / pod / "checkpoints" / "jobs" / job["id"] / f"chain-{chain}"
        assert sorted(volume.glob("block-*.npz")), f"no checkpoint on the volume: {worker.logs()}"
        worker.remove()
        # the StatefulSet's replacement: same pod name, same volumes, a new container
        replacement = deployment.worker(pod)
        replacement.start()
        seen, deadline = [], time.monotonic() + 600
        while (job_state := client.get(job["id"])["state"]) == "running":
            assert time.monotonic() < deadline, replacement.logs()
            seen.append(int(chain_field(redis, job["id"], chain, "iteration") or 0))
            time.sleep(0.1)
        assert job_state == "succeeded", replacement.logs()
        assert seen and min(seen) >= stopped_at  # resumed from the checkpoint, not started over
        assert chain_field(redis, job["id"], chain, "worker") == pod
        # the same job uninterrupted, on the same image
        again = client.submit(doc)
        assert finished(client, again["id"])["state"] == "succeeded"
    got, want = draws(redis, job["id"]), draws(redis, again["id"])
    assert set(want) == set(got) and want
    for name in want:
        assert np.array_equal(got[name], want[name]), name


def test_the_refit_container_publishes_a_prior_version(deployment: Deployment) -> None:
    rng = np.random.default_rng(20261202)
    model = {"spec": 1, "data": {"sigma": 2.0}, "params": {"mu": "Normal(0, 10)"},
             "observe": {"y": "Normal(mu, sigma)"}}
    with deployment.client() as client:
        client.put_dataset("obs", {"y": "float"})
        client.append_rows("obs", columns={"y": rng.normal(1.5, 2.0, size=40).round(6).tolist()})
        client.put_prior("normal", {"model": model, "data_from": {"dataset": "obs"},
                                    "sampler": {"chains": 4, "warmup": 200, "draws": 1000, "seed": 11},
                                    "export": {"params": ["mu"]}})
        client.schedule_prior("normal", "0 3 * * *", "Europe/Berlin")
        cronjob, = deployment.kube.cronjobs.values()  # what the API applied through the Kubernetes client
        assert cronjob["spec"]["timeZone"] == "Europe/Berlin"
        refit = Container(deployment.objects, cronjob, deployment.root / "refit", image=deployment.image,
                          pod="refit-manual", redis_url=deployment.redis_url, prefix=deployment.prefix)
        assert refit.args == ["refit", "--tenant", TENANT, "--prior", "normal"]
        deployment.others.append(refit)
        refit.start()
        assert refit.exit_code(timeout=120) == 0, refit.logs()
        submitted = re.search(r"submitted (j[0-9a-f]+)", refit.logs())
        assert submitted, refit.logs()
        job = finished(client, submitted.group(1))
        assert job["state"] == "succeeded" and job["refit"]["prior"] == "normal", job
        deadline = time.monotonic() + 120  # the gate is applied as the job is assembled
        while not (refits := client.prior_refits("normal")):
            assert time.monotonic() < deadline, client.prior("normal")
            time.sleep(0.5)
        assert refits[0]["outcome"] == "succeeded", refits
        head = client.prior("normal")
        assert head["latest"] == 1
        version = client.prior_version("normal")
    assert version["source"] == "refit" and version["provenance"]["dataset_version"] == 1
    assert head["last_refit"]["outcome"] == "succeeded"
