"""Checkpoints of one job's chains on a worker's volume.

Layout under the job's checkpoint directory:

    job.json                  which job this directory belongs to (fingerprint, seed)
    chain-<c>/block-<b>.npz   one file per checkpoint write: the kept draws (`draw/<name>`)
                              and sample stats (`stat/<name>`) of the blocks run since the
                              write before (one or more: `Chain.checkpoint_seconds`), and the
                              full sampler state after them, one array per field
                              (`state/<field path>`, see workers.state.SamplerState)

Format 3 packs a block's arrays by dtype: one member `pack/<n>` per dtype holds them all
flattened and concatenated, and the metadata lists each array's name, member, offset and
shape (`read_block` gives them back). A zip member costs far more to write than its
bytes (eight schools' final block: 49 arrays, 138 kB), and the whole file is built in
memory and written at once. Format 2 (one member per array) is still read.

Each block file is written to a temporary name, fsynced and renamed, so a reader
sees either the whole block or none of it. The newest block file holds the state
to resume from. Writes run off the sampling thread (`ChainStore.save` queues the
block and returns; the chain samples on while it is written), a chain's blocks one
at a time in order, so whatever a kill leaves on disk is a prefix of the chain's
blocks, and the chain resumes from its newest one exactly as from any other.
Loading, clearing and stopping wait for the queue; a finished chain's results do
not (its last write overlaps whatever comes next). Files are npz read with `allow_pickle=False`: reading a
checkpoint never runs code. Arrays only; metadata is a JSON string stored as a
unicode array.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.exceptions import CheckpointMismatchError

FORMAT = 3
"""Layout version of job.json and the block files. 3: arrays packed by dtype; 2: one member per array, the sampler
state by field name (still read); 1: by position (refused)."""
READABLE = frozenset({2, 3})
_BLOCK_RE = re.compile(r"^block-(\d{6})\.npz$")


def write_atomic(path: Path, write: Any) -> None:
    """Write a file so that it appears complete or not at all, even across power loss."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def claim_directory(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create or reopen a job's checkpoint directory; refuse one that holds another job.

    Returns the manifest stored there (which may carry the seed an earlier run chose).
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / "job.json"
    if path.exists():
        stored = json.loads(path.read_text())
        check_format(stored.get("format"), root)
        if stored.get("job") != manifest["job"]:
            raise CheckpointMismatchError(f"{root} holds checkpoints of another job; use a new directory")
        return dict(stored)
    stored = {"format": FORMAT, **manifest}
    write_atomic(path, lambda f: f.write(json.dumps(stored, indent=1).encode()))
    return stored


def check_format(found: Any, where: Path) -> None:
    """Refuse checkpoints of a layout version this chainyard does not read, saying what to do."""
    if found in READABLE:
        return
    readable = " and ".join(map(str, sorted(READABLE)))
    if isinstance(found, int) and found > FORMAT:
        raise CheckpointMismatchError(
            f"{where} holds checkpoint format {found}, written by a newer chainyard (this one reads {readable}); "
            "upgrade chainyard or use a new directory")
    raise CheckpointMismatchError(
        f"{where} holds checkpoint format {found}, written by an older chainyard (this one reads {readable}); "
        "it cannot be resumed: delete the directory and rerun the job from the start")


@dataclass
class Resumed:
    """What the newest checkpoint of a chain holds, plus the draws of all its blocks."""

    block: int
    """Index of the newest block."""
    state: dict[str, np.ndarray]
    """Sampler state after the newest block, by field path (`SamplerState.to_arrays()`)."""
    meta: dict[str, Any]
    """Metadata of the newest block."""
    draws: list[dict[str, np.ndarray]] = field(default_factory=list)
    """Kept draws of every block, oldest first."""
    stats: list[dict[str, np.ndarray]] = field(default_factory=list)
    """Sample stats of every block, oldest first."""
    metas: list[dict[str, Any]] = field(default_factory=list)
    """Metadata of every block, oldest first."""


