"""Configuration: one typed Settings object read from the environment (prefix CHAINYARD_)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHAINYARD_", extra="ignore")

    # engine
    compile_cache_dir: Path | None = Field(
        None,
        description="JAX persistent compilation cache; a restarted process skips compiling. Default: "
        "~/.cache/chainyard/jax for `chainyard run`, <data_dir>/jax-cache on a worker's volume.",
    )
    block_seconds: float = Field(1.0, gt=0, description="Target wall time of one sampling block.")
    max_block: int = Field(1000, ge=1, le=100_000, description="Most iterations in one block.")
    threads: int = Field(0, ge=0, description="Chains run at once in one process; 0 means one per CPU core.")

    # service
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis holding queue, jobs and results.")
    tokens: str = Field("", description="API tokens as 'token:tenant,token:tenant' (e.g. from a Secret).")
    tokens_file: Path | None = Field(None, description="File with one 'token:tenant' per line (mounted Secret).")
    auth_disabled: bool = Field(False, description="Local mode only: accept requests without a token.")
    retention_seconds: int = Field(7 * 24 * 3600, ge=60, description="How long finished jobs and results are kept.")
    job_timeout_seconds: int = Field(6 * 3600, ge=1, description="A job still running after this fails.")
    visibility_timeout: float = Field(60.0, gt=0, description="A chain task idle this long is reclaimed.")
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Largest request body (413 above).")
    max_iterations_per_job: int = Field(20_000_000, ge=1, description="chains x (warmup + draws) at most.")
    max_attempts: int = Field(3, ge=1, description="Failures of one chain before its job fails.")

    # metrics
    metrics_port: int = Field(9400, ge=0, le=65535, description="Worker: port of its Prometheus /metrics (0: none).")
    diagnostics_interval: float = Field(5.0, gt=0, description="Live R-hat/ESS of a running job are recomputed at "
                                        "most this often (seconds); Prometheus sees them at most this late.")
    diagnostics_cpu_share: float = Field(0.05, gt=0, le=1, description="Share of one core a job's live figures "
                                         "may take: an expensive refresh postpones the next one.")
    metrics_linger_seconds: float = Field(600.0, ge=0, description="A finished job's per-job series are exported "
                                          "this long after it ends (alerts on final R-hat need a few scrapes).")

    # worker
    worker_name: str = Field(default_factory=socket.gethostname, description="Stable identity (the pod name).")
    data_dir: Path = Field(Path("chainyard-data"), description="Worker volume: checkpoints and compile cache.")
