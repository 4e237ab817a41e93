"""An append's bytes: the canonical bytes its hash covers, the npz it is stored as; rows as CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from service.codec import pack as pack_arrays
from service.codec import unpack as unpack_arrays

Columns = dict[str, list[Any]]
DTYPES = {"float": "<f8", "int": "<i8"}
"""How number columns are stored and hashed (little-endian, whatever the machine)."""


def _payload(kind: str, values: list[Any] | np.ndarray) -> bytes:
    if kind == "string":
        return json.dumps(list(values), ensure_ascii=False, separators=(",", ":")).encode()
    return np.asarray(values, dtype=DTYPES[kind]).tobytes()


def canonical(schema: Mapping[str, str], columns: Mapping[str, list[Any] | np.ndarray]) -> bytes:
    """The bytes an append's hash covers: per column in schema order its name, type, payload length and payload
    (float64 / int64 little-endian; strings as compact UTF-8 JSON)."""
    parts = []
    for col, kind in schema.items():
        payload = _payload(kind, columns[col])
        parts += [col.encode(), b"\0", kind.encode(), b"\0", len(payload).to_bytes(8, "little"), payload]
    return b"".join(parts)


def pack(schema: Mapping[str, str], columns: Columns) -> bytes:
    """One append as npz (no pickle): numbers as float64/int64 arrays, strings as UTF-8 JSON bytes (uint8), so
    no string is padded or truncated at a NUL as a fixed-width unicode array would be."""
    arrays = {f"c.{col}": np.frombuffer(_payload(kind, columns[col]), dtype=DTYPES.get(kind, np.uint8))
              for col, kind in schema.items()}
    return pack_arrays(arrays)


def unpack(schema: Mapping[str, str], blob: bytes) -> Columns:
    """npz from `pack` -> python lists (floats, ints, strs) per column."""
    arrays = unpack_arrays(blob)
    out: Columns = {}
    for col, kind in schema.items():
        values = arrays[f"c.{col}"]
        out[col] = json.loads(values.tobytes()) if kind == "string" else values.tolist()
    return out


def to_csv(columns: Columns) -> str:
    """Columns as CSV text with a header line (floats written to round-trip exactly)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*columns.values(), strict=True))
    return buffer.getvalue()
