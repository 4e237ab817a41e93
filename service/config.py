"""Configuration: one typed Settings object read from the environment (prefix CHAINYARD_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHAINYARD_", extra="ignore")

    compile_cache_dir: Path | None = Field(
        default_factory=lambda: Path.home() / ".cache" / "chainyard" / "jax",
        description="JAX persistent compilation cache; a restarted process skips compiling. Empty disables it.",
    )
    block_seconds: float = Field(1.0, gt=0, description="Target wall time of one sampling block.")
    max_block: int = Field(1000, ge=1, le=100_000, description="Most iterations in one block.")
    threads: int = Field(0, ge=0, description="Chains run at once in one process; 0 means one per CPU core.")
