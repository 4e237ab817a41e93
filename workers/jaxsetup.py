"""Process-wide JAX configuration, applied once before the first computation."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax

log = logging.getLogger(__name__)
_configured = False

XLA_BACKEND_OPTIONS = "xla_cpu_small_while_loop_byte_threshold=100000"
"""XLA CPU runs a while loop whose state is below this many bytes inline instead of through its thunk runtime,
which costs a fixed overhead per iteration; NUTS' tree building is nothing but such small loops. Draws are the
same bit for bit on the three bench models (bench/xla.py checks it), not on every program: one_comp_mm_elim_abs's
ODE solve compiles to different floating-point code (5 divergences instead of 14 with seed 1), so draws are a
function of this setting too, which every chainyard process applies alike. Measured on the loaded 2-core machine
(load 6-10, so rough): eight schools 4.8-5.4x faster; the
regression and the logistic 1.17x / 1.2x faster in one run, 0.76x / 0.74x in another (bench/results/xla.md): for
them the effect is within this machine's noise and needs a quiet remeasurement. At 1,000,000 the regression was
2.8x slower in issue 14's measurement, so the threshold stays at 100,000.
It cannot be chosen per program: the option is an entry
of DebugOptions' `xla_backend_extra_options` map, which XLA's per-compile option overrides cannot set (only
scalar fields), so it is process-wide, through XLA_FLAGS, read when the backend starts."""


def apply_xla_flags() -> None:
    """Add chainyard's XLA backend options to XLA_FLAGS unless the environment already sets backend options
    (then theirs stand). Only effective before JAX's backend starts: call it before the first computation."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_extra_options" in flags:
        return
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        log.warning("JAX's backend started before chainyard set XLA_FLAGS; small while loops run slower")
        return
    os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_extra_options={XLA_BACKEND_OPTIONS}".strip()


PLATFORMS = {"cpu": "cpu", "gpu": "cuda"}
"""Settings.platform -> JAX's platform name. On a GPU a job's draws differ from the CPU's in the last bits (other
floating-point code), so draws are a function of the platform too, as of the XLA options above."""


class PlatformError(RuntimeError):
    """The configured platform has no device here (e.g. `gpu` without CUDA or without a GPU)."""


def configure(compile_cache_dir: Path | None, platform: str = "cpu") -> None:
    """float64 everywhere (Stan's precision), the platform (`cpu` or `gpu`, Settings.platform), XLA's CPU backend
    options and the persistent compilation cache. With `gpu`, PlatformError unless JAX finds a CUDA device."""
    global _configured
    if _configured:
        return
    if platform == "cpu":
        apply_xla_flags()
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", PLATFORMS[platform])
    if platform != "cpu":
        try:
            devices = jax.devices()
        except (RuntimeError, AssertionError) as exc:  # jax 0.10 asserts when no plugin serves the platform
            raise PlatformError(
                f"CHAINYARD_PLATFORM={platform} but JAX finds no {PLATFORMS[platform]} device: run the CUDA image "
                f"variant (jax[cuda12]) on a node with a GPU (the chart's worker.gpu values), or set "
                f"CHAINYARD_PLATFORM=cpu" + (f" ({exc})" if str(exc) else "")) from exc
        log.info("JAX runs on %s", ", ".join(str(d) for d in devices))
    if compile_cache_dir is not None and str(compile_cache_dir):
        compile_cache_dir.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(compile_cache_dir))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _configured = True
