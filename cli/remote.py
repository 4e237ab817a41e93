"""The client verbs: `submit`, `status`, `watch`, `summary`, `draws`, `cancel`, `list` against a chainyard API."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from cli.console import EXIT_BAD_SPEC, EXIT_FAILED, chain_bars, err, print_summary, stdout
from service.exceptions import SpecError
from service.language.loader import load_file

if TYPE_CHECKING:
    from service.client import Client

Url = Annotated[str, typer.Option(envvar="CHAINYARD_URL", help="API base URL.")]
Token = Annotated[str | None, typer.Option(envvar="CHAINYARD_TOKEN", help="Bearer token.")]
DEFAULT_URL = "http://127.0.0.1:8000"

T = TypeVar("T")


def submit(
    file: Annotated[Path, typer.Argument(help="Job document {model, sampler} or a model spec.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
    wait: Annotated[bool, typer.Option(help="Watch until it ends and print the summary.")] = False,
    warm_start: Annotated[str | None, typer.Option(help="Start from this earlier job's final state (same model "
                                                        "structure and shapes); sets sampler.warm_start.")] = None,
    until: Annotated[bool, typer.Option(help="Sample until R-hat and ESS pass (sampler.until: true unless the "
                                             "document sets it).")] = False,
) -> None:
    """Submit a job to a chainyard API; prints its id."""
    doc = with_sampler(load_document(file), warm_start=warm_start, until=until)
    with client(url, token) as api:
        job = api_call(lambda: api.submit(doc))
        typer.echo(job["id"])
        if wait:
            watch_job(api, job["id"])


def extend(job_id: str,
           draws: Annotated[int, typer.Option(help="More draws per chain.")],
           url: Url = DEFAULT_URL, token: Token = None,
           wait: Annotated[bool, typer.Option(help="Watch until it ends and print the summary.")] = False) -> None:
    """Continue a succeeded job's chains for more draws; the result equals a job that asked for them from the
    start, bit for bit (same id)."""
    with client(url, token) as api:
        job = api_call(lambda: api.extend(job_id, draws))
        typer.echo(f"{job['id']} {job['state']}: {job['sampling']['draws_per_chain']} draws per chain")
        if wait:
            watch_job(api, job_id)


def with_sampler(doc: Any, *, warm_start: str | None, until: bool) -> Any:
    """The job document with the options' sampler settings (a bare model spec becomes {model, sampler})."""
    if warm_start is None and not until:
        return doc
    job = dict(doc) if isinstance(doc, dict) and "model" in doc and "spec" not in doc else {"model": doc}
    sampler = dict(job.get("sampler") or {})
    if warm_start is not None:
        sampler["warm_start"] = {"job": warm_start}
    if until and not sampler.get("until"):
        sampler["until"] = True
    job["sampler"] = sampler
    return job


def status(job_id: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Print a job (state, per-chain progress, live diagnostics) as JSON."""
    with client(url, token) as api:
        typer.echo(json.dumps(api_call(lambda: api.get(job_id)), indent=1))


def watch(job_id: str, url: Url = DEFAULT_URL, token: Token = None,
          open_page: Annotated[bool, typer.Option("--open", help="Also open the job's live page in the browser.")]
          = False) -> None:
    """Progress bars per chain until the job ends, then its summary."""
    if open_page:
        open_job_page(url, job_id)
    with client(url, token) as api:
        watch_job(api, job_id)


def open_job_page(url: str, job_id: str) -> str:
    """Print the page's URL and how to sign in, and open it in the browser; the URL."""
    import webbrowser

    page = f"{url.rstrip('/')}/v1/jobs/{job_id}/page"
    err.print(f"job page: {page}\n(sign in there with your API token; the browser keeps a session cookie)",
              highlight=False)
    webbrowser.open(page)
    return page


def summary(job_id: str, url: Url = DEFAULT_URL, token: Token = None,
            json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The summary of a finished job."""
    with client(url, token) as api:
        result = api_call(lambda: api.summary(job_id))
    if json_out:
        typer.echo(json.dumps(result, indent=1))
    else:
        print_summary(stdout(), {**result, "seed": "-", "wall_seconds": "-"})


def draws(job_id: str, out: Annotated[Path, typer.Option(help="netCDF file to write.")],
          url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Download a finished job's InferenceData as netCDF."""
    with client(url, token) as api:
        out.write_bytes(api_call(lambda: api.netcdf(job_id)))


def cancel(job_id: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Cancel a job; its chains stop at their next block."""
    with client(url, token) as api:
        typer.echo(api_call(lambda: api.cancel(job_id))["state"])


def list_jobs(url: Url = DEFAULT_URL, token: Token = None,
              state: Annotated[str | None, typer.Option(help="Filter by state.")] = None,
              label: Annotated[str | None, typer.Option(help="Filter by label key=value.")] = None) -> None:
    """List jobs (newest first)."""
    with client(url, token) as api:
        result = api_call(lambda: api.list(state=state, label=label))
    for job in result["jobs"]:
        typer.echo(f"{job['id']}  {job['state']:<9}  {job['name'] or ''}")


def client(url: str, token: str | None) -> Client:
    from service.client import Client  # httpx only for the verbs that call the API

    return Client(url, token)


def api_call(fn: Callable[[], T]) -> T:
    """fn(), or exit: 2 for a bad request (400, 413, 422), 3 for other API errors and an unreachable API."""
    from service.client import ApiError

    try:
        return fn()
    except ApiError as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(EXIT_BAD_SPEC if exc.status in (400, 413, 422) else EXIT_FAILED) from None
    except Exception as exc:  # connection refused, timeouts
        if type(exc).__module__.startswith("httpx"):
            err.print(f"[bold red]error:[/] cannot reach the API: {exc}")
            raise typer.Exit(EXIT_FAILED) from None
        raise


def load_document(file: Path) -> Any:
    try:
        return load_file(file)
    except SpecError as exc:
        err.print(f"[bold red]error:[/] {file}: {exc}")
        raise typer.Exit(EXIT_BAD_SPEC) from None


def watch_job(api: Client, job_id: str) -> str:
    """Progress bars from the event stream; then the summary (or the error). Returns the final state."""
    console = stdout()
    bars = chain_bars(console)
    tasks: dict[int, Any] = {}
    state = "queued"
    with bars:
        for event, data in api_call(lambda: list(_events(api, job_id, bars, tasks))):
            if event == "end":
                state = data["state"]
    job = api_call(lambda: api.get(job_id))
    if state == "succeeded":
        result = api_call(lambda: api.summary(job_id))
        print_summary(console, {**result, "seed": job["seed"], "wall_seconds":
                                round((job["finished_at"] or 0) - job["created_at"], 3)})
    else:
        err.print(f"job {job_id} {state}: {job.get('error') or ''}", highlight=False)
    return state


def _events(api: Client, job_id: str, bars: Any, tasks: dict[int, Any]) -> Iterator[tuple[str, Any]]:
    for event, data in api.events(job_id):
        if event == "progress":
            for c in data["chains"]:
                if c["chain"] not in tasks:
                    tasks[c["chain"]] = bars.add_task("", total=c["of"], chain=c["chain"], phase=c["phase"], div=0)
                bars.update(tasks[c["chain"]], completed=c["iteration"], total=c["of"], phase=c["phase"],
                            div=c["divergences"])
        yield event, data
