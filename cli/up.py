"""`chainyard up`: the local stack (cli.stack) in the foreground, optionally submitting one job and watching it."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from cli.console import EXIT_FAILED, err
from cli.remote import api_call, client, load_document, watch_job


def up(
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 2,
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Redis files, worker volumes, logs.")] = Path("chainyard-data"),
    token: Annotated[str | None, typer.Option(help="API token (default: a new random one).")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Accept requests without a token.")] = False,
    submit_file: Annotated[Path | None, typer.Option("--submit", help="Submit this job, watch it, print its "
                                                                      "summary, then shut down.")] = None,
    prometheus: Annotated[bool, typer.Option("--prometheus", help="Also run Debian's prometheus scraping API and "
                                                                  "workers, with the chart's alert rules.")] = False,
    prometheus_port: Annotated[int, typer.Option(help="Prometheus web port (with --prometheus).")] = 9090,
) -> None:
    """Run Redis, the API and workers here, in the foreground until SIGINT/SIGTERM."""
    import secrets

    from cli.stack import Stack

    if token is None and not no_auth:
        token = secrets.token_urlsafe(24)
    doc = load_document(submit_file) if submit_file else None
    stack = Stack(data_dir=data_dir, port=port, workers=workers, token=None if no_auth else token,
                  prometheus_port=prometheus_port if prometheus else None)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        err.print(f"chainyard is up: {stack.url}  token: {token if not no_auth else '(auth off)'}  "
                  f"workers: {workers}  data: {stack.data_dir}", highlight=False)
        if prometheus:
            err.print(f"prometheus: {stack.prometheus_url}/graph?g0.expr=chainyard_job_rhat_max", highlight=False)
        if doc is not None:
            with client(stack.url, token) as api:
                job = api_call(lambda: api.submit(doc))
                err.print(f"submitted job {job['id']}", highlight=False)
                state = watch_job(api, job["id"])
            if state != "succeeded":
                raise typer.Exit(EXIT_FAILED)
            return
        while not stopping.is_set():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        err.print("stopping: workers checkpoint and exit, then the API and Redis")
        stack.stop()
