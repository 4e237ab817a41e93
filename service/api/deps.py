"""Dependencies of the routes, as `Annotated` aliases (one place)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.exceptions import AuthError
from service.jobs import JobStore


def load_tokens(settings: Settings) -> dict[str, str]:
    """token -> tenant, from CHAINYARD_TOKENS and the tokens file (a mounted Secret)."""
    pairs = [p for p in settings.tokens.split(",") if p.strip()]
    if settings.tokens_file is not None:
        pairs += [line for line in settings.tokens_file.read_text().splitlines() if line.strip()]
    tokens: dict[str, str] = {}
    for pair in pairs:
        token, _, tenant = pair.strip().partition(":")
        if not token or not tenant:
            raise ValueError("tokens are 'token:tenant' pairs")
        tokens[token] = tenant
    return tokens


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
    tokens: dict[str, str] = request.app.state.tokens
    for known, tenant in tokens.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            return tenant
    raise AuthError("unknown token")


Store = Annotated[JobStore, Depends(get_store)]
Tenant = Annotated[str, Depends(get_tenant)]
