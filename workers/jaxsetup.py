"""Process-wide JAX configuration, applied once before the first computation."""

from __future__ import annotations

from pathlib import Path

import jax

_configured = False


def configure(compile_cache_dir: Path | None) -> None:
    """float64 everywhere (Stan's precision) and the persistent compilation cache."""
    global _configured
    if _configured:
        return
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    if compile_cache_dir is not None and str(compile_cache_dir):
        compile_cache_dir.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(compile_cache_dir))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _configured = True
