"""The operator view (``/admin``): only mounted when an admin token is configured.

Authentication is the token itself in ``Authorization: Bearer``, or a login
form that sets a session cookie (see :mod:`triggergate.web.admin_auth`: every
presentation of the token is charged to the sign-in limit before it is compared).
A state-changing POST needs the Authorization header or a CSRF field bound to
the session. Every action is written to the audit log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from triggergate.audit import audit_record
from triggergate.errors import RequestError, StoreError
from triggergate.gate import KILL_SWITCH
from triggergate.models import Outcome
from triggergate.service import Service
from triggergate.settings import Settings
from triggergate.stores.base import Batch, Record
from triggergate.web.admin_auth import AdminAuth, Attempt
from triggergate.web.admin_view import Filters, dashboard, login_page, unavailable_page
from triggergate.web.page import FORM_TYPE, prefers_html

log = logging.getLogger("triggergate.admin")

MAX_FORM = 4096
UP = "../"  # from /admin/<name> to the app's root
ADMIN_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def admin_auth(settings: Settings, svc: Service) -> AdminAuth | None:
    """The operator's authentication, or None when no admin token is configured."""
    if settings.admin_token is None:
        return None
    token = settings.admin_token.get_secret_value()
    return AdminAuth(token, svc, settings.admin_login_client_limits, settings.admin_login_global_limits)


class _Invalid(Exception):
    """A form value the operator should correct; the message is ours."""


def _number(text: str) -> int | None:
    return int(text) if re.fullmatch(r"[0-9]{1,12}", text) else None


def _html(body: str, status: int = 200, **headers: str) -> HTMLResponse:
    return HTMLResponse(body, status, headers={**ADMIN_HEADERS, **headers})


def _back() -> RedirectResponse:
    # Every POST route is /admin/<name>: relative links keep working behind a path
    # prefix the app cannot see (an API Gateway stage), so "../" is the app's root.
    return RedirectResponse("../admin", 303, headers=ADMIN_HEADERS)


