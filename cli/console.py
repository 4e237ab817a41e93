"""What the verbs print and how they exit: the stderr console, exit codes, progress bars, the summary table."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from service.progress import chain_bars as chain_bars  # the verbs' bars are the Python client's

err = Console(stderr=True, soft_wrap=True)

EXIT_BAD_SPEC = 2
"""A bad spec, settings or request (400, 413, 422): every problem is printed, nothing runs."""
EXIT_FAILED = 3
"""Sampling failed (e.g. initialization), the job did not succeed, or the API is unreachable."""
EXIT_INTERRUPTED = 130
"""Stopped by SIGINT/SIGTERM; checkpoints are kept."""

SUMMARY_COLUMNS = ("mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "ess_bulk", "ess_tail", "r_hat")


def stdout() -> Console:
    """The terminal's width on a terminal; 160 columns into a pipe or file."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def print_summary(console: Console, result: dict[str, Any]) -> None:
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
    sampling = result.get("sampling") or {}
    if sampling.get("stopped"):
        console.print(f"until: {sampling['stopped']}", highlight=False)
    for e in sampling.get("extensions") or []:
        console.print(f"extended by {e['draws']} draws per chain ({e['from']} -> {e['to']})", highlight=False)
    if sampling.get("warm_start"):
        console.print(f"warm start from job {sampling['warm_start']}", highlight=False)
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
