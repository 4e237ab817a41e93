"""The typer app: every verb of `chainyard`, in the order `chainyard --help` lists them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from cli import datasets, fit, priors, remote, serve, up

VERBS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("run", fit.run),
    ("validate", fit.validate),
    ("submit", remote.submit),
    ("status", remote.status),
    ("watch", remote.watch),
    ("summary", remote.summary),
    ("draws", remote.draws),
    ("extend", remote.extend),
    ("cancel", remote.cancel),
    ("list", remote.list_jobs),
    ("worker", serve.worker),
    ("api", serve.api),
    ("refit", serve.refit),
    ("up", up.up),
)
"""(name, function): the function's docstring is the verb's help, its annotated parameters its options."""

GROUPS: tuple[tuple[str, typer.Typer], ...] = (
    ("dataset", datasets.app),
    ("prior", priors.app),
)
"""(name, typer app): verbs with sub-verbs (`chainyard prior refit NAME`)."""


def create_app() -> typer.Typer:
    app = typer.Typer(add_completion=False, no_args_is_help=True, help="Bayesian inference (NUTS) as a service.")
    for name, verb in VERBS:
        app.command(name)(verb)
    for name, group in GROUPS:
        app.add_typer(group, name=name)
    return app
