"""The `chainyard` command. JAX is imported only by the verbs that sample."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from service.exceptions import ChainyardError, SpecError, StopRequested
from service.language.loader import load_file
from service.sampler import SamplerSettings, parse_job, parse_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Bayesian inference (NUTS) as a service.")
err = Console(stderr=True, soft_wrap=True)

EXIT_BAD_SPEC = 2
EXIT_FAILED = 3
EXIT_INTERRUPTED = 130

SUMMARY_COLUMNS = ("mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "ess_bulk", "ess_tail", "r_hat")


def _load(file: Path, overrides: dict[str, Any]) -> tuple[Any, SamplerSettings]:
    try:
        model, settings = parse_job(load_file(file))
        if overrides:
            settings = parse_settings({**settings.model_dump(), **overrides})
        return model, settings
    except SpecError as exc:
        err.print(f"[bold red]error:[/] {file} is not a valid job or model spec:")
        for p in exc.problems:
            err.print(f"  {p.path or '(document)'}: {p.message}", markup=False, highlight=False)
        raise typer.Exit(EXIT_BAD_SPEC) from None


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Model spec or job document {model, sampler} (YAML or JSON).")],
    chains: Annotated[int | None, typer.Option(help="Chains (default 4).")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warmup iterations per chain (default 1000).")] = None,
    draws: Annotated[int | None, typer.Option(help="Sampling iterations per chain (default 1000).")] = None,
    thin: Annotated[int | None, typer.Option(help="Keep every n-th draw.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed; the draws are a pure function of model, data, settings.")]
    = None,
    target_accept: Annotated[float | None, typer.Option(help="Target acceptance probability (default 0.8).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the InferenceData as netCDF here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the summary as JSON here.")] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Checkpoint every block here; rerun to resume.")]
    = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars or table.")] = False,
) -> None:
    """Fit a model in this process and print its summary."""
    overrides = {k: v for k, v in dict(chains=chains, warmup=warmup, draws=draws, thin=thin, seed=seed,
                                       target_accept=target_accept).items() if v is not None}
    model, settings = _load(file, overrides)

    from service.config import Settings
    from workers.jaxsetup import configure

    config = Settings()
    configure(config.compile_cache_dir or Path.home() / ".cache" / "chainyard" / "jax")

    from service.results import summary, to_inference_data, write_netcdf
    from workers.engine import Engine

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGINT, on_signal), signal.signal(signal.SIGTERM, on_signal)
    engine = Engine(block_seconds=config.block_seconds, max_block=config.max_block, threads=config.threads)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    show = console.is_terminal and not quiet
    try:
        with _progress(console, settings, show) as report:
            fit = engine.run(model, settings, checkpoint_dir=checkpoint_dir, progress=report, stop=stop)
    except StopRequested:
        where = f"; rerun the same command to resume from {checkpoint_dir}" if checkpoint_dir else ""
        err.print(f"stopped{where}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except ChainyardError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    idata = to_inference_data(model, fit.draws, fit.stats,
                              attrs={"seed": fit.seed, "max_tree_depth": settings.max_tree_depth})
    result = summary(idata)
    result["seed"] = fit.seed
    result["wall_seconds"] = round(fit.timings["wall"], 3)
    if out is not None:
        write_netcdf(idata, out)
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=1))
    if not quiet:
        _print_summary(console, result)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="Model spec or job document (YAML or JSON).")],
    graph: Annotated[bool, typer.Option(help="Print only the compiled graph spec (YAML, data omitted).")] = False,
) -> None:
    """Check a spec without sampling; print its variables, shapes and the graph spec that would run."""
    from service.language.describe import describe, graph_spec

    model, settings = _load(file, {})
    if graph:
        import yaml

        typer.echo(yaml.safe_dump(graph_spec(model), sort_keys=False, allow_unicode=True))
        return
    typer.echo(json.dumps({**describe(model), "sampler": settings.model_dump()}, indent=1))


class _progress:  # noqa: N801 - used like a function in `with`
    """Per-chain progress bars on a terminal; a no-op otherwise."""

    def __init__(self, console: Console, settings: SamplerSettings, show: bool) -> None:
        self.show = show
        self.console = console
        self.settings = settings

    def __enter__(self) -> Any:
        if not self.show:
            return None
        self.bars = _chain_bars(self.console)
        total = self.settings.warmup + self.settings.draws
        self.tasks = [self.bars.add_task("", total=total, chain=c, phase="starting", div=0)
                      for c in range(self.settings.chains)]
        self.bars.start()
        lock = threading.Lock()

        def report(p: Any) -> None:
            with lock:
                self.bars.update(self.tasks[p.chain], completed=p.iteration, phase=p.phase, div=p.divergences)

        return report

    def __exit__(self, *exc: object) -> None:
        if self.show:
            self.bars.stop()


def _chain_bars(console: Console) -> Any:
    """One progress bar per chain: iteration of total, phase, divergences (hidden off a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("chain {task.fields[chain]}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[phase]:<8} div {task.fields[div]}"), TimeElapsedColumn(),
                    console=console, disable=not console.is_terminal)


