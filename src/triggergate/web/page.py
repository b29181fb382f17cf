"""The public page (``GET /``), its static files, and the helpers the trigger route uses
for the page's form (reading it, and whether the caller wants HTML back).

Everything is rendered here, escaped, from the package: the page's behaviour
lives in ``static/page.js`` (no inline script, so the CSP can forbid it) and
the page is complete without it. URLs are relative, so the page also works
below a path prefix the app cannot see (an API Gateway stage).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from triggergate.errors import RequestError, StoreError
from triggergate.models import Outcome, TriggerRequest
from triggergate.quota import Limit
from triggergate.service import Service
from triggergate.settings import ParamSpec, Settings

STATIC_DIR = Path(__file__).parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A deploy button must never be framed (clickjacking).
    "X-Frame-Options": "DENY",
}
FORM_TYPE = "application/x-www-form-urlencoded"
UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


class Static(StaticFiles):
    """The package's static files, marked no-sniff and cacheable for five minutes."""

    def __init__(self) -> None:
        super().__init__(directory=STATIC_DIR)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"public, max-age=300"),
                ]
            await send(message)

        await super().__call__(scope, receive, send_headers)


def human_limit(limit: Limit) -> str:
    """``3/7d`` -> ``3 per 7 days``."""
    for seconds, unit in UNITS:
        if limit.window % seconds == 0:
            n = limit.window // seconds
            return f"{limit.count} per {unit if n == 1 else f'{n} {unit}s'}"
    return str(limit)  # pragma: no cover - every window is a whole number of seconds


def utc_text(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def time_html(at: float) -> str:
    """A time the script rewrites in the viewer's zone; UTC text without JavaScript."""
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
    return f'<time datetime="{stamp}">{utc_text(at)}</time>'


def prefers_html(accept: str) -> bool:
    """True when ``Accept`` ranks text/html above application/json (ties go to JSON)."""
    ranks: dict[str, float] = {}
    for part in accept.lower().split(","):
        media, *options = (p.strip() for p in part.split(";"))
        q = 1.0
        for option in options:
            name, _, value = option.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranks[media] = max(q, ranks.get(media, 0.0))

    def rank(kind: str, family: str) -> float:
        # The most specific range that names the type decides (RFC 9110, section 12.5.1).
        for media in (kind, f"{family}/*", "*/*"):
            if media in ranks:
                return ranks[media]
        return 0.0

    return rank("text/html", "text") > rank("application/json", "application")


def form_payload(body: bytes) -> dict[str, Any] | None:
    """The page's form as the JSON API's body; blank fields mean "use the default"."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(400, "bad_form", "the form could not be read") from exc
    params: dict[str, str] = {}
    for name, value in pairs:
        if value.strip() and name not in params:
            params[name] = value.strip()
    return {"params": params} if params else None


def layout(title: str, body: str, *, script: bool) -> str:
    js = '\n<script src="static/page.js" defer></script>' if script else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="stylesheet" href="static/page.css">
<link rel="icon" href="static/icon.svg" type="image/svg+xml">{js}
</head><body>
<main class="card">
{body}
</main>
<footer><a href="openapi.json">API</a> · served by triggergate</footer>
</body></html>
"""


def _field(name: str, spec: ParamSpec) -> str:
    label = escape(spec.label or name.replace("_", " ").capitalize())
    ident = f"p-{escape(name)}"
    required = " required" if spec.required and spec.default is None else ""
    if spec.choices:
        blank = "" if required or spec.default is not None else '<option value="">—</option>'
        options = "".join(
            f'<option value="{escape(c)}"{" selected" if c == spec.default else ""}>{escape(c)}</option>'
            for c in spec.choices
        )
        control = f'<select id="{ident}" name="{escape(name)}"{required}>{blank}{options}</select>'
    else:
        value = f' value="{escape(spec.default)}"' if spec.default is not None else ""
        control = (
            f'<input id="{ident}" name="{escape(name)}" type="text" autocomplete="off" '
            f'spellcheck="false" maxlength="256" data-pattern="{escape(spec.pattern)}"'
            f"{value}{required}>"
        )
    return f'<div class="field"><label for="{ident}">{label}</label>{control}</div>'


def quota_text(outcome: Outcome | None) -> str:
    """The caller's remaining triggers as a sentence (HTML), from ``GET /quota``'s body."""
    if outcome is None or outcome.status != 200:
        return "Your remaining triggers could not be read just now."
    body = outcome.body
    if body.get("unlimited"):
        return "No limit applies to you."
    limits = ", ".join(human_limit(Limit.parse(text)) for text in body.get("limits", []))
    remaining = int(body.get("remaining") or 0)
    next_at = body.get("next_slot_at")
    when = time_html(datetime.fromisoformat(next_at).timestamp()) if next_at else ""
    if remaining == 0:
        again = when or "later"
        return f"You have used all your triggers ({escape(limits)}). You can press again {again}."
    text = f"You can press <strong>{remaining}</strong> more time{'s' if remaining > 1 else ''}"
    text += f" (limit {escape(limits)})."
    if when:
        text += f" The next one frees up {when}."
    return text


def render_page(
    settings: Settings, pipeline: str, quota: Outcome | None, paused: dict[str, Any] | None
) -> str:
    """The whole public page; ``paused`` is the kill switch record, if on."""
    fields = "".join(_field(name, spec) for name, spec in settings.params.items())
    limits = ", ".join(human_limit(limit) for limit in settings.client_limits)
    banner = ""
    if paused:
        reason = escape(str(paused.get("reason") or "triggers are paused by the operator"))
        banner = f'<p class="notice paused" id="paused"><strong>Paused:</strong> {reason}</p>'
    body = f"""<header>
<p class="eyebrow">Pipeline <strong id="pipeline">{escape(pipeline)}</strong></p>
<h1>{escape(settings.title)}</h1>
<p class="lead">{escape(settings.description)}</p>
</header>
{banner}
<form id="trigger" method="post" action="trigger">
{fields}
<button type="submit" id="deploy">Deploy</button>
</form>
<p id="quota" class="quota" data-limits="{escape(limits)}">{quota_text(quota)}</p>
<div id="message" class="message" role="status" aria-live="polite" aria-atomic="true"></div>
<p id="run-status" class="visually-hidden" role="status" aria-live="polite"></p>
<section id="runs-section" aria-labelledby="runs-title" hidden>
<h2 id="runs-title">Your runs</h2>
<ol id="runs" class="runs"></ol>
</section>"""
    return layout(settings.title, body, script=True)


async def page_response(settings: Settings, svc: Service, request: TriggerRequest) -> HTMLResponse:
    """``GET /``: the page with the caller's quota and the kill switch, read without writing."""
    try:
        paused = await asyncio.wait_for(svc.kill_switch.state(), svc.policy.store_timeout)
    except (StoreError, TimeoutError):
        paused = None  # the quota line below says the store could not be read
    quota = await svc.quota(request)
    html = render_page(settings, svc.backend.name, quota, paused)
    # The quota was just read: its rate headers go out as they are, so the request-id
    # middleware does not read the store a second time to add them.
    rate = {k: v for k, v in quota.headers.items() if k.startswith("RateLimit")}
    return HTMLResponse(html, headers={**SECURITY_HEADERS, **rate, "Cache-Control": "no-store"})
