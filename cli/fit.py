"""`chainyard run` and `chainyard validate`: a model in this process (JAX is imported only by `run`)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console

from cli.console import EXIT_BAD_SPEC, EXIT_FAILED, EXIT_INTERRUPTED, chain_bars, err, print_summary, stdout
from service.config import Settings
from service.exceptions import ChainyardError, SpecError, StopRequested
from service.language.loader import load_file
from service.sampler import SamplerSettings, check_cost, parse_job, parse_settings


def run(
    file: Annotated[Path, typer.Argument(help="Model spec or job document {model, sampler} (YAML or JSON).")],
    chains: Annotated[int | None, typer.Option(help="Chains (default 4).")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warmup iterations per chain (default 1000).")] = None,
    draws: Annotated[int | None, typer.Option(help="Sampling iterations per chain (default 1000).")] = None,
    thin: Annotated[int | None, typer.Option(help="Keep every n-th draw.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed; the draws are a pure function of model, data, settings.")]
    = None,
    target_accept: Annotated[float | None, typer.Option(help="Target acceptance probability (default 0.8).")] = None,
    adaptation: Annotated[str | None, typer.Option(help="Warmup adaptation: fisher (default; nutpie's mass "
                                                        "matrix from positions and gradients) or stan.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the InferenceData as netCDF here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the summary as JSON here.")] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Checkpoint every block here; rerun to resume.")]
    = None,
    until: Annotated[bool, typer.Option(help="Sample in rounds until R-hat and ESS pass (the defaults of "
                                             "sampler.until unless the file sets them); --draws is the minimum.")]
    = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars or table.")] = False,
) -> None:
    """Fit a model in this process and print its summary. Rerun with a larger --draws and the same
    --checkpoint-dir to continue the chains: the result equals a run asked for the longer draws from the start."""
    overrides = {k: v for k, v in dict(chains=chains, warmup=warmup, draws=draws, thin=thin, seed=seed,
                                       target_accept=target_accept, adaptation=adaptation).items() if v is not None}
    if until:
        overrides["until"] = True
    model, settings = _load(file, overrides)

    from workers.jaxsetup import PlatformError, configure

    config = Settings()
    try:
        configure(config.compile_cache_dir or Path.home() / ".cache" / "chainyard" / "jax", config.platform)
    except PlatformError as exc:
        err.print("[bold red]error:[/] ", end="")
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(EXIT_BAD_SPEC) from None

    from service.jobs.assemble import assemble
    from service.results import write_netcdf
    from workers.engine import Engine

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGINT, on_signal), signal.signal(signal.SIGTERM, on_signal)
    engine = Engine(block_seconds=config.block_seconds, max_block=config.max_block, threads=config.threads,
                    checkpoint_seconds=config.checkpoint_seconds)
    console = stdout()
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
    results = assemble(model, settings, fit.draws, fit.stats, attrs={"seed": fit.seed})
    sampling = {"warmup": settings.warmup, "draws_per_chain": fit.rounds[-1].draws if fit.rounds else settings.draws,
                "rounds": [r.to_json() for r in fit.rounds], "stopped": fit.stopped,
                "gradients": {"warmup": fit.warmup_gradients, "run_here": fit.gradient_evaluations}}
    result = {**results.summary, "sampling": sampling, "seed": fit.seed,
              "wall_seconds": round(fit.timings["wall"], 3)}
    if out is not None:
        write_netcdf(results.idata, out)
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=1))
    if not quiet:
        print_summary(console, result)


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


def _load(file: Path, overrides: dict[str, Any]) -> tuple[Any, SamplerSettings]:
    try:
        model, settings = parse_job(load_file(file))
        if overrides:  # the results' size depends on them: check it again
            if overrides.get("until") is True and settings.until is not None:
                overrides.pop("until")  # the file's targets stand
            settings = parse_settings({**settings.model_dump(), **overrides})
            if problems := check_cost(model, settings, Settings().cost_limits()):
                raise SpecError(problems)
        return model, settings
    except SpecError as exc:
        err.print(f"[bold red]error:[/] {file} is not a valid job or model spec:")
        for p in exc.problems:
            err.print(f"  {p.path or '(document)'}: {p.message}", markup=False, highlight=False)
        raise typer.Exit(EXIT_BAD_SPEC) from None


class _progress:  # noqa: N801 - used like a function in `with`
    """Per-chain progress bars on a terminal; a no-op otherwise."""

    def __init__(self, console: Console, settings: SamplerSettings, show: bool) -> None:
        self.show = show
        self.console = console
        self.settings = settings

    def __enter__(self) -> Any:
        if not self.show:
            return None
        self.bars = chain_bars(self.console)
        total = self.settings.warmup + self.settings.draws
        self.tasks = [self.bars.add_task("", total=total, chain=c, phase="starting", div=0)
                      for c in range(self.settings.chains)]
        self.bars.start()
        lock = threading.Lock()

        def report(p: Any) -> None:
            with lock:  # `of` grows with each round of `until`
                self.bars.update(self.tasks[p.chain], completed=p.iteration, total=p.of, phase=p.phase,
                                 div=p.divergences)

        return report

    def __exit__(self, *exc: object) -> None:
        if self.show:
            self.bars.stop()