def _print_summary(console: Console, result: dict[str, Any]) -> None:
    table = Table(show_edge=False, header_style="bold")
    table.add_column("variable", no_wrap=True)
    for col in SUMMARY_COLUMNS:
        table.add_column(col, justify="right")
    for row in result["variables"]:
        table.add_row(escape(row["variable"]), *(_fmt(row.get(c), c) for c in SUMMARY_COLUMNS))
    console.print(table)
    t = result["totals"]
    console.print(
        f"{t['chains']} chains x {t['draws_per_chain']} draws, seed {result['seed']}, {result['wall_seconds']} s; "
        f"divergences {t['divergences']}, max r_hat {_fmt(t['max_rhat'], 'r_hat')}, "
        f"min ess_bulk {_fmt(t['min_ess_bulk'], 'ess_bulk')}, min ess_tail {_fmt(t['min_ess_tail'], 'ess_tail')}",
        highlight=False,
    )
    for w in t["warnings"]:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)


def _fmt(value: float | None, column: str) -> str:
    if value is None:
        return "-"
    if column.startswith("ess"):
        return f"{value:.0f}"
    if column == "r_hat":
        return f"{value:.3f}"
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.4g}"


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)



# -- service verbs ------------------------------------------------------------------------------------

Url = Annotated[str, typer.Option(envvar="CHAINYARD_URL", help="API base URL.")]
Token = Annotated[str | None, typer.Option(envvar="CHAINYARD_TOKEN", help="Bearer token.")]
DEFAULT_URL = "http://127.0.0.1:8000"


def _client(url: str, token: str | None) -> Any:
    from service.client import Client

    return Client(url, token)


def _api_call(fn: Any) -> Any:
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


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="Job document {model, sampler} or a model spec.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
    wait: Annotated[bool, typer.Option(help="Watch until it ends and print the summary.")] = False,
) -> None:
    """Submit a job to a chainyard API; prints its id."""
    doc = _load_document(file)
    with _client(url, token) as client:
        job = _api_call(lambda: client.submit(doc))
        typer.echo(job["id"])
        if wait:
            _watch(client, job["id"])


