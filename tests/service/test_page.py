"""The job pages against a real stack: sign-in and its cookie, a running and a finished job's page, the plots,
tenancy, escaping, and a headless Chromium rendering the page (its screenshot is the README's figure)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import Stack
from service.api.auth import SESSION_COOKIE
from service.client import Client
from service.language.loader import load_file
from tests.conftest import EXAMPLES
from tests.service.conftest import TOKENS, finished, wait_for

pytestmark = pytest.mark.usefixtures("jax_ready")
PNG = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert(1)</script>"
ROOT = Path(__file__).resolve().parents[2]


def job_doc(draws: int, **extra: Any) -> dict[str, Any]:
    return {"model": load_file(EXAMPLES / "eight_schools.yaml"),
            "sampler": {"chains": 2, "warmup": 100, "draws": draws, "seed": 5}, **extra}


@pytest.fixture(scope="module")
def short(stack: Stack) -> str:
    """A finished job (run first: the long one then keeps both workers busy)."""
    with Client(stack.url, TOKENS["alice"]) as alice:
        job = alice.submit(job_doc(200, name="short one"))
        assert finished(alice, job["id"])["state"] == "succeeded"
        return str(job["id"])


@pytest.fixture(scope="module")
def running(stack: Stack, short: str) -> Iterator[str]:
    """A long job, named with markup, cancelled at the end of the module."""
    with Client(stack.url, TOKENS["alice"]) as alice:
        job = alice.submit(job_doc(40_000, name=HOSTILE, labels={"team": "<b>x</b>"}))
        wait_for(alice, job["id"], lambda j: all(c["iteration"] > 200 for c in j["chains"]))
        yield job["id"]
        alice.cancel(job["id"])


@pytest.fixture
def browser(stack: Stack) -> Iterator[httpx.Client]:
    """A signed-in browser: the session cookie from the login form, no bearer header."""
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        reply = c.post("/v1/login", data={"token": TOKENS["alice"], "next": "/v1/pages/jobs"})
        assert reply.status_code == 303 and reply.headers["location"] == "/v1/pages/jobs"
        yield c


def test_login_sets_a_strict_http_only_cookie_good_for_pages_only(stack: Stack, running: str) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        refused = c.get(f"/v1/jobs/{running}/page")
        assert refused.status_code == 401 and "text/html" in refused.headers["content-type"]
        assert f"/v1/login?next=/v1/jobs/{running}/page" in refused.text
        form = c.get("/v1/login", params={"next": f"/v1/jobs/{running}/page"})
        assert form.status_code == 200 and 'name="token"' in form.text and 'type="password"' in form.text
        assert "default-src 'none'" in form.headers["content-security-policy"]
        wrong = c.post("/v1/login", data={"token": "nope", "next": "/v1/pages/jobs"})
        assert wrong.status_code == 401 and SESSION_COOKIE not in c.cookies
        away = c.post("/v1/login", data={"token": TOKENS["alice"], "next": "//evil.example/x"})
        assert away.status_code == 303 and away.headers["location"] == "/v1/pages/jobs"
        cookie = away.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/v1" in cookie
        assert TOKENS["alice"] not in cookie  # a signed session, not the token
        assert c.get(f"/v1/jobs/{running}/page").status_code == 200
        # the cookie reads pages; it drives no other route, so no cross-site request can change anything
        assert c.get("/v1/jobs").status_code == 401
        assert c.post(f"/v1/jobs/{running}/cancel").status_code == 401
        forged = c.cookies[SESSION_COOKIE].split(".")[0] + "." + "0" * 64
        c.cookies.clear()
        c.cookies.set(SESSION_COOKIE, forged)
        assert c.get(f"/v1/jobs/{running}/page").status_code == 401


def test_running_job_page_is_live_and_escapes_user_strings(browser: httpx.Client, running: str) -> None:
    page = browser.get(f"/v1/jobs/{running}/page")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert HOSTILE not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<b>x</b>" not in text
    assert '<meta http-equiv="refresh" content="2">' in text and "data-live" in text
    assert text.count("<progress") == 2 and "running" in text
    assert 'id="convergence"' in text and "mu" in text and "theta[0]" in text
    assert f'src="/v1/jobs/{running}/plots/trace.png?n=' in text and "/plots/rank.png?n=" in text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'nonce-" in policy and "unsafe-inline" not in policy
    chosen = browser.get(f"/v1/jobs/{running}/page", params={"vars": "tau,theta[3]", "sort": "r_hat", "desc": 1})
    assert "Plotted: tau, theta[3]<" in chosen.text and "vars=tau%2Ctheta%5B3%5D" in chosen.text


def test_plots_are_pngs_that_change_as_draws_accumulate(browser: httpx.Client, alice: Client, running: str) -> None:
    first = browser.get(f"/v1/jobs/{running}/plots/trace.png", params={"vars": "mu,tau"})
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.content.startswith(PNG)
    rank = browser.get(f"/v1/jobs/{running}/plots/rank.png")
    assert rank.status_code == 200 and rank.content.startswith(PNG)
    # a running job's figure is redrawn at most once per (its cost / plots.CPU_SHARE): ask until it is
    deadline = time.monotonic() + 60
    later = first
    while later.content == first.content and time.monotonic() < deadline:
        time.sleep(0.5)
        later = browser.get(f"/v1/jobs/{running}/plots/trace.png", params={"vars": "mu,tau"})
    assert later.content.startswith(PNG) and later.content != first.content
    again = browser.get(f"/v1/jobs/{running}/plots/trace.png", params={"vars": "mu,tau"})
    assert again.content.startswith(PNG)
    assert browser.get(f"/v1/jobs/{running}/plots/violin.png").status_code == 422


def test_another_tenants_job_is_a_404_page(stack: Stack, running: str) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as bob:
        assert bob.get("/v1/login", params={"token": TOKENS["bob"]}).status_code == 303  # the one-time link
        for path in (f"/v1/jobs/{running}/page", f"/v1/jobs/{running}/plots/trace.png"):
            reply = bob.get(path)
            assert reply.status_code == 404 and "text/html" in reply.headers["content-type"]
            assert "not found" in reply.text and HOSTILE not in reply.text
        assert running not in bob.get("/v1/pages/jobs").text


def test_finished_job_page_has_the_summary_and_the_download(browser: httpx.Client, short: str,
                                                            running: str) -> None:
    page = browser.get(f"/v1/jobs/{short}/page").text
    assert 'id="summary"' in page and "theta[Choate]" in page and "hdi_3%" in page
    assert "http-equiv" not in page and "data-live" not in page and "<script" not in page
    link = f"/v1/jobs/{short}/draws?format=netcdf"
    assert link in page
    download = browser.get(link)
    assert download.status_code == 200 and download.content[:4] == b"\x89HDF"
    assert browser.get(f"/v1/jobs/{short}/plots/trace.png").content.startswith(PNG)
    jobs = browser.get("/v1/pages/jobs").text
    assert "short one" in jobs and "succeeded" in jobs and "&lt;script&gt;" in jobs and "max R-hat" in jobs


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_headless_chromium_renders_the_running_page(stack: Stack, running: str, tmp_path: Path) -> None:
    """The ?token= link signs the browser in and redirects to the page; with JS on (the default) the page
    still renders server-side. CHAINYARD_SCREENSHOT=docs/img/job-page.png keeps the screenshot."""
    url = f"{stack.url}/v1/login?token={TOKENS['alice']}&next=/v1/jobs/{running}/page%3Fvars%3Dmu%2Ctau%2Ctheta"
    flags = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert 'id="convergence"' in dom and "trace.png" in dom and "&lt;script&gt;" in dom
    shot = Path(os.environ.get("CHAINYARD_SCREENSHOT") or tmp_path / "page.png")
    shot = shot if shot.is_absolute() else ROOT / shot
    subprocess.run([*flags, "--hide-scrollbars", f"--screenshot={shot}",
                    "--window-size=1400,1600", url], capture_output=True, timeout=120, check=True)
    assert shot.read_bytes().startswith(PNG) and shot.stat().st_size > 20_000
