"""Reading published prior versions (jobs resolving `priors_from`, the API, the nightly refit)."""

from __future__ import annotations

import json
from typing import Any

from service import keys
from service.codec import text
from service.exceptions import NotFoundError


class Versions:
    """A tenant's published prior versions: immutable, numbered from 1, `latest` the newest that passed."""

    def __init__(self, redis: Any) -> None:
        self.r = redis

    def latest(self, tenant: str, name: str) -> int | None:
        value = self.r.hget(keys.prior(tenant, name), "latest")
        return int(value) if value is not None else None

    def read(self, tenant: str, name: str, number: int | None = None) -> tuple[int, dict[str, Any]]:
        """Version `number` (None: latest) of a tenant's prior; NotFoundError naming what is missing."""
        if not self.r.exists(keys.prior(tenant, name)):
            raise NotFoundError(f"prior {name} not found")
        if number is None:
            number = self.latest(tenant, name)
            if number is None:
                raise NotFoundError(f"prior {name} has no published version yet (refit it, or save an elicited one)")
        raw = self.r.hget(keys.prior_versions(tenant, name), number)
        if raw is None:
            raise NotFoundError(f"prior {name} has no version {number}")
        return number, {"version": number, **json.loads(raw)}

    def all(self, tenant: str, name: str) -> list[dict[str, Any]]:
        """Every version, oldest first."""
        raw = self.r.hgetall(keys.prior_versions(tenant, name))
        return [{"version": int(text(k)), **json.loads(v)} for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))]

    def refits(self, tenant: str, name: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """The latest refit outcomes, newest first."""
        return [json.loads(e) for e in self.r.lrange(keys.prior_refits(tenant, name), 0, limit - 1)]
