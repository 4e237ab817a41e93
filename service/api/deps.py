"""Dependencies of the routes, as `Annotated` aliases (one place)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.exceptions import AuthError
from service.jobs.store import JobStore


def get_store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def get_tenant(request: Request) -> str:
    settings: Settings = request.app.state.settings
    if settings.auth_disabled:
        return "local"
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("missing bearer token (Authorization: Bearer <token>)")
    for known, tenant in settings.tokens.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            return tenant
    raise AuthError("unknown token")


Store = Annotated[JobStore, Depends(get_store)]
Tenant = Annotated[str, Depends(get_tenant)]
