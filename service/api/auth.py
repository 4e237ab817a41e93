"""Who is asking, decided from the request head alone, before a byte of the body is read.

The job pages (service.api.pages) are opened by a browser, which cannot send a bearer header when it follows
a link. `POST /v1/login` takes the token once and sets a session cookie instead: `<expiry>.<HMAC-SHA256 of
the expiry keyed by the token>`. The cookie is not the token (a leaked cookie reads pages until it expires,
it cannot submit or delete), needs no server-side secret or session store (any API replica checks it
against the tokens it has; revoking a token ends its sessions), and it is HttpOnly (no script reads it),
SameSite=Strict (no other site's page sends it) and Secure over https. It is accepted only for GET and HEAD
of the page, plot and download routes (PAGE_ROUTES), so no state-changing route can be driven by a forged
cross-site request: those still need the bearer header.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from urllib.parse import quote

from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import errors
from service.config import Settings

SESSION_COOKIE = "chainyard_session"
SESSION_SECONDS = 12 * 3600
"""How long a page session lasts; then the login form again."""
LOGIN = "/v1/login"
"""The login form and its POST (and the one-time `?token=` link): open to anyone."""
PAGE_ROUTES = re.compile(r"^/v1/(pages/jobs|jobs/[^/]+/(page|plots/[a-z]+\.png|draws))$")
"""Read-only routes a browser opens: the session cookie is accepted for GET and HEAD of these only."""


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
            if path == LOGIN:
                pass
            elif path == "/v1" or path.startswith("/v1/"):
                token = _bearer(scope)
                page = scope["method"] in ("GET", "HEAD") and PAGE_ROUTES.match(path) is not None
                if token is None and page:
                    tenant, refusal = self._session(_cookie(scope, SESSION_COOKIE)), "sign in first"
                    if tenant is None:
                        await errors.respond(send, _login_needed(path))
                        return
                else:
                    tenant, refusal = self._tenant(token)
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
        return tenant_of(self.settings, token)

    def _session(self, cookie: str | None) -> str | None:
        if self.settings.auth_disabled:
            return "local"
        expires, _, mac = (cookie or "").partition(".")
        if not expires.isdigit() or int(expires) < time.time():
            return None
        found = None
        for known, tenant in self.settings.tokens.items():  # every token tried, in constant time each
            if hmac.compare_digest(_mac(known, expires).encode(), mac.encode()):
                found = tenant
        return found


def tenant_of(settings: Settings, token: str | None) -> tuple[str | None, str]:
    """The tenant of a bearer token, or (None, why not)."""
    if settings.auth_disabled:
        return "local", ""
    if token is None:
        return None, "missing bearer token (Authorization: Bearer <token>)"
    found = None
    for known, tenant in settings.tokens.items():  # every token compared, in constant time each
        if hmac.compare_digest(known.encode(), token.encode()):
            found = tenant
    return (found, "") if found is not None else (None, "unknown token")


def session_cookie(token: str, now: float | None = None) -> str:
    """The session cookie's value for a (known) token: expiry and its MAC keyed by the token."""
    expires = str(int((time.time() if now is None else now) + SESSION_SECONDS))
    return f"{expires}.{_mac(token, expires)}"


def _mac(token: str, expires: str) -> str:
    return hmac.new(token.encode(), b"chainyard-page-session:" + expires.encode(), hashlib.sha256).hexdigest()


def _cookie(scope: Scope, name: str) -> str | None:
    for header, value in scope.get("headers") or []:
        if header == b"cookie":
            for part in bytes(value).decode("latin-1").split(";"):
                key, _, found = part.strip().partition("=")
                if key == name:
                    return str(found)
    return None


def _login_needed(path: str) -> HTMLResponse:
    """A 401 page for a browser without a session: a link to the login form, back here afterwards."""
    target = f"{LOGIN}?next={quote(path)}"
    return HTMLResponse(f'<!doctype html><title>sign in</title><h1>401: sign in first</h1>'
                        f'<p><a href="{target}">Sign in with your API token</a></p>', status_code=401,
                        headers={"Content-Security-Policy": "default-src 'none'"})


def _bearer(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if there is one."""
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None
