"""Progress bars per chain for a job's `progress` events: rich on a terminal, tqdm in Jupyter, nothing elsewhere.

Used by `service.client` (imported only when a client waits with progress) and by the `chainyard watch` verb.
Nothing here imports JAX; rich and tqdm are imported when bars are made.

    bars = bars_for(True)
    for event, job in client.events(job_id):
        if event == "progress":
            bars.update(job)
    bars.close()
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any, Protocol


class Bars(Protocol):
    """What a waiting client drives: `update` with each job document of the event stream, `close` at the end."""

    def update(self, job: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def chain_bars(console: Any) -> Any:
    """One rich progress bar per chain: iteration of total, phase, divergences (hidden off a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("chain {task.fields[chain]}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[phase]:<8} div {task.fields[div]}"), TimeElapsedColumn(),
                    console=console, disable=not console.is_terminal)


class NoBars:
    """progress=False, or no terminal and no notebook to draw on (a pipe, a log file)."""

    def update(self, job: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class RichBars:
    """A terminal: rich bars on stderr, redrawn in place."""

    def __init__(self, console: Any) -> None:
        self.progress = chain_bars(console)
        self.tasks: dict[int, Any] = {}
        self.progress.start()

    def update(self, job: Mapping[str, Any]) -> None:
        for c in job.get("chains", []):
            if c["chain"] not in self.tasks:
                self.tasks[c["chain"]] = self.progress.add_task("", total=c["of"], chain=c["chain"],
                                                                phase=c["phase"], div=0)
            self.progress.update(self.tasks[c["chain"]], completed=c["iteration"], phase=c["phase"],
                                 div=c["divergences"])

    def close(self) -> None:
        self.progress.stop()


class TqdmBars:
    """Jupyter: tqdm's notebook widgets when ipywidgets is installed, else its plain text bars."""

    def __init__(self, tqdm: Any) -> None:
        self.tqdm = tqdm
        self.bars: dict[int, Any] = {}

    def update(self, job: Mapping[str, Any]) -> None:
        for c in job.get("chains", []):
            bar = self.bars.get(c["chain"])
            if bar is None:
                bar = self.bars[c["chain"]] = self.tqdm(total=c["of"], desc=f"chain {c['chain']}", unit="it")
            bar.n = c["iteration"]
            bar.set_postfix(phase=c["phase"], div=c["divergences"], refresh=False)
            bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def bars_for(progress: bool) -> Bars:
    """The bars that fit where this process runs; `NoBars` for progress=False."""
    if not progress:
        return NoBars()
    from rich.console import Console

    console = Console(stderr=True)
    if console.is_jupyter and importlib.util.find_spec("tqdm") is not None:
        if importlib.util.find_spec("ipywidgets") is not None:
            from tqdm.notebook import tqdm
        else:
            from tqdm import tqdm
        return TqdmBars(tqdm)
    if console.is_terminal:
        return RichBars(console)
    return NoBars()
