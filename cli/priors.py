"""`chainyard prior put|show|refit|schedule|unschedule|versions|elicit` against a chainyard API (design section 6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.console import EXIT_BAD_SPEC, err
from cli.remote import DEFAULT_URL, Token, Url, api_call, client, load_document, watch_job

app = typer.Typer(no_args_is_help=True, help="Empirical priors: definitions, refits, versions, elicitation.")


@app.command("put")
def put(name: str, file: Annotated[Path, typer.Argument(help="Definition {model, data_from, export, gate?}.")],
        url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Create or replace a prior definition."""
    definition = load_document(file)
    with client(url, token) as api:
        head = api_call(lambda: api.put_prior(name, definition))
    typer.echo(f"prior {head['name']} revision {head['revision']} (latest version: {head['latest'] or 'none'})")


@app.command("show")
def show(name: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """The definition, latest version, last refit and schedule (JSON; `schedule` is null without one)."""
    with client(url, token) as api:
        head = api_call(lambda: api.prior(name))
        head["schedule"] = api_call(lambda: _schedule_or_none(api, name))
        typer.echo(json.dumps(head, indent=1))


@app.command("schedule")
def schedule(
    name: str,
    cron: Annotated[str, typer.Option(help="Five fields (minute hour day-of-month month day-of-week) or a macro: "
                                           "@yearly, @monthly, @weekly, @daily, @hourly.")],
    timezone: Annotated[str, typer.Option(help="IANA timezone the cron fields are read in.")] = "UTC",
    suspend: Annotated[bool, typer.Option(help="Keep the schedule but do not run it.")] = False,
    url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Refit a prior on a cron schedule (replaces its schedule); prints when it runs next."""
    with client(url, token) as api:
        found = api_call(lambda: api.schedule_prior(name, cron, timezone, suspend=suspend))
    when = "suspended" if found["suspend"] else f"next run {found['next_run']}"
    typer.echo(f"prior {name}: {found['cron']} ({found['timezone']}), {when}, run by {found['backend']}")
    if not found["in_sync"]:
        err.print(f"[bold yellow]warning:[/] {found['note']}")


@app.command("unschedule")
def unschedule(name: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Stop refitting a prior on a schedule (its versions stay)."""
    with client(url, token) as api:
        api_call(lambda: api.unschedule_prior(name))
    typer.echo(f"prior {name}: no schedule")


def _schedule_or_none(api: Any, name: str) -> dict[str, Any] | None:
    from service.client import ApiError

    try:
        found: dict[str, Any] = api.prior_schedule(name)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    return found


@app.command("refit")
def refit(name: str, url: Url = DEFAULT_URL, token: Token = None,
          wait: Annotated[bool, typer.Option(help="Watch the refit job, then print what was published.")] = False
          ) -> None:
    """Refit a prior now on its dataset as it is; prints the refit job's id."""
    with client(url, token) as api:
        job = api_call(lambda: api.refit(name))
        typer.echo(job["id"])
        if wait:
            watch_job(api, job["id"])
            outcome = api_call(lambda: api.prior_refits(name))
            if outcome:
                typer.echo(_outcome(outcome[0]))


@app.command("versions")
def versions(name: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Every published version: number, source, dataset version and rows, diagnostics."""
    with client(url, token) as api:
        found = api_call(lambda: api.prior_versions(name))
    for v in found:
        origin = v.get("provenance") or {}
        where = f"dataset {origin['dataset']}@{origin['dataset_version']} ({origin['rows']} rows)" if origin else ""
        d = v.get("diagnostics") or {}
        figures = (f"r_hat {d['max_rhat']:.4f}, ess_bulk {d['min_ess_bulk']:.0f}"
                   if d.get("max_rhat") is not None and d.get("min_ess_bulk") is not None else "")
        typer.echo(f"{v['version']:>4}  {v['source']:<8}  {where}  {figures}".rstrip())


@app.command("elicit")
def elicit(
    quantile: Annotated[list[str], typer.Option("--quantile", "-q", help="PROB=VALUE, e.g. 0.5=0.7 (repeat).")],
    family: Annotated[str, typer.Option(help="A family, or auto (the best fit).")] = "auto",
    save: Annotated[str | None, typer.Option(help="Save as a version of this prior: NAME:VARIABLE.")] = None,
    url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Fit a distribution to expert quantiles; prints each family's fit error and the best spec string."""
    quantiles: dict[float | str, float] = {}
    for item in quantile:
        prob, sep, value = item.partition("=")
        try:
            quantiles[prob.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            err.print(f"[bold red]error:[/] --quantile {item!r}: write PROB=VALUE, e.g. 0.5=0.7")
            raise typer.Exit(EXIT_BAD_SPEC)
    body: dict[str, Any] = {"family": family, "quantiles": quantiles}
    with client(url, token) as api:
        result = api_call(lambda: api.elicit(family=family, quantiles=quantiles))
        for fit in result["fits"]:
            typer.echo(f"{fit['family']:<13} error {fit['error']:.3g}  {fit['spec']}")
        typer.echo(f"best: {result['best']['spec']}")
        if save:
            prior, _, variable = save.partition(":")
            version = api_call(lambda: api.save_elicited(prior, {variable or "x": body}))
            typer.echo(f"saved as {prior}@{version['version']}")


def _outcome(entry: dict[str, Any]) -> str:
    if entry["outcome"] == "succeeded":
        return f"published version {entry['version']} (dataset version {entry.get('dataset_version')})"
    return "not published: " + "; ".join(entry.get("reasons") or [])