async def _form(request: Request) -> dict[str, str]:
    """The posted form (small, urlencoded only); anything else reads as empty."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = _number(request.headers.get("content-length", ""))
    if ctype != FORM_TYPE or declared is None or declared > MAX_FORM:
        return {}
    try:
        text = (await request.body()).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        return {}
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


Action = Callable[[Request, dict[str, str]], Awaitable[None]]


def refusal(request: Request, outcome: Outcome, root: str = UP) -> Response:
    """A refused guess (429, 503, 400): the safe JSON body, or for a browser's form the
    sign-in page with the same status, text and headers."""
    if prefers_html(request.headers.get("accept", "")):
        text = str(outcome.body["detail"]).capitalize() + "."
        return _html(login_page(text, root), outcome.status, **outcome.headers)
    return JSONResponse(outcome.body, outcome.status, headers={**ADMIN_HEADERS, **outcome.headers})


def admin_routes(settings: Settings, svc: Service, auth: AdminAuth) -> list[BaseRoute]:
    """The /admin routes for this service (mounted only when an admin token is set)."""

    def who(request: Request) -> str | None:
        """The operator's address, resolved through trusted proxies like any client's."""
        try:
            return str(auth.client(request).address)
        except RequestError:
            return request.client.host if request.client else None

    def refuse(problem: str = "", root: str = UP) -> HTMLResponse:
        page = login_page(problem, root)
        return _html(page, 401, **{"WWW-Authenticate": 'Bearer realm="admin"'})

    async def audit(request: Request, action: str, **fields: Any) -> None:
        record = audit_record(
            svc.clock(),
            svc.policy.audit_retention,
            "admin",
            action=action,
            via="web",
            client=who(request),
            **fields,
        )
        await svc.store_call(svc.store.apply(Batch(records=[record])))

    async def bearer(request: Request) -> Attempt | None:
        """The header's guess, charged like a sign-in; None without the header."""
        token = auth.bearer(request)
        return None if token is None else await auth.attempt(request, token)

    async def home(request: Request) -> Response:
        try:
            session = await auth.session(request)
        except StoreError:
            return _html(unavailable_page(""), 503, **{"Retry-After": "5"})
        if session is None:
            attempt = await bearer(request)
            if attempt is not None and attempt.refused:
                return refusal(request, attempt.refused, root="")
            if attempt is None or not attempt.ok:
                return refuse(root="")
        csrf = auth.csrf(session) if session else ""
        try:
            html = await dashboard(settings, svc, Filters.of(request.query_params), csrf)
        except StoreError:
            return _html(unavailable_page(""), 503, **{"Retry-After": "5"})
        return _html(html)

    async def login(request: Request) -> Response:
        form = await _form(request)
        attempt = await auth.attempt(request, form.get("token", ""))
        if attempt.refused:
            return refusal(request, attempt.refused)
        if not attempt.ok:
            return refuse("That token is not right.")
        try:
            # A fresh session at every sign-in; the one the browser held (if any) ends.
            old = await auth.session(request)
            if old is not None:
                await auth.revoke(old)
            await audit(request, "login")
        except StoreError:
            return _html(unavailable_page(UP), 503, **{"Retry-After": "5"})
        response = _back()
        auth.set_session(request, response, auth.new_session())
        return response

    def action(job: Action) -> Callable[[Request], Awaitable[Response]]:
        """A state-changing POST: the header, or a session cookie plus its CSRF field."""

        async def endpoint(request: Request) -> Response:
            form = await _form(request)
            try:
                attempt = await bearer(request)
                session = None
                if attempt is not None:  # the header is the credential; a form cannot send it
                    if attempt.refused:
                        return refusal(request, attempt.refused)
                    if not attempt.ok:
                        return refuse()
                else:
                    session = await auth.session(request)
                    if session is None:
                        return refuse()
                    if not auth.csrf_ok(session, form.get("csrf", "")):
                        log.warning("admin form without a valid CSRF field", extra={"client": who(request)})
                        return _html(login_page("The form expired; reload the page and try again.", UP), 403)
                request.state.session = session
                await job(request, form)
            except StoreError:
                return _html(unavailable_page(UP), 503, **{"Retry-After": "5"})
            except _Invalid as exc:
                return _html(login_page(str(exc), UP), 400)
            return _back()

        return endpoint

    async def logout(request: Request, form: dict[str, str]) -> None:
        session = request.state.session
        if session is not None:
            await auth.revoke(session)  # a copied cookie stops working too
        await audit(request, "logout")

    async def kill_switch(request: Request, form: dict[str, str]) -> None:
        state = form.get("state")
        if state not in ("on", "off"):
            raise _Invalid("Choose on or off for the kill switch.")
        reason = form.get("reason", "").strip()[:200] or "triggers are paused by the operator"
        retry_after = min(max(_number(form.get("retry_after", "").strip()) or 600, 1), 86400)
        if state == "on":
            flag = {"at": svc.clock(), "reason": reason, "retry_after": retry_after}
            await svc.store.apply(Batch(records=[Record(*KILL_SWITCH, flag)]))
        else:
            await svc.store.delete(*KILL_SWITCH)
        await audit(request, f"kill_switch_{state}", detail=reason if state == "on" else None)
        svc.kill_switch.forget()

    async def retry(request: Request, form: dict[str, str]) -> None:
        item = form.get("item") or None
        count = await svc.store.revive(item)
        svc.outbox.wake()
        await audit(request, "dlq_retry", item=item or "all", count=count)

    async def signed_out(request: Request) -> Response:
        response = await action(logout)(request)
        if response.status_code == 303:
            auth.clear_session(request, response)
        return response

    return [
        Route("/admin", home, methods=["GET"]),
        Route("/admin/login", login, methods=["POST"]),
        Route("/admin/logout", signed_out, methods=["POST"]),
        Route("/admin/kill-switch", action(kill_switch), methods=["POST"]),
        Route("/admin/retry", action(retry), methods=["POST"]),
    ]
