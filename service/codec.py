"""Values in and out of Redis: arrays as npz bytes (read back with allow_pickle=False: no code runs) and
replies as text."""

from __future__ import annotations

import io

import numpy as np


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays -> npz bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def text(value: bytes | str) -> str:
    """A Redis reply as text (the clients here do not decode responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)
