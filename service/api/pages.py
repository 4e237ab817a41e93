"""HTML for browsers: the login form, the tenant's jobs, a job's live page and its plots.

Signed in by the session cookie of service.api.auth (or a bearer header). Another tenant's job, or none, is a
404 page. Every page carries a strict Content-Security-Policy with a fresh nonce for its inline style and script.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from service import pages
from service.api.auth import SESSION_COOKIE, SESSION_SECONDS, session_cookie, tenant_of
from service.api.deps import Figures, Store, Tenant
from service.api.jobs import public
from service.exceptions import NotFoundError
from service.jobs.record import JobState
from service.plots import select

# Browser pages, not the JSON API: their 401 and 404 are HTML, so they stay out of the OpenAPI document
# (whose every /v1 operation answers errors in the one JSON shape)
router = APIRouter(prefix="/v1", tags=["pages"], include_in_schema=False)
HOME = "/v1/pages/jobs"
Vars = Annotated[str, Query(max_length=2000, description="comma-separated variables or elements (`name[k]`, k the "
                                                         "flat index); the first few without")]


def _html(body: str, nonce: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={
        "Content-Security-Policy": pages.csp(nonce), "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff"})


def _not_found(job_id: str) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    return _html(pages.message_page("404: not found", f"job {job_id} not found", nonce), nonce, 404)


def _next(path: str | None) -> str:
    """Only a path of this API: the login form is no open redirect."""
    if path and path.startswith("/v1/") and not path.startswith("//") and "\\" not in path:
        return path
    return HOME


def _signed_in(request: Request, token: str, next_path: str | None) -> Response:
    response = RedirectResponse(_next(next_path), status_code=303, headers={"Referrer-Policy": "no-referrer"})
    response.set_cookie(SESSION_COOKIE, session_cookie(token), max_age=SESSION_SECONDS, path="/v1", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: Annotated[str | None, Query(max_length=2000)] = None,
               token: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    """The sign-in form. `?token=` signs in at once (a link for scripts and headless browsers; it leaves the
    token in the browser's history, so the form is the way for people)."""
    nonce = secrets.token_urlsafe(16)
    if token is not None:
        if tenant_of(request.app.state.settings, token)[0] is not None:
            return _signed_in(request, token, next)
        return _html(pages.login_page(nonce, next_path=_next(next), problem="unknown token"), nonce, 401)
    return _html(pages.login_page(nonce, next_path=_next(next)), nonce)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Form post of the token: sets the session cookie and goes back to `next`."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token, next_path = (form.get("token") or [""])[0], (form.get("next") or [""])[0]
    if token and tenant_of(request.app.state.settings, token)[0] is not None:
        return _signed_in(request, token, next_path)
    nonce = secrets.token_urlsafe(16)
    return _html(pages.login_page(nonce, next_path=_next(next_path), problem="unknown token"), nonce, 401)


@router.get("/pages/jobs", response_class=HTMLResponse)
def jobs_page(store: Store, tenant: Tenant) -> HTMLResponse:
    """The tenant's newest jobs: state, progress, convergence."""
    found = store.list(tenant, state=None, label=None, offset=0, limit=100)
    jobs = [public(record, chains, store.live.public(record.id)) for record, chains in found.jobs]
    nonce = secrets.token_urlsafe(16)
    return _html(pages.jobs_page(jobs, found.total, nonce), nonce)


@router.get("/jobs/{job_id}/page", response_class=HTMLResponse)
def job_page(job_id: str, store: Store, figures: Figures, tenant: Tenant, vars: Vars = "",
             sort: Annotated[Literal["variable", "r_hat", "ess_bulk", "ess_tail"], Query()] = "variable",
             desc: Annotated[bool, Query()] = False) -> HTMLResponse:
    """A job, live while it runs: chains, R-hat/ESS per element, trace and rank plots, the summary at the end."""
    try:
        record = store.get(tenant, job_id)
    except NotFoundError:
        return _not_found(job_id)
    job = public(record, store.chains(record), store.live.public(job_id))
    key = figures.key(record)
    draws = figures.draws(record, key)
    wanted = [v.strip() for v in vars.split(",") if v.strip()]
    chosen = [label for label, _, _ in select(draws, wanted)] if draws is not None else []
    summary = store.summary(tenant, job_id) if record.state == JobState.SUCCEEDED else None
    rows = ([{k: r[k] for k in ("variable", "r_hat", "ess_bulk", "ess_tail")} for r in summary["variables"]]
            if summary is not None else figures.table(record, key))
    known = list(draws.variables) + [e[0] for e in draws.elements()][:200] if draws is not None else []
    nonce = secrets.token_urlsafe(16)
    return _html(pages.job_page(job, nonce=nonce, vars_=vars, chosen=chosen, known=known, rows=rows, sort=sort,
                                descending=desc, draws_key=key, summary=summary), nonce)


@router.get("/jobs/{job_id}/plots/{kind}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def plot(job_id: str, kind: Literal["trace", "rank"], store: Store, figures: Figures, tenant: Tenant,
         vars: Vars = "") -> Response:
    """A trace (divergences marked under it) or rank plot of the draws so far, as PNG; cached per draw count."""
    try:
        record = store.get(tenant, job_id)
    except NotFoundError:
        return _not_found(job_id)
    png = figures.plot(record, kind, [v.strip() for v in vars.split(",") if v.strip()])
    if png is None:
        nonce = secrets.token_urlsafe(16)
        return _html(pages.message_page("404: no draws yet", f"job {job_id} has no draws yet", nonce), nonce, 404)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=5"})
