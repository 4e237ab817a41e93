"""The `chainyard` command: `main` runs the app that cli.app builds. JAX is imported only by the verbs that sample."""

from __future__ import annotations

import sys


def main() -> None:
    from cli.app import create_app

    try:
        create_app()()
    except BrokenPipeError:
        sys.exit(1)
