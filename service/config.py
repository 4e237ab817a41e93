"""Configuration: one typed Settings object read from the environment (prefix CHAINYARD_)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_serializer, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.defaults import (
    CHECKPOINT_SECONDS,
    CHUNK_BYTES,
    DIAGNOSTICS_CPU_SHARE,
    MAX_CHAIN_RESULT_BYTES,
    MAX_EVALUATION_BYTES,
    MAX_RESULT_BYTES,
    MAX_VALUE_BYTES,
)
from service.language.cost import Limits

ENV_PREFIX = "CHAINYARD_"


class Settings(BaseSettings):
    """Every process's configuration; `to_env()` hands it to a child process."""

    # hide_input_in_errors: a bad token pair or Redis URL would otherwise be echoed into the log
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", hide_input_in_errors=True)

    # engine
    compile_cache_dir: Path | None = Field(
        None,
        description="JAX persistent compilation cache; a restarted process skips compiling. Default: "
        "~/.cache/chainyard/jax for `chainyard run`, <data_dir>/jax-cache on a worker's volume.",
    )
    block_seconds: float = Field(1.0, gt=0, description="Target wall time of one sampling block.")
    max_block: int = Field(1000, ge=1, le=100_000, description="Most iterations in one block.")
    checkpoint_seconds: float = Field(CHECKPOINT_SECONDS, ge=0, description="Least time between two checkpoint "
                                      "writes of a chain (the blocks in between are written as one; 0: every "
                                      "block). A killed worker runs at most this much of a chain again.")
    threads: int = Field(0, ge=0, description="Chains run at once in one process; 0 means one per CPU core.")
    platform: Literal["cpu", "gpu"] = Field("cpu", description="Where JAX computes: `gpu` needs the CUDA image "
                                            "variant and a GPU (the worker refuses to start without one). Draws "
                                            "on a GPU differ from the CPU's in the last bits.")

    # service
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis holding queue, jobs and results.")
    tokens: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="API tokens (token -> tenant), given as 'token:tenant,token:tenant' "
        "(e.g. from a Secret); the API adds those of tokens_file.")
    tokens_file: Path | None = Field(None, description="File with one 'token:tenant' per line (mounted Secret).")
    auth_disabled: bool = Field(False, description="Local mode only: accept requests without a token.")
    retention_seconds: int = Field(7 * 24 * 3600, ge=60, description="How long finished jobs and results are kept.")
    job_timeout_seconds: int = Field(6 * 3600, ge=1, description="A job still running after this fails.")
    visibility_timeout: float = Field(60.0, gt=0, description="A chain task idle this long is reclaimed.")
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Largest request body (413 above).")
    chunk_bytes: int = Field(CHUNK_BYTES, ge=1024, le=256 * 1024 * 1024, description="Largest single value "
                             "chainyard writes to Redis: a chain's draws and a job's files are stored as lists of "
                             "chunks of at most this size (one Redis value is at most 512 MB).")
    max_iterations_per_job: int = Field(20_000_000, ge=1, description="chains x (warmup + draws) at most.")
    max_attempts: int = Field(3, ge=1, description="Failures of one chain before its job fails.")

    # limits checked at validation (service/language/cost.py; figures in bytes, refused with a 422)
    max_value_bytes: int = Field(MAX_VALUE_BYTES, ge=1, description="Largest single value (param, define or "
                                 "sub-expression) one log-density evaluation computes.")
    max_evaluation_bytes: int = Field(MAX_EVALUATION_BYTES, ge=1, description="One log-density evaluation in all: "
                                      "data + 3 x every value it computes (the gradient's share).")
    max_result_bytes: int = Field(MAX_RESULT_BYTES, ge=1, description="Draws and sample stats of one job.")
    max_chain_result_bytes: int = Field(MAX_CHAIN_RESULT_BYTES, ge=1, description="Draws and sample stats of one "
                                        "chain; keep it well below Redis' 512 MB limit on one value.")

    # fair share and quotas (per tenant; quotas_file overrides them for named tenants)
    dispatch_window: int = Field(1, ge=1, le=1000, description="Chain tasks dispatched to the workers' stream "
                                 "and not yet claimed, at most; the rest wait in their tenant's queue and are "
                                 "dispatched round-robin over tenants. Small keeps another tenant's job close to "
                                 "the front.")
    quota_queued_chains: int = Field(2000, ge=1, description="Chains a tenant may have queued (not yet running) "
                                     "at once; a submission over it is a 429.")
    quota_running_chains: int = Field(0, ge=0, description="Chains of a tenant dispatched at once (0: no limit "
                                      "beyond fair share).")
    quota_submissions_per_minute: int = Field(600, ge=1, description="Job submissions per tenant per clock "
                                              "minute; over it is a 429 with Retry-After.")
    quotas_file: Path | None = Field(None, description="YAML: tenant -> {queued_chains, running_chains, "
                                     "submissions_per_minute}, overriding the defaults above for that tenant.")

    # metrics
    metrics_port: int = Field(9400, ge=0, le=65535, description="Worker: port of its Prometheus /metrics (0: none).")
    diagnostics_interval: float = Field(5.0, gt=0, description="Live R-hat/ESS of a running job are recomputed at "
                                        "most this often (seconds); Prometheus sees them at most this late.")
    diagnostics_cpu_share: float = Field(DIAGNOSTICS_CPU_SHARE, gt=0, le=1, description="Share of one core a job's "
                                         "live figures may take: an expensive refresh postpones the next one.")
    metrics_linger_seconds: float = Field(600.0, ge=0, description="A finished job's per-job series are exported "
                                          "this long after it ends (alerts on final R-hat need a few scrapes).")
    metrics_token: str | None = Field(None, description="If set, the API's and the workers' /metrics answer only "
                                      "requests with 'Authorization: Bearer <metrics_token>' (401 otherwise): the "
                                      "per-job series name every tenant's jobs. The chart's ServiceMonitors carry "
                                      "it.")

    # the API's front door (service/api/server.py)
    header_timeout_seconds: float = Field(10.0, gt=0, description="A connection must deliver a whole request head "
                                          "(request line and headers) this soon after it opens or after its "
                                          "previous response, however it drips the bytes; else it is closed.")
    body_timeout_seconds: float = Field(30.0, gt=0, description="Longest pause between two reads of a request "
                                        "body before the connection is closed.")
    max_connections: int = Field(2048, ge=16, description="Open HTTP connections per API process (also kept below "
                                 "its file-descriptor limit); over it a new connection closes the oldest one still "
                                 "waiting for a request head, or is itself closed if none is waiting.")

    # Redis clients (service/connect.py)
    redis_connect_timeout: float = Field(5.0, gt=0, description="Seconds to open a connection to Redis.")
    redis_socket_timeout: float = Field(10.0, gt=0, description="Seconds to wait for a Redis reply, so that a hung "
                                        "Redis is an error (503) and not a hang; above any blocking read chainyard "
                                        "makes (1 s).")
    redis_health_check_interval: int = Field(30, ge=0, description="A pooled Redis connection idle this many "
                                             "seconds is PINGed before reuse, so one broken by a Redis restart is "
                                             "replaced instead of failing a request (0: never).")
    readiness_timeout: float = Field(1.0, gt=0, description="/readyz answers 503 unless Redis answers PING within "
                                     "this many seconds (keep it below the readiness probe's timeout).")

    # worker
    worker_name: str = Field(default_factory=socket.gethostname, description="Stable identity (the pod name).")
    data_dir: Path = Field(Path("chainyard-data"), description="Worker volume: checkpoints and compile cache.")
    worker_memory_bytes: int = Field(0, ge=0, description="Worker: cap on the process's address space "
                                     "(RLIMIT_AS), so a job needing more memory fails its chain ('out of memory') "
                                     "instead of the pod being OOM-killed. 0: the container's memory limit "
                                     "(cgroup memory.max) if there is one, else no cap.")

    # datasets (service/datasets): over a limit an append is a 422 naming it
    max_dataset_rows: int = Field(1_000_000, ge=1, description="Rows one dataset may hold in all versions.")
    max_append_rows: int = Field(200_000, ge=1, description="Rows one append (POST /v1/datasets/{name}/rows) may "
                                 "add; its body is bounded by max_request_bytes too.")
    max_dataset_cells: int = Field(50_000_000, ge=1, description="Rows x columns one dataset may hold (400 MB as "
                                   "float64): reading a version holds it in memory.")

    # prior refit schedules (service/priors/schedules.py, docs/priors.md "Schedules")
    scheduler: Literal["local", "kubernetes", "none"] = Field(
        "local", description="Who runs prior refit schedules: `local` (a thread in each API process; a Redis lease "
        "makes exactly one fire each run), `kubernetes` (one CronJob per schedule, what the chart sets) or `none` "
        "(schedules are stored but nothing runs them).")
    schedule_starting_deadline_seconds: int = Field(
        3600, ge=1, le=7 * 24 * 3600, description="Local scheduler: a run missed (the API was down) is still "
        "started if at most this many seconds late, once however many were missed; later, it is skipped "
        "(a CronJob's startingDeadlineSeconds).")

    # Kubernetes mode of schedules (service/priors/kube.py; the chart sets all three for the API)
    kube_namespace: str | None = Field(None, description="Namespace of the schedules' CronJobs (default: the "
                                       "pod's own, from its service account's namespace file).")
    kubeconfig: Path | None = Field(None, description="A kubeconfig file to reach the Kubernetes API with "
                                    "(default: the pod's in-cluster service account).")
    refit_template_file: Path | None = Field(None, description="The refit Job template (YAML, a CronJob's "
                                             "jobTemplate) the chart renders into a ConfigMap; each schedule's "
                                             "CronJob is built from it with only the container's args set.")

    @field_validator("tokens", mode="before")
    @classmethod
    def _parse_tokens(cls, value: Any) -> Any:
        return parse_tokens(value.split(",")) if isinstance(value, str) else value

    @field_serializer("tokens", when_used="json")
    def _tokens_as_pairs(self, tokens: dict[str, str]) -> str:
        return ",".join(f"{token}:{tenant}" for token, tenant in tokens.items())

    def cost_limits(self) -> Limits:
        """The limits service.sampler.parse_job checks a job against."""
        return Limits(value_bytes=self.max_value_bytes, evaluation_bytes=self.max_evaluation_bytes,
                      result_bytes=self.max_result_bytes, chain_result_bytes=self.max_chain_result_bytes)

    def to_env(self) -> dict[str, str]:
        """The CHAINYARD_* variables of the fields set here: a child's Settings() reads back an equal object.

        A field left at its default, or set to None (the default of every optional field), has no variable.
        """
        values = self.model_dump(mode="json", include=self.model_fields_set)
        return {f"{ENV_PREFIX}{name.upper()}": _env_text(value) for name, value in values.items()
                if value is not None}


