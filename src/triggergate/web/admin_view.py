"""The operator view's pages: the dashboard (audit, denials, budget, dead letters,
kill switch) and the login form. Plain HTML forms, no script; every value escaped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

from triggergate.audit import iso
from triggergate.errors import ConfigurationError
from triggergate.gate import BUDGET_KEY, KILL_SWITCH
from triggergate.quota import Check
from triggergate.service import Service
from triggergate.settings import Settings, parse_duration
from triggergate.web.page import human_limit

OUTCOMES = ("accepted", "refunded", "failed", "uncertain", "recovered", "denied", "admin")
TRIGGER_EVENTS = ("accepted", "refunded", "failed", "uncertain", "recovered")
ROWS = 100


@dataclass(frozen=True)
class Filters:
    """The dashboard's filters, from the query string, each checked."""

    outcome: str = ""
    client: str = ""
    since: str = "7d"
    problem: str = ""

    @classmethod
    def of(cls, query: Mapping[str, str]) -> Filters:
        outcome = query.get("outcome", "")
        client = query.get("client", "").strip()[:100]
        since = query.get("since", "").strip()[:40] or "7d"
        problem = ""
        if outcome not in ("", *OUTCOMES):
            outcome, problem = "", "Unknown outcome; showing all."
        if cls.start(since, 0.0) is None:
            since, problem = "7d", "Use a duration (24h, 7d) or an ISO date for 'since'."
        return cls(outcome, client, since, problem)

    @staticmethod
    def start(since: str, now: float) -> float | None:
        try:
            return now - parse_duration(since)
        except ConfigurationError:
            pass
        try:
            return datetime.fromisoformat(since).replace(tzinfo=UTC).timestamp()
        except ValueError:
            return None

    def keep(self, doc: Mapping[str, Any]) -> bool:
        if self.outcome and doc.get("event") != self.outcome:
            return False
        c = self.client
        return not c or c in (doc.get("client_key"), doc.get("client")) or c in doc.get("top", {})


def _layout(title: str, body: str, root: str = "") -> str:
    """``root`` leads from the page's URL to the app's root (``../`` below /admin/)."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{escape(title)}</title>
<link rel="stylesheet" href="{root}static/page.css">
<link rel="icon" href="{root}static/icon.svg" type="image/svg+xml">
</head><body>
<main class="card wide">
{body}
</main>
</body></html>
"""


def login_page(problem: str = "", root: str = "") -> str:
    """The sign-in form; ``problem`` is our own short text."""
    note = f'<p class="message error" role="alert">{escape(problem)}</p>' if problem else ""
    return _layout(
        "Operator sign-in",
        f"""<h1>Operator sign-in</h1>
{note}
<form method="post" action="{root}admin/login">
<input type="text" name="username" value="operator" autocomplete="username" hidden>
<div class="field"><label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required></div>
<button type="submit">Sign in</button>
</form>""",
        root,
    )


def unavailable_page(root: str = "") -> str:
    return _layout(
        "Unavailable",
        '<h1>Store unavailable</h1><p class="message error">The store did not answer. '
        f'Try again shortly.</p><p><a href="{root}admin">Reload</a></p>',
        root,
    )


