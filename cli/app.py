"""The typer app: every verb of `chainyard`, in the order `chainyard --help` lists them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from cli import fit, remote, serve, up

VERBS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("run", fit.run),
    ("validate", fit.validate),
    ("submit", remote.submit),
    ("status", remote.status),
    ("watch", remote.watch),
    ("summary", remote.summary),
    ("draws", remote.draws),
    ("cancel", remote.cancel),
    ("list", remote.list_jobs),
    ("worker", serve.worker),
    ("api", serve.api),
    ("refit", serve.refit),
    ("up", up.up),
)
"""(name, function): the function's docstring is the verb's help, its annotated parameters its options."""


def create_app() -> typer.Typer:
    app = typer.Typer(add_completion=False, no_args_is_help=True, help="Bayesian inference (NUTS) as a service.")
    for name, verb in VERBS:
        app.command(name)(verb)
    return app
