"""Values in and out of Redis: arrays as npz bytes (read back with allow_pickle=False: no code runs), a block's
draws and sample stats as one npz, and replies as text."""

from __future__ import annotations

import io
import json

import numpy as np

STAT_PREFIX = "stat."
"""Sample stats share a block's npz with the draws under this prefix (a variable name cannot contain '.')."""


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays -> npz bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def pack_block(draws: dict[str, np.ndarray], stats: dict[str, np.ndarray]) -> bytes:
    """A block (or a whole chain) of kept draws and their sample stats -> npz bytes."""
    return pack({**draws, **{STAT_PREFIX + k: v for k, v in stats.items()}})


def unpack_block(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """npz bytes from `pack_block` -> (draws, stats)."""
    arrays = unpack(blob)
    draws = {k: v for k, v in arrays.items() if not k.startswith(STAT_PREFIX)}
    stats = {k[len(STAT_PREFIX):]: v for k, v in arrays.items() if k.startswith(STAT_PREFIX)}
    return draws, stats


STATE_PREFIX = "state/"


def pack_state(state: dict[str, np.ndarray], meta: dict[str, object]) -> bytes:
    """A chain's sampler state (by field path) and its metadata (JSON) -> npz bytes."""
    return pack({**{STATE_PREFIX + k: np.asarray(v) for k, v in state.items()}, "meta": np.asarray(json.dumps(meta))})


def unpack_state(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """npz bytes from `pack_state` -> (state, metadata)."""
    arrays = unpack(blob)
    meta = json.loads(str(arrays.pop("meta")))
    return {k[len(STATE_PREFIX):]: v for k, v in arrays.items() if k.startswith(STATE_PREFIX)}, meta


def text(value: bytes | str) -> str:
    """A Redis reply as text (the clients here do not decode responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)
