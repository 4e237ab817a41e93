"""Who is asking, decided from the request head alone, before a byte of the body is read."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import errors
from service.config import Settings


class Authenticate:
    """ASGI middleware: /v1 needs a tenant's bearer token; /metrics the metrics token, when one is set.

    A refused request gets the 401 of service.api.errors without the application running, so the body of an
    unauthenticated request is never parsed (the server drops it). An accepted one carries its tenant in the
    request state (`deps.Tenant` reads it).
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path == "/v1" or path.startswith("/v1/"):
                tenant, refusal = self._tenant(_bearer(scope))
                if tenant is None:
                    await errors.respond(send, errors.error(401, "unauthorized", refusal))
                    return
                scope.setdefault("state", {})["tenant"] = tenant
            elif path == "/metrics" and self.settings.metrics_token is not None:
                token = _bearer(scope)
                if token is None or not hmac.compare_digest(token.encode(), self.settings.metrics_token.encode()):
                    await errors.respond(send, errors.error(401, "unauthorized", "/metrics needs the metrics token"))
                    return
        await self.app(scope, receive, send)

    def _tenant(self, token: str | None) -> tuple[str | None, str]:
        if self.settings.auth_disabled:
            return "local", ""
        if token is None:
            return None, "missing bearer token (Authorization: Bearer <token>)"
        found = None
        for known, tenant in self.settings.tokens.items():  # every token compared, in constant time each
            if hmac.compare_digest(known.encode(), token.encode()):
                found = tenant
        return (found, "") if found is not None else (None, "unknown token")


def _bearer(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if there is one."""
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None