class _Writer:
    """Writes block files on background threads: per chain directory in the order saved, one at a time; a
    failed write is raised by the next save or flush of that directory. Its threads finish queued writes before
    the process exits normally."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="checkpoint")
        self._done = threading.Condition()
        self._queues: dict[Path, list[tuple[Path, dict[str, np.ndarray], dict[str, Any]]]] = {}
        """Blocks not yet written, per directory; a directory's entry exists while its drain runs."""
        self._errors: dict[Path, BaseException] = {}

    def save(self, directory: Path, path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        with self._done:
            self._raise(directory)
            queue = self._queues.get(directory)
            if queue is None:
                self._queues[directory] = [(path, arrays, meta)]
                self._pool.submit(self._drain, directory)
            else:
                queue.append((path, arrays, meta))

    def flush(self, directory: Path) -> None:
        with self._done:
            self._done.wait_for(lambda: directory not in self._queues)
            self._raise(directory)

    def _raise(self, directory: Path) -> None:
        error = self._errors.pop(directory, None)
        if error is not None:
            raise error

    def _drain(self, directory: Path) -> None:
        while True:
            with self._done:
                queue = self._queues[directory]
                if not queue:
                    del self._queues[directory]
                    self._done.notify_all()
                    return
                path, arrays, meta = queue[0]
            try:
                _write_block(path, arrays, meta)
            except Exception as exc:  # e.g. a full disk: handed to the chain's next save or flush
                with self._done:
                    self._errors[directory] = exc
                    self._queues[directory].clear()  # later blocks cannot follow a missing one
                continue
            with self._done:
                queue.pop(0)


def pack_block(arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> bytes:
    """A block file's bytes (format 3): `arrays` flattened into one member per dtype, `meta` with their index."""
    packs: dict[str, tuple[int, list[np.ndarray]]] = {}  # dtype -> (member number, its arrays in order)
    filled: dict[int, int] = {}
    index = []
    for name, value in arrays.items():
        value = np.asarray(value)
        member, parts = packs.setdefault(value.dtype.str, (len(packs), []))
        index.append([name, member, filled.get(member, 0), list(value.shape)])
        filled[member] = filled.get(member, 0) + value.size
        parts.append(value.ravel())
    members = {f"pack/{member}": np.concatenate(parts) for member, parts in packs.values()}
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.asarray(json.dumps({**meta, "format": FORMAT, "arrays": index})), **members)  # type: ignore[arg-type]
    return buffer.getvalue()


def read_block(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A block file's arrays by name and its metadata (format 2 or 3; never runs code: no pickle)."""
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        check_format(meta.get("format"), path.parent)
        if meta["format"] == 2:
            return {k: npz[k] for k in npz.files if k != "meta"}, meta
        packs = {k: npz[k] for k in npz.files if k.startswith("pack/")}
    arrays = {}
    for name, member, start, shape in meta.pop("arrays"):
        flat = packs[f"pack/{member}"]
        size = int(np.prod(shape, dtype=np.int64))
        arrays[name] = flat[start:start + size].reshape(shape).copy()  # not views: the packs (state too) go
    return arrays, meta


def _write_block(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    data = pack_block(arrays, meta)
    write_atomic(path, lambda f: f.write(data))


_writer = _Writer()


class ChainStore:
    """Block files of one chain."""

    def __init__(self, root: Path, chain: int) -> None:
        self.dir = root / f"chain-{chain}"
        self.dir.mkdir(parents=True, exist_ok=True)

    def save(self, block: int, state: Mapping[str, np.ndarray], draws: dict[str, np.ndarray],
             stats: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Queue block `block`: its draws and stats, and the sampler state after it by field path; it is written
        after the chain's earlier blocks, off this thread. Raises the error of an earlier failed write."""
        arrays: dict[str, np.ndarray] = {f"state/{k}": np.asarray(v) for k, v in state.items()}
        arrays.update({f"draw/{k}": v for k, v in draws.items()})
        arrays.update({f"stat/{k}": v for k, v in stats.items()})
        _writer.save(self.dir, self.dir / f"block-{block:06d}.npz", arrays, {**meta, "block": block})

    def flush(self) -> None:
        """Wait until every queued block of this chain is on disk; raise the error of a failed write."""
        _writer.flush(self.dir)

    def clear(self) -> None:
        """Remove every block file (the chain continues from a newer snapshot kept elsewhere). Newest first, so a
        kill midway leaves a prefix of the blocks, which still loads (a gap at block 0 would not, ever again)."""
        self.flush()
        for path in reversed(self.blocks()):
            path.unlink()

    def remove(self) -> None:
        """Delete the chain's directory once its queued writes are done (a later write would recreate a block in
        it); a failed write does not matter then."""
        with contextlib.suppress(Exception):
            self.flush()
        shutil.rmtree(self.dir, ignore_errors=True)

    def blocks(self) -> list[Path]:
        return sorted(p for p in self.dir.iterdir() if _BLOCK_RE.match(p.name))

    def load(self) -> Resumed | None:
        """The newest block's state and metadata and every block's draws; None before the first block."""
        self.flush()
        files = self.blocks()
        if not files:
            return None
        resumed = Resumed(block=len(files) - 1, state={}, meta={})
        for i, path in enumerate(files):
            arrays, meta = read_block(path)
            if meta.get("block") != i:
                raise CheckpointMismatchError(f"{path}: block {i} is missing")
            resumed.draws.append({k[5:]: v for k, v in arrays.items() if k.startswith("draw/")})
            resumed.stats.append({k[5:]: v for k, v in arrays.items() if k.startswith("stat/")})
            resumed.metas.append(meta)
            if i == resumed.block:
                resumed.state = {k[6:]: v for k, v in arrays.items() if k.startswith("state/")}
                resumed.meta = meta
        return resumed
