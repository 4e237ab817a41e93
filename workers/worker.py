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
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service import keys, metrics
from service.codec import pack_block, pack_state, unpack, unpack_block, unpack_state
from service.config import Settings
from service.connect import redis_client
from service.exceptions import InitializationError
from service.jobs import blobs
from service.jobs.chains import ChainWriter
from service.jobs.record import ChainPhase, JobRecord, JobState
from service.jobs.store import JobStore
from service.queue import ChainQueue, Task
from workers.chain import Block, Chain, ChainSnapshot, Progress, job_fingerprint
from workers.checkpoint import ChainStore, claim_directory
from workers.state import WarmStart
from workers.stop import Stopped, StopReason, run

log = logging.getLogger("chainyard.worker")

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
"""Redis refusing or not answering in time (service.connect bounds every reply): wait it out."""

HEARTBEAT_SECONDS = 5.0
"""How often a worker records that it is alive, from its loop when idle and from the claim thread while a chain
runs (service.metrics.WORKER_ALIVE_SECONDS counts it)."""
SWEEP_SECONDS = 10.0
"""How often an idle worker looks for jobs due for assembly that nobody assembled."""
RETRY_PAUSE_SECONDS = 0.5
"""Pause after a chain's attempt failed with an unexpected error, before the next task."""


class JobStop:
    """The stop policy of one chain task, asked at every block boundary: the job was deleted or ended
    (cancelled, or failed by another chain), its deadline passed, or this worker is shutting down."""

    def __init__(self, *, deadline: float, shutdown: threading.Event) -> None:
        self.deadline = deadline
        self.shutdown = shutdown
        self.state: JobState | None = JobState.RUNNING

    def observe(self, state: JobState | None) -> None:
        """The job's state as the last block report found it (None: deleted)."""
        self.state = state

    def __call__(self, progress: Any) -> StopReason | None:
        if self.state is None:
            return StopReason.DELETED
        if self.state.terminal:
            return StopReason.CANCELLED
        if time.time() > self.deadline:
            return StopReason.TIMEOUT
        if self.shutdown.is_set():
            return StopReason.SHUTDOWN
        return None


