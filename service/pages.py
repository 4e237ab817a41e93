"""The HTML of the job pages, rendered on the server: works with JavaScript off, no external assets.

Every string from a user (job names, labels, errors, variable names) goes through `esc`. While a job runs the
page refreshes itself: a `<meta http-equiv="refresh">` inside `<noscript>` without JavaScript; with it, a tiny
inline script (allowed by the response's CSP nonce) re-reads the page every REFRESH_SECONDS and swaps its
`<main>`, so only images whose URL changed (their URL carries the draw count) are fetched again.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote, urlencode

from service.plots import ESS_FLAG, KINDS, RHAT_FLAG, flagged

REFRESH_SECONDS = 2
SORTS = ("variable", "r_hat", "ess_bulk", "ess_tail")

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
.bad{background:#fdd}.state{font-weight:bold}
img{max-width:100%;display:block;margin:.5em 0}
.muted{color:#777}
"""

_SCRIPT = """
(function(){
  var timer=setInterval(function(){
    if(!document.querySelector('main[data-live]')){clearInterval(timer);return;}
    fetch(location.href,{credentials:'same-origin'}).then(function(r){return r.text();}).then(function(t){
      var next=new DOMParser().parseFromString(t,'text/html').querySelector('main');
      var here=document.querySelector('main');
      if(next&&here){here.replaceWith(next);}
    });
  },INTERVAL);
})();
""".replace("INTERVAL", str(1000 * REFRESH_SECONDS))


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def csp(nonce: str) -> str:
    """The Content-Security-Policy of every page: nothing external, only this response's inline style and
    script, images and fetches from this origin, forms posting here."""
    return (f"default-src 'none'; img-src 'self'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def document(title: str, body: str, nonce: str, *, live: bool = False) -> str:
    refresh = f'<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>' if live else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{refresh}<title>{esc(title)}</title>'
            f'<style nonce="{nonce}">{_STYLE}</style></head><body>{body}'
            + (f'<script nonce="{nonce}">{_SCRIPT}</script>' if live else "") + "</body></html>")


def message_page(title: str, text: str, nonce: str) -> str:
    return document(title, f'<h1>{esc(title)}</h1><p>{esc(text)}</p><p><a href="/v1/pages/jobs">Your jobs</a></p>',
                    nonce)


def login_page(nonce: str, *, next_path: str, problem: str | None = None) -> str:
    notice = f'<p class="bad">{esc(problem)}</p>' if problem else ""
    body = (f"<h1>chainyard: sign in</h1>{notice}"
            '<form method="post" action="/v1/login">'
            f'<input type="hidden" name="next" value="{esc(next_path)}">'
            '<label>API token <input type="password" name="token" autocomplete="current-password" autofocus>'
            '</label> <button type="submit">Sign in</button></form>'
            '<p class="muted">The token is the one your API client uses (Authorization: Bearer). The browser '
            "keeps a signed session cookie, good for reading job pages only.</p>")
    return document("sign in", body, nonce)


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _diagnostics(diagnostics: Any) -> str:
    if diagnostics is None:
        return "-"
    return (f"max R-hat {_number(diagnostics.max_rhat, 3)}, min ESS bulk {_number(diagnostics.min_ess_bulk, 0)}, "
            f"tail {_number(diagnostics.min_ess_tail, 0)}, {diagnostics.divergences} divergences "
            f"({diagnostics.draws_per_chain} draws per chain)")


def jobs_page(jobs: list[Any], total: int, nonce: str) -> str:
    """The tenant's jobs (JobPublic), newest first, with state and convergence at a glance."""
    rows = "".join(
        f'<tr><td><a href="/v1/jobs/{quote(j.id)}/page">{esc(j.name or j.id)}</a></td><td>{esc(j.state)}</td>'
        f"<td>{sum(c.iteration for c in j.chains)}/{sum(c.of for c in j.chains)}</td>"
        f"<td>{_diagnostics(j.diagnostics)}</td></tr>" for j in jobs)
    live = any(not j.state.terminal for j in jobs)
    body = (f'<main{" data-live" if live else ""}><h1>Jobs</h1><p>{total} job(s); newest {len(jobs)} shown.</p>'
            "<table><tr><th>job</th><th>state</th><th>iterations</th><th>convergence</th></tr>"
            f"{rows}</table></main>")
    return document("jobs", body, nonce, live=live)


