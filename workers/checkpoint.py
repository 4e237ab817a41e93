"""Checkpoints of one job's chains on a worker's volume.

Layout under the job's checkpoint directory:

    job.json                  which job this directory belongs to (fingerprint, seed)
    chain-<c>/block-<b>.npz   one file per finished block: the block's kept draws and
                              sample stats, and the full sampler state after it

Each block file is written to a temporary name, fsynced and renamed, so a reader
sees either the whole block or none of it. The newest block file holds the state
to resume from. Files are npz read with `allow_pickle=False`: reading a
checkpoint never runs code. Arrays only; metadata is a JSON string stored as a
unicode array.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.exceptions import CheckpointMismatchError

FORMAT = 1
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
        if stored.get("format") != FORMAT or stored.get("job") != manifest["job"]:
            raise CheckpointMismatchError(
                f"{root} holds checkpoints of another job (or engine format); use a new directory"
            )
        return dict(stored)
    stored = {"format": FORMAT, **manifest}
    write_atomic(path, lambda f: f.write(json.dumps(stored, indent=1).encode()))
    return stored


@dataclass
class Resumed:
    """What the newest checkpoint of a chain holds, plus the draws of all its blocks."""

    block: int
    state: list[np.ndarray]
    meta: dict[str, Any]
    draws: list[dict[str, np.ndarray]] = field(default_factory=list)
    stats: list[dict[str, np.ndarray]] = field(default_factory=list)


class ChainStore:
    """Block files of one chain."""

    def __init__(self, root: Path, chain: int) -> None:
        self.dir = root / f"chain-{chain}"
        self.dir.mkdir(parents=True, exist_ok=True)

    def save(self, block: int, state: list[np.ndarray], draws: dict[str, np.ndarray],
             stats: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        arrays: dict[str, np.ndarray] = {f"state/{i}": np.asarray(leaf) for i, leaf in enumerate(state)}
        arrays.update({f"draw/{k}": v for k, v in draws.items()})
        arrays.update({f"stat/{k}": v for k, v in stats.items()})
        arrays["meta"] = np.asarray(json.dumps({**meta, "format": FORMAT, "block": block, "n_state": len(state)}))
        write_atomic(self.dir / f"block-{block:06d}.npz", lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]

    def blocks(self) -> list[Path]:
        return sorted(p for p in self.dir.iterdir() if _BLOCK_RE.match(p.name))

    def load(self) -> Resumed | None:
        files = self.blocks()
        if not files:
            return None
        resumed: Resumed | None = None
        draws, stats = [], []
        for i, path in enumerate(files):
            with np.load(path, allow_pickle=False) as npz:
                meta = json.loads(str(npz["meta"]))
                if meta.get("format") != FORMAT or meta.get("block") != i:
                    raise CheckpointMismatchError(f"{path}: unexpected checkpoint format or a missing block")
                draws.append({k[5:]: npz[k] for k in npz.files if k.startswith("draw/")})
                stats.append({k[5:]: npz[k] for k in npz.files if k.startswith("stat/")})
                if i == len(files) - 1:
                    state = [npz[f"state/{j}"] for j in range(meta["n_state"])]
                    resumed = Resumed(block=i, state=state, meta=meta)
        assert resumed is not None
        resumed.draws, resumed.stats = draws, stats
        return resumed
