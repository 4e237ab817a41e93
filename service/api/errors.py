"""Every error the API returns: one shape, from one place."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Message, Send

from service.exceptions import AuthError, BackendError, ConflictError, NotFoundError, QuotaExceededError, SpecError


def error(status: int, code: str, message: str, details: list[dict[str, str]] | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": {"code": code, "message": message, "details": details or []}}, status_code=status,
                        headers=headers)


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
"""The methods a route of this API may serve."""


async def respond(send: Send, response: Response) -> None:
    """Send `response` from ASGI middleware, without reading the request body."""
    await response({"type": "http"}, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def allowed_methods(request: Request) -> str:
    """The Allow header of a 405: every method some route serves at this path (Starlette names only those of
    the first route that matches the path, so /v1/jobs would say POST but not GET)."""
    allowed = [method for method in METHODS if any(
        route.matches({**request.scope, "method": method})[0] is Match.FULL for route in request.app.router.routes)]
    return ", ".join(sorted(allowed))


def install(app: FastAPI) -> None:
    @app.exception_handler(SpecError)
    async def spec_error(request: Request, exc: SpecError) -> JSONResponse:
        details = [{"path": p.path, "message": p.message} for p in exc.problems]
        return error(422, "invalid_spec", f"{len(details)} problem(s) in the request", details)

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"path": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
                   for e in exc.errors()]
        return error(422, "invalid_request", "the request does not match the schema", details)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return error(404, "not_found", str(exc))

    @app.exception_handler(ConflictError)
    async def conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return error(409, "conflict", str(exc))

    @app.exception_handler(AuthError)
    async def unauthorized(request: Request, exc: AuthError) -> JSONResponse:
        return error(401, "unauthorized", str(exc))

    @app.exception_handler(QuotaExceededError)
    async def over_quota(request: Request, exc: QuotaExceededError) -> JSONResponse:
        response = error(429, "over_quota", str(exc))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(BackendError)
    async def backend_error(request: Request, exc: BackendError) -> JSONResponse:
        code = {409: "conflict", 422: "invalid_spec"}.get(exc.status, "unavailable")
        return error(exc.status, code, str(exc))

    @app.exception_handler(RedisError)
    async def unavailable(request: Request, exc: RedisError) -> JSONResponse:
        return error(503, "unavailable", "the job store (Redis) is unavailable; retry shortly")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error")
        response = error(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["Allow"] = allowed_methods(request)
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this answer, so uvicorn logs the traceback: a bug, never a plain-text 500
        return error(500, "internal", "internal error (logged); retry, or report it if it persists")
