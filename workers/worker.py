"""The chain worker: claims chain tasks from the Redis stream and runs them with the engine.

Loop, top to bottom:
1. its own pending tasks first (a restarted worker with the same name resumes its
   chains from the checkpoints on its volume),
2. tasks idle longer than the visibility timeout (their worker is gone): reclaimed,
3. new tasks.

A chain checkpoints every block to `data_dir/jobs/<job>/chain-<c>/`, pushes the
block's draws (live diagnostics) and its progress, and refreshes its claim on the
task. When it ends, its draws are stored in Redis and only then is the task
acknowledged (at-least-once: a chain run twice gives the same draws). SIGTERM
finishes the current block (its checkpoint is written) and exits; cancel, delete
and the job timeout stop a chain at its next block boundary.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from service import keys, metrics
from service.codec import pack
from service.config import Settings
from service.exceptions import InitializationError, StopRequested
from service.jobs import JobStore
from service.schemas import TERMINAL
from workers.checkpoint import ChainStore, claim_directory
from workers.engine import Engine, Progress, job_fingerprint

log = logging.getLogger("chainyard.worker")

Task = tuple[str, str, int]  # stream entry id, job id, chain

HEARTBEAT_SECONDS = 5.0
"""How often a worker records that it is alive, from its loop when idle and from the claim thread while a chain
runs (service.metrics.WORKER_ALIVE_SECONDS counts it)."""


def ensure_group(redis: Redis) -> None:
    try:
        redis.xgroup_create(keys.TASKS, keys.GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class Worker:
    def __init__(self, *, settings: Settings, redis: Redis, name: str, data_dir: Path, engine: Engine) -> None:
        self.settings = settings
        self.r: Any = redis  # redis-py's annotations do not follow decode_responses
        self.name = name
        self.data_dir = data_dir
        self.engine = engine
        self.store = JobStore(redis, settings)
        self.shutdown = threading.Event()
        self._chain_stop: threading.Event | None = None
        self.busy = metrics.WORKER_BUSY.labels(worker=name)
        self.busy.set(0)
        self._last_beat = 0.0
        self._refresh = _Refresher(self.store)

    # -- loop -------------------------------------------------------------------------------------

    def run(self) -> None:
        ensure_group(self.r)
        log.info("worker %s serving (data dir %s)", self.name, self.data_dir)
        self._refresh.start()
        while not self.shutdown.is_set():
            try:
                self.heartbeat()
                task = self.next_task()
                if task is not None:
                    self.handle(*task)
            except RedisConnectionError as exc:  # Redis restarting: the task stays pending; resume later
                log.warning("redis unavailable (%s); retrying", exc)
                self.shutdown.wait(1.0)

    def heartbeat(self) -> None:
        """Tell Redis this worker is alive (counted by chainyard_workers), at most every few seconds."""
        now = time.time()
        if now - self._last_beat > HEARTBEAT_SECONDS:
            self.r.zadd(keys.WORKERS, {self.name: now})
            self._last_beat = now

    def request_shutdown(self, *_: Any) -> None:
        """SIGTERM/SIGINT: stop after the current block (whose checkpoint is written)."""
        self.shutdown.set()
        if self._chain_stop is not None:
            self._chain_stop.set()

    def install_signals(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.request_shutdown()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def next_task(self) -> Task | None:
        own = self.r.xpending_range(keys.TASKS, keys.GROUP, min="-", max="+", count=1, consumername=self.name)
        if own:
            entry_id = own[0]["message_id"]
            entries = self.r.xrange(keys.TASKS, entry_id, entry_id)
            if not entries:  # trimmed away: nothing to resume
                self.r.xack(keys.TASKS, keys.GROUP, entry_id)
                return None
            return self._task(*entries[0])
        idle_ms = int(self.settings.visibility_timeout * 1000)
        claimed = self.r.xautoclaim(keys.TASKS, keys.GROUP, self.name, min_idle_time=idle_ms, start_id="0-0",
                                    count=1)
        if claimed[1]:
            return self._task(*claimed[1][0])
        fresh = self.r.xreadgroup(keys.GROUP, self.name, {keys.TASKS: ">"}, count=1, block=1000)
        if fresh and fresh[0][1]:
            return self._task(*fresh[0][1][0])
        return None

    @staticmethod
    def _task(entry_id: Any, fields: dict[Any, Any]) -> Task:
        decoded = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                   for k, v in fields.items()}
        eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        return eid, decoded["job"], int(decoded["chain"])

    # -- one chain --------------------------------------------------------------------------------

    def handle(self, entry_id: str, job_id: str, chain: int) -> None:
        record = self.store.record(job_id)
        if record is None or record["state"] in TERMINAL:
            self._done(entry_id, job_id, chain)
            return
        attempts = self.store.start_attempt(job_id, chain, self.name)
        if attempts is None:
            self._done(entry_id, job_id, chain)
            return
        if attempts > self.settings.max_attempts:
            last = self.r.hget(keys.chain(job_id, chain), "error")
            reason = last.decode() if isinstance(last, bytes) else "unknown error"
            self.store.finish(job_id, "failed", f"chain {chain} failed {attempts - 1} times: {reason}")
            self._done(entry_id, job_id, chain)
            return
        self.store.mark_running(job_id)
        model, settings = self.store.model_of(record)
        seed = int(record["seed"])
        fingerprint = job_fingerprint(model, settings, seed)
        root = self.data_dir / "jobs" / job_id
        claim_directory(root, {"job": fingerprint, "seed": seed})
        deadline = float(record["deadline"])
        stop = self._chain_stop = threading.Event()
        if self.shutdown.is_set():
            stop.set()
        ended: list[str] = []  # why the chain was stopped: cancelled, timeout

        def on_start(draws: list[dict[str, np.ndarray]], stats: list[dict[str, np.ndarray]]) -> None:
            self.store.reset_live(job_id, chain, [_block_blob(d, s) for d, s in zip(draws, stats, strict=True)])

        def on_block(draws: dict[str, np.ndarray], stats: dict[str, np.ndarray], p: Progress) -> None:
            state = self.store.report_block(job_id, chain, _block_blob(draws, stats), phase=p.phase,
                                            iteration=p.iteration, of=p.of, divergences=p.divergences,
                                            step_size=p.step_size)
            metrics.CHAIN_ITERATIONS.labels(phase="warmup").inc(p.block_warmup)
            metrics.CHAIN_ITERATIONS.labels(phase="sampling").inc(p.block_sampling)
            metrics.GRADIENT_EVALUATIONS.inc(p.block_gradients)
            self._refresh.request(job_id)
            if state is None or state in TERMINAL:
                ended.append("cancelled")
                stop.set()
            elif time.time() > deadline:
                ended.append("timeout")
                stop.set()

        self.busy.set(1)
        heartbeat = self._keep_claimed(entry_id)
        try:
            result = self.engine.run_chain(model, settings, seed=seed, chain=chain, store=ChainStore(root, chain),
                                           fingerprint=fingerprint, stop=stop, on_block=on_block, on_start=on_start)
        except StopRequested:
            if "timeout" in ended:
                self.store.finish(job_id, "failed", f"timed out after {self.settings.job_timeout_seconds} s")
            if ended:
                self._done(entry_id, job_id, chain)
            # on shutdown the task stays pending: this worker resumes it from its checkpoint when it returns
            return
        except InitializationError as exc:
            self.r.hset(keys.chain(job_id, chain), mapping={"phase": "failed", "error": str(exc)})
            self.store.finish(job_id, "failed", f"chain {chain}: {exc}")
            self._done(entry_id, job_id, chain)
            return
        except RedisConnectionError:
            raise
        except Exception as exc:  # retried from the checkpoint until max_attempts
            log.exception("chain %s/%s failed", job_id, chain)
            self.r.hset(keys.chain(job_id, chain), mapping={"error": f"{type(exc).__name__}: {exc}"})
            time.sleep(0.5)
            return
        finally:
            heartbeat.set()
            self.busy.set(0)
            self._chain_stop = None
        saved = self.store.save_chain(job_id, chain, _block_blob(result.draws, result.stats))
        self._done(entry_id, job_id, chain)
        if saved:
            self.store.assemble(job_id)

    def _keep_claimed(self, entry_id: str) -> threading.Event:
        """Refresh this worker's claim on a task a few times per visibility timeout while its chain runs,
        so that no other worker takes it for abandoned, even during a long first compile. Set to stop."""
        done = threading.Event()
        interval = self.settings.visibility_timeout / 4

        def beat() -> None:
            while True:
                with contextlib.suppress(RedisConnectionError):
                    self.heartbeat()
                    self.r.xclaim(keys.TASKS, keys.GROUP, self.name, min_idle_time=0, message_ids=[entry_id],
                                  justid=True)
                if done.wait(interval):
                    return

        threading.Thread(target=beat, name=f"claim-{entry_id}", daemon=True).start()
        return done

    def _done(self, entry_id: str, job_id: str, chain: int) -> None:
        """Acknowledge the task and drop this chain's checkpoints (its draws are in Redis or not needed)."""
        self.r.xack(keys.TASKS, keys.GROUP, entry_id)
        shutil.rmtree(self.data_dir / "jobs" / job_id / f"chain-{chain}", ignore_errors=True)


