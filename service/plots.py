"""Trace and rank plots and the per-element R-hat/ESS table of a job's draws so far, drawn on the server.

Why on the server (ArviZ + matplotlib's Agg backend, PNG): the job page needs no JavaScript plotting library,
so there is nothing vendored to pin, audit or serve, the Content-Security-Policy can forbid every external
asset, and the page works with JavaScript off (img tags and a meta refresh). The cost is bounded: at most
MAX_ELEMENTS elements per plot, at most PLOT_DRAWS draws per chain (thinned), one render at a time per API
process, and every figure is cached per (job, kind, elements, draws so far), so a refresh with no new draws
costs nothing. matplotlib and ArviZ are imported inside the functions: the API starts without them, and
nothing here imports JAX.
"""

from __future__ import annotations

import io
import re
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from service import keys
from service.codec import STAT_PREFIX, unpack
from service.defaults import DIAGNOSTICS_CPU_SHARE
from service.jobs import blobs
from service.jobs.record import JobRecord, JobState
from service.live import MIN_DRAWS, concat_blocks

MAX_ELEMENTS = 8
"""Elements drawn per plot at most (a ?vars= asking for more gets the first MAX_ELEMENTS)."""
DEFAULT_ELEMENTS = 4
"""Elements drawn without ?vars=: the first ones, in the model's order."""
PLOT_DRAWS = 1000
"""Draws per chain drawn at most; longer chains are thinned evenly (a divergence marks its thinned draw)."""
CACHE_SIZE = 128
"""Figures (and tables) kept per API process, least recently used dropped first."""
CPU_SHARE = DIAGNOSTICS_CPU_SHARE
"""A running job's figures are redrawn at most once per (cost of the last drawing) / cpu_share seconds: by
default the share the live diagnostics keep to (Settings.diagnostics_cpu_share), so a watched job's page costs
no more than its figures in Prometheus."""
RHAT_FLAG = 1.01
ESS_FLAG = 400.0
"""Elements past these (R-hat above, bulk or tail ESS below) are flagged on the page."""
KINDS = ("trace", "rank")

_ELEMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\[(\d+)\]$")
_RENDER = threading.Lock()  # matplotlib's state is not thread-safe; one render at a time also bounds the CPU
T = TypeVar("T")


@dataclass(frozen=True)
class Draws:
    """A job's draws so far, every chain cut to the shortest one's length (ArviZ wants equal chains)."""

    variables: dict[str, np.ndarray]
    """name -> (chain, draw, ...) array."""
    diverging: np.ndarray | None
    """(chain, draw) booleans, when the sample stats are at hand."""

    @property
    def draws_per_chain(self) -> int:
        return int(next(iter(self.variables.values())).shape[1]) if self.variables else 0

    @property
    def chains(self) -> int:
        return int(next(iter(self.variables.values())).shape[0]) if self.variables else 0

    def elements(self) -> list[tuple[str, str, int]]:
        """(label, variable, flat index) of every element, in the model's order; a scalar's label is its name."""
        out = []
        for name, values in self.variables.items():
            size = int(np.prod(values.shape[2:], dtype=int))
            if values.ndim == 2:
                out.append((name, name, 0))
            else:
                out += [(f"{name}[{', '.join(map(str, np.unravel_index(i, values.shape[2:])))}]", name, i)
                        for i in range(size)]
        return out


def from_chains(per_chain: list[dict[str, np.ndarray] | None]) -> Draws | None:
    """Draws from each chain's live blocks (service.live.live_draws); None before MIN_DRAWS in some chain."""
    used = [a for a in per_chain if a is not None and _length(a) >= MIN_DRAWS]
    if not used:
        return None
    n = min(map(_length, used))
    variables = {k: np.stack([a[k][:n] for a in used]) for k in used[0] if not k.startswith(STAT_PREFIX)}
    key = STAT_PREFIX + "diverging"
    diverging = np.stack([a[key][:n] for a in used]).astype(bool) if all(key in a for a in used) else None
    return Draws(variables, diverging)


def _length(arrays: dict[str, np.ndarray]) -> int:
    return int(next(iter(arrays.values())).shape[0]) if arrays else 0


def select(draws: Draws, wanted: list[str]) -> list[tuple[str, str, int]]:
    """The elements `?vars=` names (variables, or `name[k]` with k the flat index), at most MAX_ELEMENTS;
    the first DEFAULT_ELEMENTS without any. Unknown names are skipped (the page lists the known ones)."""
    every = draws.elements()
    if not wanted:
        return every[:DEFAULT_ELEMENTS]
    chosen: list[tuple[str, str, int]] = []
    for name in wanted:
        match = _ELEMENT.match(name)
        if match and match[1] in draws.variables:
            size = int(np.prod(draws.variables[match[1]].shape[2:], dtype=int))
            if int(match[2]) < size:
                chosen += [e for e in every if e[1] == match[1] and e[2] == int(match[2])]
        else:
            chosen += [e for e in every if e[1] == name]
    unique = list(dict.fromkeys(chosen))
    return unique[:MAX_ELEMENTS]