class ApiSettings(Settings):
    """The API's Settings: the tokens file is read here, and no tokens means refusing to start.

    A subclass rather than a rule on Settings: workers and `chainyard run` build Settings too, with no tokens,
    and a worker must not read a tokens file (the chart mounts the Secret only into the API pod).
    """

    @model_validator(mode="after")
    def _read_tokens_file_and_require_tokens(self) -> ApiSettings:
        if self.tokens_file is not None:
            self.tokens = {**self.tokens, **parse_tokens(self.tokens_file.read_text().splitlines())}
        if not self.tokens and not self.auth_disabled:
            raise ValueError("no API tokens configured: set CHAINYARD_TOKENS or CHAINYARD_TOKENS_FILE "
                             "(CHAINYARD_AUTH_DISABLED=true only for a local single-user stack)")
        return self


def parse_tokens(pairs: list[str]) -> dict[str, str]:
    """token -> tenant from 'token:tenant' items (blank ones skipped); a later token wins."""
    tokens: dict[str, str] = {}
    for pair in pairs:
        if not pair.strip():
            continue
        token, _, tenant = pair.strip().partition(":")
        if not token or not tenant:
            raise ValueError("tokens are 'token:tenant' pairs")
        tokens[token] = tenant
    return tokens


def _env_text(value: Any) -> str:
    """A JSON-mode field value as pydantic-settings reads it back from a variable."""
    return str(value).lower() if isinstance(value, bool) else str(value)
