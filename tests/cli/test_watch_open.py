"""`chainyard watch --open`: the job page's URL, printed and handed to the browser."""

from __future__ import annotations

import webbrowser

import pytest

from cli.remote import open_job_page


def test_open_job_page_prints_and_opens_the_url(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", opened.append)
    page = open_job_page("http://api.example:8000/", "j123")
    assert page == opened[0] == "http://api.example:8000/v1/jobs/j123/page"
    printed = capsys.readouterr().err
    assert page in printed and "sign in" in printed
