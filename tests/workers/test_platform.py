"""CHAINYARD_PLATFORM: `gpu` without a CUDA device stops a worker and `chainyard run` with a message saying why
(this machine has no GPU, and the test venv has no CUDA plugin); anything but cpu/gpu is refused by Settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHAINYARD_PLATFORM": "gpu", "CHAINYARD_REDIS_URL": "redis://127.0.0.1:1/0",
           "CHAINYARD_COMPILE_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_worker_without_gpu_exits_2_naming_the_setting(tmp_path: Path) -> None:
    proc = _run([sys.executable, "-m", "workers", "--name", "w", "--data-dir", str(tmp_path / "w")], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "CHAINYARD_PLATFORM=gpu but JAX finds no cuda device" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_without_gpu_exits_2_naming_the_setting(tmp_path: Path) -> None:
    proc = _run([sys.executable, "-m", "cli", "run", "examples/eight_schools.yaml", "--quiet"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "CHAINYARD_PLATFORM=gpu but JAX finds no cuda device" in proc.stderr
    assert "jax[cuda12]" in proc.stderr


def test_settings_refuse_other_platforms() -> None:
    assert Settings(platform="gpu").platform == "gpu"
    assert Settings().platform == "cpu"
    with pytest.raises(ValidationError, match="platform"):
        Settings(platform="tpu")