def _thinned(draws: Draws, elements: list[tuple[str, str, int]]) -> Any:
    """InferenceData of the chosen elements, thinned to at most PLOT_DRAWS draws per chain."""
    import arviz as az

    n = draws.draws_per_chain
    step = max(1, -(-n // PLOT_DRAWS))
    kept = np.arange(0, n, step)
    posterior = {}
    for label, name, index in elements:
        values = draws.variables[name].reshape(draws.chains, n, -1)[:, :, index]
        posterior[label] = values[:, kept]
    stats = {}
    if draws.diverging is not None:  # a thinned draw is marked if any draw it stands for diverged
        padded = np.zeros((draws.chains, len(kept) * step), dtype=bool)
        padded[:, :n] = draws.diverging
        stats["diverging"] = padded.reshape(draws.chains, len(kept), step).any(axis=2)
    return az.from_dict(posterior=posterior, sample_stats=stats or None, coords={"draw": kept})


def render(kind: str, draws: Draws, elements: list[tuple[str, str, int]]) -> bytes:
    """A PNG of the trace (with divergences marked under it) or rank plot of `elements`."""
    with _RENDER, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        idata = _thinned(draws, elements)
        names = [e[0] for e in elements]
        rows = max(1, len(names))
        if kind == "trace":
            figure = Figure(figsize=(11, 1.9 * rows), dpi=80, layout="constrained")
            axes = figure.subplots(rows, 2, squeeze=False)
            az.plot_trace(idata, var_names=names, axes=axes, compact=False, show=False,
                          divergences="bottom" if "diverging" in idata.get("sample_stats", {}) else None)
        else:
            cols = min(4, rows)
            figure = Figure(figsize=(11, 2.4 * -(-rows // cols)), dpi=80, layout="constrained")
            axes = figure.subplots(-(-rows // cols), cols, squeeze=False)
            az.plot_rank(idata, var_names=names, ax=axes.ravel()[:rows], show=False)
            for extra in axes.ravel()[rows:]:
                extra.set_visible(False)
        buffer = io.BytesIO()
        FigureCanvasAgg(figure).print_png(buffer)
        return buffer.getvalue()


def table(draws: Draws) -> list[dict[str, Any]]:
    """R-hat and bulk/tail ESS of every element (ArviZ, rank-normalized), in the model's order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        dataset = az.convert_to_dataset(draws.variables)
        figures = {"r_hat": az.rhat(dataset), "ess_bulk": az.ess(dataset, method="bulk"),
                   "ess_tail": az.ess(dataset, method="tail")}
    rows = []
    for label, name, index in draws.elements():
        row: dict[str, Any] = {"variable": label}
        for column, ds in figures.items():
            value = float(np.ravel(ds[name].values)[index])
            row[column] = value if np.isfinite(value) else None
        rows.append(row)
    return rows


def flagged(row: dict[str, Any]) -> bool:
    """Past R-hat RHAT_FLAG or below ESS_FLAG (bulk or tail)."""
    rhat, bulk, tail = row.get("r_hat"), row.get("ess_bulk"), row.get("ess_tail")
    return bool((rhat is not None and rhat > RHAT_FLAG) or (bulk is not None and bulk < ESS_FLAG)
                or (tail is not None and tail < ESS_FLAG))


class FigureCache:
    """A bounded LRU of computed figures and tables, keyed by what they depend on (the draw count included).

    A `family` (the same figure of a running job, whatever its draw count) shares a `budget` (its job) with
    the job's other figures: after a computation costing c seconds the budget is spent for c / cpu_share
    seconds more, and until then a new key gets the family's latest value. So a running job's figures cost at
    most `cpu_share` of a core however often its page is refreshed and however many people watch it.
    """

    def __init__(self, size: int = CACHE_SIZE, *, cpu_share: float = CPU_SHARE) -> None:
        self.size = size
        self.cpu_share = cpu_share
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._latest: OrderedDict[Hashable, Any] = OrderedDict()
        self._spent_until: OrderedDict[Hashable, float] = OrderedDict()
        self._lock = threading.Lock()
        self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], T], *, family: Hashable | None = None,
            budget: Hashable | None = None) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                found: T = self._items[key]
                return found
            if family in self._latest and time.monotonic() < self._spent_until.get(budget, 0.0):
                latest: T = self._latest[family]
                return latest
        started = time.perf_counter()
        computed = compute()  # outside the lock: a slow render does not hold up cached answers
        cost = time.perf_counter() - started
        with self._lock:
            self.misses += 1
            self._put(self._items, key, computed)
            if family is not None:
                self._put(self._latest, family, computed)
                now = time.monotonic()
                self._put(self._spent_until, budget, max(now, self._spent_until.get(budget, now))
                          + cost / self.cpu_share)
        return computed

    def _put(self, items: OrderedDict[Hashable, Any], key: Hashable, value: Any) -> None:
        items[key] = value
        items.move_to_end(key)
        while len(items) > self.size:
            items.popitem(last=False)


class JobFigures:
    """A job's plots and convergence table, from its live blocks (or, once it succeeded, its stored draws),
    cached per draw count: the key is read first (one small read per chain), the draws only on a miss."""

    def __init__(self, redis: Any, *, size: int = CACHE_SIZE, cpu_share: float = CPU_SHARE) -> None:
        self.r = redis
        self.figures = FigureCache(size, cpu_share=cpu_share)
        self._draws = FigureCache(4)  # whole draws are big (175 elements x 4000 draws: 5.6 MB): only a few
        self.live = LiveReader(redis)

    def key(self, record: JobRecord) -> str:
        """What the figures depend on: the state and every chain's iterations (a block and its count are
        written together, so equal counts mean equal draws)."""
        pipe = self.r.pipeline()
        for c in range(record.chains):
            pipe.hget(keys.chain(record.id, c), "iteration")
        return "-".join([record.state.value, *(str(int(i or 0)) for i in pipe.execute())])

    def draws(self, record: JobRecord, key: str) -> Draws | None:
        return self._draws.get((record.id, key), lambda: self._load(record))

    def plot(self, record: JobRecord, kind: str, wanted: list[str]) -> bytes | None:
        """The PNG of `kind` for the elements `wanted` names; None before any draws."""
        key = self.key(record)
        draws = self.draws(record, key)
        if draws is None:
            return None
        elements = select(draws, wanted)
        return self.figures.get((record.id, kind, tuple(elements), key), lambda: render(kind, draws, elements),
                                family=self._family(record, kind, tuple(elements)), budget=record.id)

    def table(self, record: JobRecord, key: str) -> list[dict[str, Any]]:
        draws = self.draws(record, key)
        return [] if draws is None else self.figures.get((record.id, "table", key), lambda: table(draws),
                                                         family=self._family(record, "table"), budget=record.id)

    @staticmethod
    def _family(record: JobRecord, *what: Hashable) -> Hashable | None:
        """Figures of a running job are throttled; a finished job's are drawn once for good."""
        return None if record.state.terminal else (record.id, *what)

    def _load(self, record: JobRecord) -> Draws | None:
        found = from_chains(self.live.read(record.id, record.chains))
        if record.state == JobState.SUCCEEDED:
            blob = blobs.read(self.r, keys.result_file(record.id, "draws"))
            if blob is not None:
                stored = unpack(blob)
                diverging = found.diverging if found is not None and found.diverging is not None and (
                    found.diverging.shape == next(iter(stored.values())).shape[:2]) else None
                return Draws(stored, diverging)
        return found


class LiveReader:
    """Each chain's live blocks, read incrementally: a refresh unpacks only the blocks pushed since the last
    one (a running job's page would otherwise cost its whole history per refresh). A few jobs are kept."""

    def __init__(self, redis: Any, *, jobs: int = 4) -> None:
        self.r = redis
        self.jobs = jobs
        self._seen: OrderedDict[str, list[tuple[int, dict[str, np.ndarray] | None]]] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, job_id: str, chains: int) -> list[dict[str, np.ndarray] | None]:
        with self._lock:
            seen = self._seen.pop(job_id, None) or [(0, None)] * chains
            pipe = self.r.pipeline()  # MULTI/EXEC: the new blocks and the length agree
            for c in range(chains):
                pipe.lrange(keys.live_blocks(job_id, c), seen[c][0], -1)
                pipe.llen(keys.live_blocks(job_id, c))
            replies = pipe.execute()
            now = []
            for c in range(chains):
                new, length = replies[2 * c], int(replies[2 * c + 1])
                count, arrays = seen[c]
                if length < count:  # the chain restarted from a checkpoint: its list was reset
                    new, count, arrays = self.r.lrange(keys.live_blocks(job_id, c), 0, -1), 0, None
                added = concat_blocks(new)
                if arrays is not None and added is not None:
                    arrays = {k: np.concatenate([arrays[k], added[k]]) for k in arrays}
                now.append((count + len(new), arrays if added is None else arrays or added))
            self._seen[job_id] = now
            while len(self._seen) > self.jobs:
                self._seen.popitem(last=False)
            return [arrays for _, arrays in now]