@app.command()
def status(job_id: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Print a job (state, per-chain progress, live diagnostics) as JSON."""
    with _client(url, token) as client:
        typer.echo(json.dumps(_api_call(lambda: client.get(job_id)), indent=1))


@app.command()
def watch(job_id: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Progress bars per chain until the job ends, then its summary."""
    with _client(url, token) as client:
        _watch(client, job_id)


@app.command("summary")
def summary_cmd(job_id: str, url: Url = DEFAULT_URL, token: Token = None,
                json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The summary of a finished job."""
    with _client(url, token) as client:
        result = _api_call(lambda: client.summary(job_id))
    if json_out:
        typer.echo(json.dumps(result, indent=1))
    else:
        _print_summary(Console() if sys.stdout.isatty() else Console(width=160), {**result, "seed": "-",
                                                                                   "wall_seconds": "-"})


@app.command()
def draws(job_id: str, out: Annotated[Path, typer.Option(help="netCDF file to write.")],
          url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Download a finished job's InferenceData as netCDF."""
    with _client(url, token) as client:
        out.write_bytes(_api_call(lambda: client.netcdf(job_id)))


@app.command()
def cancel(job_id: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Cancel a job; its chains stop at their next block."""
    with _client(url, token) as client:
        typer.echo(_api_call(lambda: client.cancel(job_id))["state"])


@app.command("list")
def list_cmd(url: Url = DEFAULT_URL, token: Token = None,
             state: Annotated[str | None, typer.Option(help="Filter by state.")] = None,
             label: Annotated[str | None, typer.Option(help="Filter by label key=value.")] = None) -> None:
    """List jobs (newest first)."""
    with _client(url, token) as client:
        result = _api_call(lambda: client.list(state=state, label=label))
    for job in result["jobs"]:
        typer.echo(f"{job['id']}  {job['state']:<9}  {job['name'] or ''}")


@app.command()
def worker(
    name: Annotated[str | None, typer.Option(help="Stable identity (the pod name).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Volume for checkpoints and the compile cache.")] = None,
) -> None:
    """Run a chain worker until SIGTERM (configuration from CHAINYARD_* variables)."""
    from workers.worker import main as worker_main

    worker_main(name, data_dir)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 in a container).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the REST API, /healthz, /readyz and /metrics (configuration from CHAINYARD_* variables)."""
    import uvicorn

    uvicorn.run("service.api.app:create_app", factory=True, host=host, port=port, log_level=log_level,
                proxy_headers=True, access_log=False)


@app.command()
def refit() -> None:
    """Refit the empirical priors whose schedule is due (run nightly by the chart's CronJob)."""
    typer.echo("no priors defined")


@app.command()
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

    from workers.stack import Stack

    if token is None and not no_auth:
        token = secrets.token_urlsafe(24)
    doc = _load_document(submit_file) if submit_file else None
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
            with _client(stack.url, token) as client:
                job = _api_call(lambda: client.submit(doc))
                err.print(f"submitted job {job['id']}", highlight=False)
                state = _watch(client, job["id"])
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


def _load_document(file: Path) -> Any:
    try:
        return load_file(file)
    except SpecError as exc:
        err.print(f"[bold red]error:[/] {file}: {exc}")
        raise typer.Exit(EXIT_BAD_SPEC) from None


def _watch(client: Any, job_id: str) -> str:
    """Progress bars from the event stream; then the summary (or the error). Returns the final state."""
    console = Console() if sys.stdout.isatty() else Console(width=160)
    bars = _chain_bars(console)
    tasks: dict[int, Any] = {}
    state = "queued"
    with bars:
        for event, data in _api_call(lambda: list(_events(client, job_id, bars, tasks))):
            if event == "end":
                state = data["state"]
    job = _api_call(lambda: client.get(job_id))
    if state == "succeeded":
        result = _api_call(lambda: client.summary(job_id))
        _print_summary(console, {**result, "seed": job["seed"], "wall_seconds":
                                 round((job["finished_at"] or 0) - job["created_at"], 3)})
    else:
        err.print(f"job {job_id} {state}: {job.get('error') or ''}", highlight=False)
    return state


def _events(client: Any, job_id: str, bars: Any, tasks: dict[int, Any]) -> Any:
    for event, data in client.events(job_id):
        if event == "progress":
            for c in data["chains"]:
                if c["chain"] not in tasks:
                    tasks[c["chain"]] = bars.add_task("", total=c["of"], chain=c["chain"], phase=c["phase"], div=0)
                bars.update(tasks[c["chain"]], completed=c["iteration"], phase=c["phase"], div=c["divergences"])
        yield event, data


if __name__ == "__main__":
    main()
