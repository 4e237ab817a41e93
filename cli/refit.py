"""The nightly refit: every stale prior of every tenant without a schedule of its own, submitted through the
queue (cli/serve.py's `refit`); with --tenant and --prior, that one prior (a schedule's CronJob runs this, and
the run is recorded as the schedule's last run)."""

from __future__ import annotations

import logging
import time

import typer
from redis.exceptions import RedisError

from service.config import Settings
from service.connect import redis_client
from service.datasets import DatasetStore
from service.exceptions import ChainyardError
from service.jobs.store import JobStore
from service.priors.schedules import has_schedule, record_run
from service.priors.store import PriorStore

log = logging.getLogger("chainyard.refit")
EXIT_INFRASTRUCTURE = 1


def refit_all(*, tenant: str | None = None, prior: str | None = None, settings: Settings | None = None) -> int:
    """Submit the refits; the exit status (0 unless Redis failed)."""
    settings = settings or Settings()
    redis = redis_client(settings)
    try:
        store = PriorStore(jobs=JobStore(redis, settings), datasets=DatasetStore(redis, settings))
        tenants = [tenant] if tenant else store.tenants()
        submitted = skipped = 0
        for t in tenants:
            names = [prior] if prior else store.stale(t)
            for name in names:
                scheduled = prior is not None and has_schedule(redis, t, name)
                try:
                    record, created = store.refit(t, name)
                except ChainyardError as exc:  # this prior cannot be refitted now; the others still are
                    typer.echo(f"{t}/{name}: not refitted: {exc}", err=True)
                    skipped += 1
                    if scheduled:
                        record_run(redis, t, name, at=time.time(), scheduled=None, job=None, outcome="error",
                                   message=str(exc))
                    continue
                if scheduled:
                    record_run(redis, t, name, at=time.time(), scheduled=None, job=record.id,
                               outcome="submitted" if created else "unchanged")
                submitted += created
                typer.echo(f"{t}/{name}: {'submitted' if created else 'already'} {record.id} "
                           f"(dataset version {record.refit.dataset_version if record.refit else '?'})")
        typer.echo(f"{submitted} refit(s) submitted, {skipped} skipped")
        return 0
    except RedisError as exc:
        typer.echo(f"error: Redis: {exc}", err=True)
        return EXIT_INFRASTRUCTURE
    finally:
        redis.close()
