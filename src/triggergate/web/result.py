"""The page a form POST gets without JavaScript: what happened, in our words, and a link back."""

from __future__ import annotations

import time
from html import escape
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import HTMLResponse

from triggergate.models import Outcome
from triggergate.settings import Settings
from triggergate.web.page import SECURITY_HEADERS, layout, time_html


def _safe_link(url: Any) -> str:
    if isinstance(url, str) and urlsplit(url).scheme in ("http", "https"):
        return f' <a href="{escape(url)}" rel="noreferrer">Open the run in the CI system</a>.'
    return ""


def result_text(outcome: Outcome, now: float) -> tuple[str, str]:
    """Heading and message (HTML) for one trigger outcome; only our words or the safe detail."""
    body, status = outcome.body, outcome.status
    code, detail = str(body.get("error", "")), escape(str(body.get("detail", "")))
    retry = outcome.headers.get("Retry-After", "")
    when = time_html(now + int(retry)) if retry.isdigit() else "later"
    if status == 202:
        run = escape(str(body.get("run_id", "")))
        link = _safe_link(body.get("url"))
        if body.get("status") == "joined":
            return (
                "You joined the run in progress",
                f"Run <code>{run}</code> was already on its way; your press joined it.{link}",
            )
        state = escape(str(body.get("status")))
        status_link = f' Its status: <a href="runs/{run}">runs/{run}</a> (JSON).'
        return "Your run has started", f"Run <code>{run}</code> is {state}.{link}{status_link}"
    if code == "quota_exhausted":
        return "You have used all your triggers", f"You can press again {when}."
    if code == "budget_exhausted":
        return "The pipeline is resting", f"Its trigger budget is used up. Try again {when}."
    if code == "paused":
        return "Triggers are paused", f"The operator says: {detail}"
    if code == "unavailable":
        return "Service unavailable", "The service cannot take triggers right now. Try again in a minute."
    if status == 502:
        return "The pipeline did not start", detail
    if status < 500:
        return "That did not work", detail
    return "Something went wrong", "Something went wrong on our side. Try again in a minute."


def result_response(settings: Settings, outcome: Outcome) -> HTMLResponse:
    """The page a form POST gets without JavaScript: what happened, and a link back."""
    heading, message = result_text(outcome, time.time())
    rid = escape(str(outcome.body.get("request_id", "")))
    ref = f'<p class="small">Request id <code>{rid}</code></p>' if rid else ""
    body = f"""<h1>{escape(heading)}</h1>
<p class="message result" data-status="{outcome.status}">{message}</p>
{ref}
<p><a class="button" href="./">Back to {escape(settings.title)}</a></p>"""
    headers = {**outcome.headers, **SECURITY_HEADERS, "Cache-Control": "no-store"}
    return HTMLResponse(layout(heading, body, script=False), outcome.status, headers=headers)