def _table(headings: Iterable[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="small">{escape(empty)}</p>'
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _cell(value: Any) -> str:
    return "–" if value is None or value == "" else escape(str(value))


def _csrf(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(csrf)}">' if csrf else ""


async def _kill_switch(svc: Service, csrf: str) -> str:
    flag = await svc.store.get(*KILL_SWITCH)
    if flag:
        since = iso(float(flag.get("at", 0)))
        return f"""<p class="notice paused" id="kill-state"><strong>On</strong> since {since}:
{escape(str(flag.get("reason", "")))}</p>
<form method="post" action="admin/kill-switch">{_csrf(csrf)}
<input type="hidden" name="state" value="off">
<button type="submit" id="kill-off">Resume triggers</button></form>"""
    return f"""<p id="kill-state"><strong>Off</strong>: triggers are accepted.</p>
<form method="post" action="admin/kill-switch" class="row">{_csrf(csrf)}
<input type="hidden" name="state" value="on">
<div class="field"><label for="reason">Reason shown to visitors</label>
<input id="reason" name="reason" maxlength="200" required></div>
<div class="field"><label for="retry_after">Retry-After (seconds)</label>
<input id="retry_after" name="retry_after" inputmode="numeric" pattern="[0-9]+" value="600"></div>
<div class="field"><button type="submit" class="danger" id="kill-on">Pause triggers</button></div>
</form>"""


async def _budget(settings: Settings, svc: Service) -> str:
    if not settings.budget_limits:
        return '<p class="small">No global budget is configured.</p>'
    rows = []
    for limit in settings.budget_limits:
        verdict = (await svc.store.peek([Check(BUDGET_KEY, (limit,))])).verdicts[0]
        rows.append([escape(human_limit(limit)), str(verdict.used), str(verdict.remaining)])
    return _table(("limit", "used", "left"), rows, "")


def _filters(f: Filters) -> str:
    options = "".join(
        f'<option value="{o}"{" selected" if o == f.outcome else ""}>{o or "any"}</option>'
        for o in ("", *OUTCOMES)
    )
    problem = f'<p class="message warn">{escape(f.problem)}</p>' if f.problem else ""
    return f"""{problem}<form method="get" action="admin" class="filters" aria-label="Filters">
<div class="field"><label for="f-outcome">Outcome</label>
<select id="f-outcome" name="outcome">{options}</select></div>
<div class="field"><label for="f-client">Client key</label>
<input id="f-client" name="client" value="{escape(f.client)}"></div>
<div class="field"><label for="f-since">Since</label>
<input id="f-since" name="since" value="{escape(f.since)}"></div>
<div class="field"><button type="submit" class="secondary">Filter</button></div>
</form>"""


def _audit_sections(docs: list[dict[str, Any]]) -> str:
    triggers = [d for d in docs if d.get("event") in TRIGGER_EVENTS][:ROWS]
    denials = [d for d in docs if d.get("event") == "denied"]
    admin = [d for d in docs if d.get("event") == "admin"][:ROWS]
    top: Counter[str] = Counter()
    for d in denials:
        top.update({str(k): int(v) for k, v in d.get("top", {}).items()})
    trigger_rows = [
        [iso(d["at"]), _cell(d.get("event")), _cell(d.get("client_key")),
         f"<code>{_cell(d.get('run_id'))}</code>", _cell(d.get("detail"))]
        for d in triggers
    ]  # fmt: skip
    denial_rows = [
        [_cell(d.get("minute") or iso(d["at"])), _cell(d.get("total")),
         _cell(d.get("distinct_keys")),
         escape(", ".join(f"{k}: {v}" for k, v in d.get("reasons", {}).items()))]
        for d in denials[:ROWS]
    ]  # fmt: skip
    top_rows = [[escape(k), str(v)] for k, v in top.most_common(10)]
    admin_rows = [
        [iso(d["at"]), _cell(d.get("action")), _cell(d.get("client")), _cell(d.get("detail"))] for d in admin
    ]
    return f"""<h2 id="triggers">Triggers</h2>
{_table(("time (UTC)", "outcome", "client key", "run", "detail"), trigger_rows, "No triggers match.")}
<h2 id="denials">Denials (per minute)</h2>
{_table(("minute (UTC)", "denials", "keys", "reasons"), denial_rows, "No denials match.")}
<h2 id="top-denied">Top denied client keys</h2>
{_table(("client key", "denials"), top_rows, "No denied keys.")}
<h2 id="admin-actions">Operator actions</h2>
{_table(("time (UTC)", "action", "from", "detail"), admin_rows, "No operator actions match.")}"""


async def _dead_letters(svc: Service, csrf: str) -> str:
    items = await svc.store.dead(ROWS)
    rows = [
        [f"<code>{escape(i.id)}</code>", escape(i.target), str(i.attempts), _cell(i.error),
         _cell(i.payload.get("subject")),
         f'<form method="post" action="admin/retry" class="inline">{_csrf(csrf)}'
         f'<input type="hidden" name="item" value="{escape(i.id)}">'
         f'<button type="submit" class="secondary" aria-label="Retry {escape(i.id)}">Retry</button></form>']
        for i in items
    ]  # fmt: skip
    retry_all = (
        f'<form method="post" action="admin/retry">{_csrf(csrf)}'
        '<button type="submit" class="secondary">Retry all</button></form>'
        if items
        else ""
    )
    table = _table(("id", "target", "attempts", "error", "subject", ""), rows, "No dead letters.")
    return table + retry_all


async def dashboard(settings: Settings, svc: Service, filters: Filters, csrf: str) -> str:
    """The whole operator view; ``csrf`` is empty for header-authenticated requests."""
    now = svc.clock()
    since = Filters.start(filters.since, now) or now - 7 * 86400
    docs = await svc.store.query("audit", since=since, until=now + 1, limit=5000)
    docs = [d for d in docs if filters.keep(d)]
    logout = (
        f'<form method="post" action="admin/logout" class="inline">{_csrf(csrf)}'
        '<button type="submit" class="secondary">Sign out</button></form>'
        if csrf
        else ""
    )
    body = f"""<header class="row"><div>
<p class="eyebrow">Pipeline <strong>{escape(svc.backend.name)}</strong></p>
<h1>Operator view</h1></div>{logout}</header>
<h2 id="kill-switch">Kill switch</h2>
{await _kill_switch(svc, csrf)}
<h2 id="budget">Budget</h2>
{await _budget(settings, svc)}
<h2 id="audit">Audit log</h2>
{_filters(filters)}
{_audit_sections(docs)}
<h2 id="dead-letters">Dead letters</h2>
{await _dead_letters(svc, csrf)}"""
    return _layout(f"Operator view — {settings.title}", body)
