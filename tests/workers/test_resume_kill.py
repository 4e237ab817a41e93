"""A `chainyard run` killed with SIGKILL during compile, warmup and sampling, restarted each time,
ends with draws bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.language.loader import load_file
from tests.conftest import EXAMPLES, subprocess_env
from workers.checkpoint import read_block

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

pytestmark = pytest.mark.slow

CHAINYARD = [sys.executable, "-m", "cli"]
WARMUP, DRAWS = 600, 600


def newest_iteration(ckpt: Path) -> int:
    """Smallest 'iteration' over chains of their newest complete block (0 before any block)."""
    chains = sorted(ckpt.glob("chain-*"))
    if len(chains) < 2:
        return 0
    done = []
    for chain in chains:
        blocks = sorted(chain.glob("block-*.npz"))
        if not blocks:
            return 0
        try:
            done.append(read_block(blocks[-1])[1]["iteration"])
        except (OSError, ValueError, KeyError):  # renamed away under us; next poll
            return 0
    return min(done)


def kill_when(proc: subprocess.Popen[bytes], ckpt: Path, condition: Any, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        it = newest_iteration(ckpt)
        if condition(it):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return it
        if proc.poll() is not None:
            raise AssertionError(f"run finished before the kill point (iteration {it})")
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("kill point never reached")


def posterior(path: Path) -> dict[str, np.ndarray]:
    idata = az.from_netcdf(str(path))
    return {k: idata.posterior[k].values for k in idata.posterior.data_vars}


@pytest.mark.parametrize("adaptation", ["stan", "fisher"])
def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path: Path, compile_cache: Path,
                                                               adaptation: str) -> None:
    job = tmp_path / "job.json"
    spec = load_file(EXAMPLES / "eight_schools.yaml")
    job.write_text(json.dumps({"model": spec, "sampler": {"chains": 2, "warmup": WARMUP, "draws": DRAWS,
                                                           "seed": 99, "adaptation": adaptation}}))
    reference = tmp_path / "reference.nc"
    subprocess.run([*CHAINYARD, "run", str(job), "--quiet", "--out", str(reference)], check=True,
                   env=subprocess_env(compile_cache), timeout=300)

    ckpt = tmp_path / "ckpt"
    cold_cache = tmp_path / "cold-cache"  # empty: the first run is killed while compiling
    # blocks of 5 iterations, written together every 0.05 s: a kill loses the blocks not yet written
    env = subprocess_env(cold_cache, CHAINYARD_MAX_BLOCK="5", CHAINYARD_BLOCK_SECONDS="0.001",
                         CHAINYARD_CHECKPOINT_SECONDS="0.05")
    cmd = [*CHAINYARD, "run", str(job), "--quiet", "--checkpoint-dir", str(ckpt)]
    rng = random.Random(5)
    kills: list[tuple[str, int]] = []

    def start() -> subprocess.Popen[bytes]:
        with open(tmp_path / "runs.log", "ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(cmd, env=env, stdout=log, stderr=log)

    # 1: during start-up / compilation, before any block exists
    proc = start()
    time.sleep(rng.uniform(1.0, 2.5))
    assert newest_iteration(ckpt) == 0
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills.append(("compile", 0))
    # 2, 3: twice during warmup, 4, 5: twice during sampling, each at a random iteration a little past where the
    # last kill landed (a loaded machine may overshoot a kill point; a near target leaves the rest of the run
    # to be resumed)
    for phase, end in (("warmup", WARMUP), ("warmup", WARMUP), ("sampling", WARMUP + DRAWS),
                       ("sampling", WARMUP + DRAWS)):
        low = newest_iteration(ckpt) + 1 if phase == "warmup" else max(newest_iteration(ckpt) + 1, WARMUP + 1)
        target = rng.randrange(low, max(low + 1, min(low + 150, end - 150)))
        it = kill_when(start(), ckpt, lambda i, t=target: i >= t)
        kills.append(("warmup" if it < WARMUP else "sampling", it))
    final = tmp_path / "final.nc"
    subprocess.run([*cmd, "--out", str(final)], check=True, env=env, timeout=300)

    assert [k for k, _ in kills][:2] == ["compile", "warmup"] and kills[-1][0] == "sampling", kills
    assert all(it < WARMUP + DRAWS for _, it in kills), kills  # every kill left work to resume
    ref, got = posterior(reference), posterior(final)
    assert ref.keys() == got.keys()
    for name in ref:
        assert np.array_equal(ref[name], got[name]), name
