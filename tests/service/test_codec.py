"""Values in and out of Redis."""

from __future__ import annotations

import io

import numpy as np
import pytest

from service.codec import STAT_PREFIX, pack, pack_block, text, unpack, unpack_block


def test_arrays_round_trip_with_their_dtypes_and_names() -> None:
    arrays = {"1|county": np.arange(6.0).reshape(2, 3), "n": np.arange(4, dtype=np.int64),
              "flags": np.array([True, False])}
    back = unpack(pack(arrays))
    assert list(back) == list(arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)


def test_a_block_splits_back_into_draws_and_stats() -> None:
    draws = {"theta": np.ones((5, 8)), "1|g": np.zeros(5)}
    stats = {"diverging": np.zeros(5, bool), "step_size": np.full(5, 0.3)}
    assert set(unpack(pack_block(draws, stats))) == {"theta", "1|g", f"{STAT_PREFIX}diverging",
                                                     f"{STAT_PREFIX}step_size"}
    got_draws, got_stats = unpack_block(pack_block(draws, stats))
    assert got_draws.keys() == draws.keys() and got_stats.keys() == stats.keys()
    assert all(np.array_equal(got_stats[k], stats[k]) for k in stats)


def test_reading_never_unpickles() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, evil=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        unpack(buffer.getvalue())


def test_text() -> None:
    assert text(b"queued") == "queued" and text("x") == "x"
