"""The worker's address-space cap: an allocation past it fails (and the process lives on) instead of the
kernel's OOM killer ending the pod."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from workers.worker import cap_memory

PROGRAM = """
import sys
from pathlib import Path
from workers.worker import cap_memory
print(cap_memory(0, cgroup=Path(sys.argv[1])), flush=True)
import jax, jax.numpy as jnp
jax.config.update("jax_platforms", "cpu")
f = jax.jit(lambda a, b: jnp.cumsum(a[:, None] * b[None, :], axis=0)[-1].sum())
try:
    float(f(jnp.ones(30000), jnp.ones(30000)))  # a 7.2 GB intermediate (computed at once: not dispatched)
    print("allocated")
except Exception as exc:
    print(type(exc).__name__, str(exc).split(":")[0])
print(float(f(jnp.ones(100), jnp.ones(100))))  # and the process still computes
"""


def run(cgroup_text: str, tmp_path: Path) -> list[str]:
    cgroup = tmp_path / "memory.max"
    cgroup.write_text(cgroup_text + "\n")
    out = subprocess.run([sys.executable, "-c", PROGRAM, str(cgroup)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")


def test_under_the_containers_limit_an_oversized_allocation_fails_and_the_process_lives(tmp_path: Path) -> None:
    lines = run(str(3 * 2**30), tmp_path)
    assert lines[:3] == [str(3 * 2**30), "JaxRuntimeError RESOURCE_EXHAUSTED", "10000.0"]


def test_no_container_limit_no_cap(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("max\n")
    assert cap_memory(0, cgroup=tmp_path / "memory.max") is None
    assert cap_memory(0, cgroup=tmp_path / "absent") is None
