"""The image's three commands: `chainyard api`, `chainyard worker`, `chainyard refit` (what the chart runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def worker(
    name: Annotated[str | None, typer.Option(help="Stable identity (the pod name).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Volume for checkpoints and the compile cache.")] = None,
) -> None:
    """Run a chain worker until SIGTERM (configuration from CHAINYARD_* variables)."""
    from workers.worker import main as worker_main

    worker_main(name, data_dir)


def api(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 in a container).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the REST API, /healthz, /readyz and /metrics (configuration from CHAINYARD_* variables)."""
    from service.api.server import serve
    from service.config import ApiSettings

    serve(ApiSettings(), host=host, port=port, log_level=log_level)


def refit(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's priors.")] = None,
    prior: Annotated[str | None, typer.Option(help="Only this prior (with --tenant); refit even if its dataset "
                                                   "did not change.")] = None,
) -> None:
    """Refit every prior that has no schedule of its own and whose dataset changed since its last refit, through
    the queue (the chart's nightly CronJob); with --tenant and --prior, that one prior (a schedule's CronJob),
    recorded as its schedule's last run. Publishing happens when each refit job ends, wherever it is assembled,
    so this exits as soon as the jobs are queued. Exits non-zero only when Redis cannot be reached; a prior that
    cannot be refitted (its dataset deleted, its model no longer valid) is reported and skipped."""
    from cli.refit import refit_all

    raise typer.Exit(refit_all(tenant=tenant, prior=prior))