class Worker:
    def __init__(self, *, settings: Settings, redis: Redis, name: str, data_dir: Path) -> None:
        self.settings = settings
        self.r: Any = redis  # redis-py's annotations do not follow decode_responses
        self.name = name
        self.data_dir = data_dir
        self.queue = ChainQueue(redis, visibility_timeout=settings.visibility_timeout,
                                window=settings.dispatch_window)
        self.store = JobStore(redis, settings, owner=name)  # its assembly locks: taken over after a restart
        self.chains = ChainWriter(redis, chunk_bytes=settings.chunk_bytes)
        self.shutdown = threading.Event()
        self.busy = metrics.WORKER_BUSY.labels(worker=name)
        self.busy.set(0)
        self._last_beat = 0.0
        self._last_sweep = 0.0
        self._refresh = _Refresher(self.store)

    # -- loop -------------------------------------------------------------------------------------

    def run(self) -> None:
        self.queue.ensure_group()
        log.info("worker %s serving (data dir %s)", self.name, self.data_dir)
        self._refresh.start()
        while not self.shutdown.is_set():
            try:
                self.heartbeat()
                self.sweep()
                task = self.queue.claim_next(self.name)
                if task is not None:
                    self.handle(task)
            except REDIS_DOWN as exc:  # Redis restarting or hung: the task stays pending; resume later
                log.warning("redis unavailable (%s); retrying", exc)
                self.shutdown.wait(1.0)

    def heartbeat(self) -> None:
        """Tell Redis this worker is alive (counted by chainyard_workers), at most every few seconds."""
        now = time.time()
        if now - self._last_beat > HEARTBEAT_SECONDS:
            self.r.zadd(keys.WORKERS, {self.name: now})
            self._last_beat = now

    def sweep(self) -> None:
        """Assemble jobs whose chains have all been stored for a while but which are still running (their
        assembler died, or its lock expired), at most every few seconds."""
        now = time.time()
        if now - self._last_sweep < SWEEP_SECONDS:
            return
        self._last_sweep = now
        for job_id in self.store.due_for_assembly(older_than=keys.ASSEMBLE_LOCK_SECONDS / 4):
            self.store.assemble(job_id)

    def request_shutdown(self, *_: Any) -> None:
        """SIGTERM/SIGINT: stop after the current block (whose checkpoint is written)."""
        self.shutdown.set()

    def install_signals(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.request_shutdown()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- one chain task ---------------------------------------------------------------------------

    def handle(self, task: Task) -> None:
        """Run one chain task to its end, or to a stop; acknowledge it unless it must resume here."""
        job_id, chain = task.job_id, task.chain
        record = self.store.read(job_id)
        attempts = self.chains.start_attempt(job_id, chain, self.name) if record and not record.state.terminal else None
        if record is None or attempts is None:  # ended, or deleted
            self._done(task)
            return
        if attempts > self.settings.max_attempts:
            reason = self.chains.last_error(job_id, chain) or "unknown error"
            self.store.finish(job_id, JobState.FAILED, f"chain {chain} failed {attempts - 1} times: {reason}")
            self._done(task)
            return
        self.store.mark_running(job_id)
        try:
            with self._claimed(task):
                ran = self._sample(task, record)
        except Stopped as stop:
            self._stopped(task, stop.reason)
            return
        except InitializationError as exc:
            self.chains.fail(job_id, chain, str(exc))
            self.store.finish(job_id, JobState.FAILED, f"chain {chain}: {exc}")
            self._done(task)
            return
        except REDIS_DOWN:
            raise
        except Exception as exc:  # retried from the checkpoint until max_attempts
            log.exception("chain %s/%s failed", job_id, chain)
            self.chains.record_error(job_id, chain, f"{type(exc).__name__}: {exc}")
            self.shutdown.wait(RETRY_PAUSE_SECONDS)
            return
        # the job's last chain is assembled before its task is acknowledged: a worker that dies meanwhile
        # leaves the task pending, and whoever takes it (or the sweep) assembles the job (or starts its next
        # round); the chain's state goes with its draws, so any worker can continue it
        draws, progress = ran.result(), ran.progress
        state = pack_state(ran.state.to_arrays(), {"progress": dataclasses.asdict(progress)})
        if self.chains.save(job_id, task.chain, pack_block(draws.draws, draws.stats), state, chains=record.chains,
                            iterations=progress.iteration, divergences=int(draws.stats["diverging"].sum()),
                            gradients=progress.gradients, warmup_gradients=progress.warmup_gradients):
            self.store.assemble(job_id)
        self._done(task)

    def _sample(self, task: Task, record: JobRecord) -> Chain:
        """Open the chain (from its checkpoint if this worker ran it before, from the state stored with the job
        after its last round, or fresh, warm-started if the job asks) and run it to the job's current draws
        under the job's policy."""
        pinned = self.store.pinned(task.job_id)
        if pinned is None:
            raise Stopped(StopReason.DELETED, "the job was deleted")
        model, settings = pinned.model(), record.sampler
        fingerprint = job_fingerprint(model, settings, record.seed)
        root = self.data_dir / "jobs" / task.job_id
        claim_directory(root, {"job": fingerprint, "seed": record.seed})
        base = self._stored(task)
        warm = self._warm_start(task) if base is None and settings.warm_start is not None else None
        chain = Chain.open(model, settings, seed=record.seed, chain=task.chain, store=ChainStore(root, task.chain),
                           fingerprint=fingerprint, block_seconds=self.settings.block_seconds,
                           max_block=self.settings.max_block, draws=record.draws, base=base, warm=warm,
                           checkpoint_seconds=self.settings.checkpoint_seconds,
                           checkpoint_at_end=False)  # _done drops the files once the draws are stored
        self.chains.reset_live(task.job_id, task.chain, [pack_block(b.draws, b.stats) for b in chain.restored])
        policy = JobStop(deadline=record.deadline, shutdown=self.shutdown)

        def report(block: Block) -> None:
            p = block.progress
            policy.observe(self.chains.report_block(
                task.job_id, task.chain, pack_block(block.draws, block.stats), phase=ChainPhase(p.phase),
                iteration=p.iteration, of=p.of, divergences=p.divergences, step_size=p.step_size))
            metrics.CHAIN_ITERATIONS.labels(phase="warmup").inc(p.block_warmup)
            metrics.CHAIN_ITERATIONS.labels(phase="sampling").inc(p.block_sampling)
            metrics.GRADIENT_EVALUATIONS.inc(p.block_gradients)
            self._refresh.request(task.job_id)

        run(chain, policy, on_block=report)
        return chain

    def _stored(self, task: Task) -> ChainSnapshot | None:
        """The chain as stored with the job after its last round (None before its first round ended)."""
        stored = self.chains.stored(task.job_id, task.chain)
        if stored is None:
            return None
        draws, stats = unpack_block(stored[0])
        state, meta = unpack_state(stored[1])
        return ChainSnapshot(state=state, progress=Progress(**meta["progress"]), draws=draws, stats=stats)  # type: ignore[arg-type]

    def _warm_start(self, task: Task) -> WarmStart:
        """Where the job's warm start begins chain `task.chain`: chain c of the earlier job's c mod its chains,
        as copied with the job at submit."""
        arrays = unpack(blobs.read(self.r, keys.job_warm(task.job_id)) or b"")
        if not arrays:
            raise InitializationError("warm start: the earlier job's states were not stored with this job")
        chains = int(arrays["chains"])
        source = task.chain % chains
        prefix = f"{source}/"
        return WarmStart.of({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})

    def _stopped(self, task: Task, reason: StopReason) -> None:
        if reason is StopReason.SHUTDOWN:
            return  # the task stays pending: this worker resumes it from its checkpoint when it returns
        if reason is StopReason.TIMEOUT:
            self.store.finish(task.job_id, JobState.FAILED, f"timed out after {self.settings.job_timeout_seconds} s")
        self._done(task)

    @contextlib.contextmanager
    def _claimed(self, task: Task) -> Iterator[None]:
        """While the chain runs: busy, and this worker's claim on the task refreshed a few times per visibility
        timeout from a thread, so that no other worker takes it for abandoned, even during a long first compile."""
        done = threading.Event()
        interval = self.settings.visibility_timeout / 4

        def beat() -> None:
            while True:
                with contextlib.suppress(*REDIS_DOWN):
                    self.heartbeat()
                    self.queue.keep_claimed(self.name, task)
                if done.wait(interval):
                    return

        threading.Thread(target=beat, name=f"claim-{task.entry_id}", daemon=True).start()
        self.busy.set(1)
        try:
            yield
        finally:
            done.set()
            self.busy.set(0)

    def _done(self, task: Task) -> None:
        """Acknowledge the task and drop this chain's checkpoints (its draws are in Redis or not needed)."""
        self.queue.ack(task)
        ChainStore(self.data_dir / "jobs" / task.job_id, task.chain).remove()


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
                        record = self.store.read(job_id)
                        if record is not None and not record.state.terminal:
                            self.store.live.refresh(record)
                except Exception:  # a figure is late, the chain goes on; logged for the operator
                    log.exception("live diagnostics of %s failed", job_id)


def serve_metrics(port: int, token: str | None = None) -> None:
    """/metrics (Prometheus) and /healthz (liveness: answers without Redis, whose outages a worker waits out,
    and without renewing the metrics lease, which only scrapes should hold) on a daemon thread. With `token`
    (Settings.metrics_token), /metrics answers only 'Authorization: Bearer <token>': the lease holder's series
    name every tenant's jobs."""
    import hmac
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    exposition = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if token is not None:
            scheme, _, given = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
                start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
                return [b"metrics need the metrics token\n"]
        return exposition(environ, start_response)

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = make_server("", port, app, Server, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()


def cap_memory(limit: int, cgroup: Path = Path("/sys/fs/cgroup/memory.max")) -> int | None:
    """Cap this process's address space at `limit` bytes (0: the cgroup's memory limit, if any); the cap set.

    Address space, not resident memory: it is always at least the resident size, so under a cap equal to the
    container's limit an allocation fails (JAX raises RESOURCE_EXHAUSTED, numpy MemoryError: the chain's
    attempt fails and is retried, then its job fails) before the kernel's OOM killer would end the pod. JAX
    reserves about 1.3 GB it does not touch; the cap must leave room for that."""
    import resource

    if not limit:
        try:
            text = cgroup.read_text().strip()
        except OSError:
            return None
        if not text.isdigit():  # "max": no limit
            return None
        limit = int(text)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


def main(name: str | None = None, data_dir: Path | None = None) -> None:
    """`python -m workers` / `chainyard worker`: serve until SIGTERM."""
    settings = Settings()
    name = name or settings.worker_name
    data_dir = data_dir or settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s")
    from workers.jaxsetup import PlatformError, configure

    capped = cap_memory(settings.worker_memory_bytes)
    if capped:
        log.info("address space capped at %.1f GiB", capped / 2**30)
    try:
        configure(settings.compile_cache_dir or data_dir / "jax-cache", settings.platform)
    except PlatformError as exc:  # no chain could run here: say why instead of taking tasks
        log.error("%s", exc)
        raise SystemExit(2) from None
    redis = redis_client(settings)
    if settings.metrics_port:
        from prometheus_client import REGISTRY

        REGISTRY.register(metrics.ClusterCollector(redis))
        try:
            serve_metrics(settings.metrics_port, settings.metrics_token)
            log.info("metrics on :%d/metrics, liveness on /healthz", settings.metrics_port)
        except OSError as exc:  # chains matter more than their metrics
            log.error("no metrics: cannot listen on port %d: %s", settings.metrics_port, exc)
    worker = Worker(settings=settings, redis=redis, name=name, data_dir=data_dir)
    worker.install_signals()
    worker.run()
    log.info("worker %s stopped", name)
