"""Per-tenant quotas: submissions per minute, queued chains, chains running at once (design 3, "Limits and
fairness"). Defaults come from Settings; `Settings.quotas_file` (YAML, tenant -> fields) overrides them per
tenant. Going over a quota is a 429 with Retry-After; fair share between tenants is the queue's
(service.queue), the quotas bound what one tenant can hold."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service import keys
from service.config import Settings
from service.exceptions import QuotaExceededError
from service.queue import ChainQueue

QUEUED_RETRY_SECONDS = 30
"""Retry-After for a tenant over its queued-chains quota: its chains leave the queue as workers take them."""


class Quota(BaseModel):
    """One tenant's limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queued_chains: int = Field(ge=1, description="Chains queued (not yet dispatched) at once.")
    running_chains: int = Field(ge=0, description="Chains dispatched at once; 0: no limit beyond fair share.")
    submissions_per_minute: int = Field(ge=1, description="Job submissions per clock minute.")


class Quotas:
    """Every tenant's quota: the defaults, or the tenant's entry in the quotas file."""

    def __init__(self, settings: Settings) -> None:
        self.default = Quota(queued_chains=settings.quota_queued_chains,
                             running_chains=settings.quota_running_chains,
                             submissions_per_minute=settings.quota_submissions_per_minute)
        self.tenants = read_quotas_file(settings.quotas_file, self.default) if settings.quotas_file else {}

    def of(self, tenant: str) -> Quota:
        return self.tenants.get(tenant, self.default)


def read_quotas_file(path: Path, default: Quota) -> dict[str, Quota]:
    """`tenant: {queued_chains: 100, ...}` entries; fields left out keep the defaults. ValueError names a bad
    entry (the API then refuses to start, as for a bad tokens file)."""
    raw: Any = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a mapping of tenant -> quota fields")
    out: dict[str, Quota] = {}
    for tenant, fields in raw.items():
        try:
            out[str(tenant)] = Quota.model_validate({**default.model_dump(), **(fields or {})})
        except (ValidationError, TypeError) as exc:
            raise ValueError(f"{path}: quota of tenant {tenant!r}: {exc}") from None
    return out


def count_submission(redis: Any, tenant: str, quota: Quota) -> None:
    """Count one submission in this clock minute; QuotaExceededError past the tenant's rate."""
    now = time.time()
    minute = int(now // 60)
    pipe = redis.pipeline()
    pipe.incr(keys.submissions(tenant, minute))
    pipe.expire(keys.submissions(tenant, minute), 120)
    count = int(pipe.execute()[0])
    if count > quota.submissions_per_minute:
        raise QuotaExceededError(f"over {quota.submissions_per_minute} submissions per minute; retry after the "
                                 "minute", retry_after=max(1, int(60 - now % 60) + 1))


def check_queued(queue: ChainQueue, tenant: str, quota: Quota, chains: int) -> None:
    """QuotaExceededError if `chains` more would put the tenant over its queued-chains quota."""
    queued = queue.queued(tenant)
    if queued + chains > quota.queued_chains:
        raise QuotaExceededError(f"{queued} chains already queued; {chains} more would exceed this tenant's quota "
                                 f"of {quota.queued_chains} queued chains", retry_after=QUEUED_RETRY_SECONDS)
