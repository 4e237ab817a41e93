"""Checkpoint files: the sampler state by field name, older layouts refused with what to do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.exceptions import CheckpointMismatchError
from service.language.validate import validate
from service.sampler import SamplerSettings
from tests.workers.test_state import FIELDS, FISHER_FIELDS

pytestmark = pytest.mark.usefixtures("jax_ready")

SETTINGS = SamplerSettings(chains=1, warmup=20, draws=10, seed=3)
OLDER = (r"written by an older chainyard \(this one reads 2 and 3\); it cannot be resumed: delete the directory and "
         "rerun")


def test_block_files_hold_the_sampler_state_by_field_name(eight_schools: dict[str, Any], tmp_path: Path) -> None:
    from workers.checkpoint import ChainStore, read_block
    from workers.engine import Engine

    Engine().run(validate(eight_schools), SETTINGS, checkpoint_dir=tmp_path)
    ChainStore(tmp_path, 0).flush()  # the last block may still be being written when run returns
    newest = sorted(tmp_path.glob("chain-0/block-*.npz"))[-1]
    with np.load(newest, allow_pickle=False) as npz:  # packed: one member per dtype, not one per array
        members = set(npz.files)
        index = json.loads(str(npz["meta"]))["arrays"]
    assert members == {"meta"} | {f"pack/{i}" for i in range(len({member for _, member, _, _ in index}))}
    assert len(members) <= 6 < 40 < len(index)  # a member per dtype (float64, int64, bool, ...); 49 arrays
    arrays, meta = read_block(newest)
    assert {k.removeprefix("state/") for k in arrays if k.startswith("state/")} == FIELDS | FISHER_FIELDS
    assert int(arrays["state/iteration"]) == 30
    assert arrays["draw/theta"].shape == (10, 8) and arrays["stat/diverging"].dtype == np.bool_
    assert meta["format"] == 3 and "arrays" not in meta
    assert meta["iteration"] == meta["progress"]["iteration"] == 30
    assert meta["progress"]["phase"] == "done"
    assert json.loads((tmp_path / "job.json").read_text())["format"] == 3


def test_pack_and_read_give_every_array_back_exactly(tmp_path: Path) -> None:
    from workers.checkpoint import pack_block, read_block

    rng = np.random.default_rng(0)
    arrays = {"state/a": rng.normal(size=(3, 4)), "state/i": np.int64(7), "draw/b": rng.normal(size=5),
              "stat/d": rng.random(6) < 0.5, "stat/n": np.arange(6, dtype=np.int32), "state/e": np.zeros((0, 2))}
    path = tmp_path / "block-000000.npz"
    path.write_bytes(pack_block(arrays, {"block": 0}))
    got, meta = read_block(path)
    assert list(got) == list(arrays) and meta == {"block": 0, "format": 3}
    for name, value in arrays.items():
        assert got[name].dtype == np.asarray(value).dtype and np.array_equal(got[name], value), name
        assert got[name].base is None, name  # its own memory: a block's draws do not keep its state alive


def test_a_format_2_checkpoint_resumes_bit_identically(eight_schools: dict[str, Any], tmp_path: Path) -> None:
    """Directories written before format 3 (one npz member per array), as a worker's volume holds them across an
    upgrade, resume as they did."""
    from workers.checkpoint import ChainStore, read_block
    from workers.engine import Engine

    model = validate(eight_schools)
    settings = SamplerSettings(chains=1, warmup=20, draws=30, seed=3)
    reference = Engine().run(model, settings)
    Engine(max_block=10, block_seconds=0.0).run(model, SamplerSettings(chains=1, warmup=20, draws=5, seed=3),
                                                checkpoint_dir=tmp_path)
    ChainStore(tmp_path, 0).flush()
    for path in sorted(tmp_path.glob("chain-0/block-*.npz")):  # rewritten as format 2
        arrays, meta = read_block(path)
        np.savez(path, meta=np.asarray(json.dumps({**meta, "format": 2})), **arrays)  # type: ignore[arg-type]
    manifest = json.loads((tmp_path / "job.json").read_text())
    (tmp_path / "job.json").write_text(json.dumps({**manifest, "format": 2}))
    resumed = Engine().run(model, settings, checkpoint_dir=tmp_path)
    for name in reference.draws:
        assert np.array_equal(resumed.draws[name], reference.draws[name]), name


def write_format_1(root: Path, fingerprint: str) -> None:
    """A directory as chainyard wrote it before format 2: the state as anonymous leaves state/0, state/1, ..."""
    (root / "chain-0").mkdir(parents=True)
    (root / "job.json").write_text(json.dumps({"format": 1, "job": fingerprint, "seed": 3}))
    meta = {"job": fingerprint, "chain": 0, "iteration": 16, "format": 1, "block": 0, "n_state": 2}
    np.savez(root / "chain-0" / "block-000000.npz", **{"state/0": np.int64(16), "state/1": np.zeros(10),
                                                      "meta": np.asarray(json.dumps(meta))})


def test_a_format_1_checkpoint_is_refused_with_what_to_do(eight_schools: dict[str, Any], tmp_path: Path) -> None:
    from workers.checkpoint import ChainStore
    from workers.engine import Engine, job_fingerprint

    model = validate(eight_schools)
    write_format_1(tmp_path, job_fingerprint(model, SETTINGS, 3))
    with pytest.raises(CheckpointMismatchError, match=f"checkpoint format 1, {OLDER}"):
        Engine().run(model, SETTINGS, checkpoint_dir=tmp_path)
    # a worker opening the chain's files directly gets the same answer
    with pytest.raises(CheckpointMismatchError, match=OLDER):
        ChainStore(tmp_path, 0).load()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda a: a.pop("state/adapt_state/inverse_mass_matrix"), "adapt_state/inverse_mass_matrix missing"),
        (lambda a: a.update({"state/position": np.zeros((2, 10))}),
         r"position is float64\[2, 10\], expected float64\[10\]"),
    ],
)
def test_a_checkpoint_missing_or_misshaping_a_field_is_refused(
        eight_schools: dict[str, Any], tmp_path: Path, tamper: Any, message: str) -> None:
    from workers.checkpoint import ChainStore, pack_block, read_block
    from workers.engine import Engine

    model = validate(eight_schools)
    Engine().run(model, SETTINGS, checkpoint_dir=tmp_path)
    ChainStore(tmp_path, 0).flush()
    newest = sorted(tmp_path.glob("chain-0/block-*.npz"))[-1]
    arrays, meta = read_block(newest)
    tamper(arrays)
    newest.write_bytes(pack_block(arrays, meta))
    with pytest.raises(CheckpointMismatchError, match=f"chain-0: sampler state does not match the model: {message}"):
        Engine().run(model, SETTINGS, checkpoint_dir=tmp_path)
