"""`chainyard up`: the local stack (cli.stack) in the foreground, supervised, optionally submitting one job and
watching it.

The main thread supervises (restarts what dies, `Stack.supervise`) and takes the signals; a `--submit` job is
watched from a second thread. SIGINT/SIGTERM only ask for a stop, so a restart is never started after one and a
second Ctrl-C does not cut the orderly shutdown short.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.console import EXIT_BAD_SPEC, EXIT_FAILED, EXIT_INTERRUPTED, err
from cli.remote import api_call, client, load_document, watch_job
from service.config import ENV_PREFIX

if TYPE_CHECKING:
    from cli.stack import Stack

SUPERVISE_INTERVAL = 0.5
"""Seconds between two supervisor passes: how late a dead child is noticed."""
TOKEN_VARIABLES = (f"{ENV_PREFIX}TOKENS", f"{ENV_PREFIX}TOKENS_FILE")
"""Where an exported configuration keeps its API tokens."""


@dataclass(frozen=True)
class Auth:
    """How the stack authenticates, as `up`'s options and the environment decide."""

    token: str | None
    """The one token of tenant "local" (--token or a new random one); None: from the environment, or auth off."""
    from_env: bool
    """The tokens are those of CHAINYARD_TOKENS / CHAINYARD_TOKENS_FILE."""
    client_token: str | None
    """What `--submit` sends."""
    notice: str
    """What `up` prints about it (never a token from the environment)."""


def resolve_auth(token: str | None, no_auth: bool) -> Auth:
    """--no-auth, else --token (it wins over exported tokens, and says so), else the exported tokens, else a new
    random token. Exported tokens are read here, so a bad one is refused before anything starts."""
    import secrets

    from service.config import ApiSettings

    exported = [name for name in TOKEN_VARIABLES if os.environ.get(name)]
    ignored = f"; {' and '.join(exported)} from the environment ignored" if exported else ""
    if no_auth:
        if token is not None:
            raise typer.BadParameter("give --token or --no-auth, not both", param_hint="--token")
        return Auth(None, False, None, f"auth off (--no-auth){ignored}")
    if token is not None:
        wins = f" (it wins over {' and '.join(exported)} from the environment, which is ignored)" if exported else ""
        return Auth(token, False, token, f"token: the one given with --token{wins}")
    if not exported:
        new = secrets.token_urlsafe(24)
        return Auth(new, False, new, f"token: {new}")
    try:
        tokens = ApiSettings().tokens
    except (ValueError, OSError) as exc:  # a malformed pair, a missing file; inputs hidden from the message
        err.print(f"error: the API tokens of {' and '.join(exported)}: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_BAD_SPEC) from None
    if not tokens:
        err.print(f"error: {' and '.join(exported)} hold no 'token:tenant' pair", markup=False, highlight=False)
        raise typer.Exit(EXIT_BAD_SPEC)
    tenants = ", ".join(sorted(set(tokens.values())))
    return Auth(None, True, next(iter(tokens)),
                f"tokens: the {len(tokens)} of {' and '.join(exported)} (tenants {tenants}; --token to override)")


def up(
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 2,
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Redis files, worker volumes, logs.")] = Path("chainyard-data"),
    token: Annotated[str | None, typer.Option(help="API token (default: the exported CHAINYARD_TOKENS or "
                                                   "CHAINYARD_TOKENS_FILE, else a new random one).")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Accept requests without a token.")] = False,
    submit_file: Annotated[Path | None, typer.Option("--submit", help="Submit this job, watch it, print its "
                                                                      "summary, then shut down.")] = None,
    prometheus: Annotated[bool, typer.Option("--prometheus", help="Also run Debian's prometheus scraping API and "
                                                                  "workers, with the chart's alert rules.")] = False,
    prometheus_port: Annotated[int, typer.Option(help="Prometheus web port (with --prometheus).")] = 9090,
) -> None:
    """Run Redis, the API and workers here, in the foreground until SIGINT/SIGTERM; restart any that dies."""
    from cli.stack import Stack
    from cli.supervise import CrashLoopError

    auth = resolve_auth(token, no_auth)
    doc = load_document(submit_file) if submit_file else None
    stack = Stack(data_dir=data_dir, port=port, workers=workers, token=auth.token, tokens_from_env=auth.from_env,
                  prometheus_port=prometheus_port if prometheus else None,
                  report=lambda line: err.print(line, markup=False, highlight=False))
    started = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stack.request_stop()
        if not started.is_set():  # still starting: interrupt the wait for readiness
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        stack.start()
        started.set()
        err.print(f"chainyard is up: {stack.url}  {auth.notice}  workers: {workers}  data: {stack.data_dir}",
                  markup=False, highlight=False)
        if prometheus:
            err.print(f"prometheus: {stack.prometheus_url}/graph?g0.expr=chainyard_job_rhat_max", highlight=False)
        code = serve(stack, auth, doc)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED if doc is not None else 0
    except CrashLoopError as exc:
        err.print(f"error: {exc}; stopping the stack", markup=False, highlight=False)
        code = EXIT_FAILED
    except (RuntimeError, OSError) as exc:  # a child that did not start: its log says why
        err.print(f"error: {exc}", markup=False, highlight=False)
        code = EXIT_FAILED
    finally:
        started.set()  # a signal during the shutdown below must not cut it short
        err.print("stopping: workers checkpoint and exit, then the API and Redis")
        stack.stop()
    if code:
        raise typer.Exit(code)


def serve(stack: Stack, auth: Auth, doc: dict[str, Any] | None) -> int:
    """Supervise until a stop is asked for (0), or until the `--submit` job is watched to its end (its exit
    code; EXIT_INTERRUPTED if stopped first). CrashLoopError propagates."""
    outcome: list[int] = []
    watcher = None
    if doc is not None:
        watcher = threading.Thread(target=submit_and_watch, args=(stack.url, auth.client_token, doc, outcome),
                                   name="watch", daemon=True)  # daemon: an interrupted watch is abandoned
        watcher.start()
    while not stack.stop_requested:
        stack.supervise()
        if watcher is None:
            time.sleep(SUPERVISE_INTERVAL)
            continue
        watcher.join(SUPERVISE_INTERVAL)
        if not watcher.is_alive():
            return outcome[0] if outcome else EXIT_FAILED
    return 0 if watcher is None else EXIT_INTERRUPTED


def submit_and_watch(url: str, token: str | None, doc: dict[str, Any], outcome: list[int]) -> None:
    """Submit `doc`, watch it to its end and print its summary; appends the exit code to `outcome`."""
    try:
        with client(url, token) as api:
            job = api_call(lambda: api.submit(doc))
            err.print(f"submitted job {job['id']}", highlight=False)
            state = watch_job(api, job["id"])
        outcome.append(0 if state == "succeeded" else EXIT_FAILED)
    except typer.Exit as exc:  # api_call has said why
        outcome.append(exc.exit_code)
    except Exception as exc:  # said here rather than lost with the thread
        err.print(f"error: watching the job: {exc!r}", markup=False, highlight=False)
        outcome.append(EXIT_FAILED)