def job_page(job: Any, *, nonce: str, vars_: str, chosen: list[str], known: list[str], rows: list[dict[str, Any]],
             sort: str, descending: bool, draws_key: str, summary: dict[str, Any] | None) -> str:
    """One job: chains, convergence per element, plots of `chosen`, and at the end the summary and download."""
    live = not job.state.terminal
    base = f"/v1/jobs/{quote(job.id)}"
    chains = "".join(
        f"<tr><td>{c.chain}</td><td>{esc(c.phase)}</td>"
        f'<td><progress max="{max(1, c.of)}" value="{c.iteration}"></progress> {c.iteration}/{c.of}</td>'
        f"<td>{c.divergences}</td><td>{_number(c.step_size, 4)}</td><td>{c.attempts}</td></tr>" for c in job.chains)
    labels = ", ".join(f"{esc(k)}={esc(v)}" for k, v in job.labels.items())
    head = (f"<h1>{esc(job.name or job.id)}</h1>"
            f'<p>job <code>{esc(job.id)}</code>, state <span class="state">{esc(job.state)}</span>'
            f"{', labels ' + labels if labels else ''}. <a href=\"/v1/pages/jobs\">All jobs</a></p>"
            + (f'<p class="bad">{esc(job.error)}</p>' if job.error else "")
            + f"<p>Convergence: {_diagnostics(job.diagnostics)}</p>"
            "<h2>Chains</h2><table><tr><th>chain</th><th>phase</th><th>progress</th><th>divergences</th>"
            f"<th>step size</th><th>attempts</th></tr>{chains}</table>")
    query = {"vars": vars_} if vars_ else {}
    plots = "".join(
        f'<h3>{kind}</h3><img alt="{kind} plot of {esc(", ".join(chosen))}" '
        f'src="{base}/plots/{kind}.png?{esc(urlencode({**query, "n": draws_key}))}">' for kind in KINDS)
    selector = (f'<form method="get" action="{base}/page"><label>Variables (names or name[k], comma-separated) '
                f'<input name="vars" size="60" value="{esc(vars_)}" list="known"></label>'
                f'<datalist id="known">{"".join(f"<option value={chr(34)}{esc(k)}{chr(34)}>" for k in known)}'
                '</datalist> <button type="submit">Plot</button></form>')
    figures = (f"<h2>Plots</h2>{selector}<p>Plotted: {esc(', '.join(chosen)) or '-'}</p>{plots}" if chosen
               else "<h2>Plots</h2><p>No draws yet.</p>")
    body = f"<main{' data-live' if live else ''}>{head}{figures}{_table(base, rows, vars_, sort, descending)}"
    if summary is not None:
        body += _summary(summary) + f'<p><a href="{base}/draws?format=netcdf">Download the draws (netCDF)</a></p>'
    return document(job.name or job.id, body + "</main>", nonce, live=live)


def _table(base: str, rows: list[dict[str, Any]], vars_: str, sort: str, descending: bool) -> str:
    if not rows:
        return ""
    key = sort if sort in SORTS else "variable"
    ordered = sorted(rows, key=lambda r: (r[key] is None, r[key] if r[key] is not None else 0), reverse=descending) \
        if key != "variable" else (list(reversed(rows)) if descending else rows)
    links = {s: urlencode({"vars": vars_, "sort": s, "desc": int(s == key and not descending)}) for s in SORTS}
    headers = "".join(f'<th><a href="{base}/page?{esc(links[s])}">{s}</a></th>' for s in SORTS)
    body = "".join(
        f'<tr{" class=bad" if flagged(r) else ""}><td>{esc(r["variable"])}</td><td>{_number(r["r_hat"], 3)}</td>'
        f'<td>{_number(r["ess_bulk"], 0)}</td><td>{_number(r["ess_tail"], 0)}</td></tr>' for r in ordered)
    bad = sum(map(flagged, rows))
    return (f"<h2>R-hat and ESS per element</h2><p>{bad} of {len(rows)} flagged (R-hat above {RHAT_FLAG}, "
            f"bulk or tail ESS below {ESS_FLAG:.0f}); click a column to sort.</p>"
            f'<table id="convergence"><tr>{headers}</tr>{body}</table>')


def _summary(summary: dict[str, Any]) -> str:
    columns = ["mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]
    rows = "".join(
        f'<tr><td>{esc(r["variable"])}</td>'
        + "".join(f"<td>{_number(r.get(c), 3)}</td>" for c in columns) + "</tr>" for r in summary["variables"])
    notes = "".join(f"<li>{esc(n)}</li>" for n in summary["totals"].get("warnings", []))
    return (f'<h2>Summary</h2>{f"<ul>{notes}</ul>" if notes else ""}<table id="summary"><tr><th>variable</th>'
            + "".join(f"<th>{esc(c)}</th>" for c in columns) + f"</tr>{rows}</table>")