class _Refresher:
    """Recomputes the live figures of the jobs whose chains report blocks, off the sampling thread, at
    most once per interval per job across all workers (service.live)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.jobs: set[str] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="diagnostics", daemon=True).start()

    def request(self, job_id: str) -> None:
        with self.lock:
            self.jobs.add(job_id)
        self.wake.set()

    def _loop(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            with self.lock:
                jobs, self.jobs = self.jobs, set()
            for job_id in jobs:
                try:
                    if self.store.live.due(job_id):
                        record = self.store.record(job_id)
                        if record is not None and record["state"] not in TERMINAL:
                            self.store.live.refresh(record)
                except Exception:  # a figure is late, the chain goes on; logged for the operator
                    log.exception("live diagnostics of %s failed", job_id)


def _block_blob(draws: dict[str, np.ndarray], stats: dict[str, np.ndarray]) -> bytes:
    return pack({**draws, **{f"stat.{k}": v for k, v in stats.items()}})


def serve_metrics(port: int) -> None:
    """/metrics (Prometheus) and /healthz (liveness: answers without Redis, whose outages a worker waits out,
    and without renewing the metrics lease, which only scrapes should hold) on a daemon thread."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    exposition = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        return exposition(environ, start_response)

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = make_server("", port, app, Server, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()


def main(name: str | None = None, data_dir: Path | None = None) -> None:
    """`python -m workers` / `chainyard worker`: serve until SIGTERM."""
    settings = Settings()
    name = name or settings.worker_name
    data_dir = data_dir or settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s")
    from workers.jaxsetup import configure

    configure(settings.compile_cache_dir or data_dir / "jax-cache")
    redis = Redis.from_url(settings.redis_url)
    if settings.metrics_port:
        from prometheus_client import REGISTRY

        REGISTRY.register(metrics.ClusterCollector(redis))
        try:
            serve_metrics(settings.metrics_port)
            log.info("metrics on :%d/metrics, liveness on /healthz", settings.metrics_port)
        except OSError as exc:  # chains matter more than their metrics
            log.error("no metrics: cannot listen on port %d: %s", settings.metrics_port, exc)
    engine = Engine(block_seconds=settings.block_seconds, max_block=settings.max_block, threads=1)
    worker = Worker(settings=settings, redis=redis, name=name, data_dir=data_dir, engine=engine)
    worker.install_signals()
    worker.run()
    log.info("worker %s stopped", name)
