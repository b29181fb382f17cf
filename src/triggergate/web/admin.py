"""The operator view (``/admin``): only mounted when an admin token is configured.

Authentication is the token itself in ``Authorization: Bearer``, or a login
form that sets a session cookie. The cookie holds a signed, expiring session
(HMAC under a key derived from the token), never the token; every comparison
is constant-time. A state-changing POST needs the Authorization header or a
CSRF field bound to the session. Every action is written to the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from triggergate.audit import audit_record
from triggergate.clock import Clock
from triggergate.errors import RequestError, StoreError
from triggergate.gate import KILL_SWITCH
from triggergate.models import TriggerRequest
from triggergate.service import Service
from triggergate.settings import Settings
from triggergate.stores.base import Batch, Record
from triggergate.web.admin_view import Filters, dashboard, login_page, unavailable_page
from triggergate.web.page import FORM_TYPE

log = logging.getLogger("triggergate.admin")

COOKIE = "triggergate_admin"
SESSION_SECONDS = 12 * 3600
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


class AdminAuth:
    """Checks the token and issues and verifies sessions and CSRF tokens derived from it."""

    def __init__(self, token: str, now: Clock) -> None:
        self._token = token.encode()
        # Sessions are signed with a key derived from the token: rotating the token
        # ends every session, and a leaked cookie never reveals the token.
        self._key = hmac.new(self._token, b"triggergate admin session v1", hashlib.sha256).digest()
        self._now = now

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._token)

    def new_session(self) -> str:
        body = f"{int(self._now())}.{secrets.token_hex(16)}"
        return f"{body}.{self._sign('session|' + body)}"

    def session_ok(self, value: str) -> bool:
        issued, _, rest = value.partition(".")
        nonce, _, signature = rest.partition(".")
        stamp = _number(issued)
        if stamp is None or not nonce or not signature:
            return False
        fresh = -60 <= self._now() - stamp <= SESSION_SECONDS
        expected = self._sign(f"session|{issued}.{nonce}").encode()
        good = hmac.compare_digest(signature.encode(), expected)
        return good and fresh

    def csrf(self, session: str) -> str:
        return self._sign("csrf|" + session)

    def csrf_ok(self, session: str, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf(session).encode())

    def bearer_ok(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    def session(self, request: Request) -> str | None:
        value = request.cookies.get(COOKIE, "")
        return value if value and self.session_ok(value) else None


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


def admin_routes(settings: Settings, svc: Service) -> list[BaseRoute]:
    """The /admin routes for this service; call only when ``settings.admin_token`` is set."""
    assert settings.admin_token is not None
    auth = AdminAuth(settings.admin_token.get_secret_value(), svc.clock)

    def who(request: Request) -> str | None:
        """The operator's address, resolved through trusted proxies like any client's."""
        peer = request.client.host if request.client else None
        headers = [(k.lower(), v) for k, v in request.headers.items()]
        try:
            return str(svc.identify(TriggerRequest(peer, headers, "")).address)
        except RequestError:
            return peer

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
        await svc.store.apply(Batch(records=[record]))

    async def home(request: Request) -> Response:
        session = auth.session(request)
        if session is None and not auth.bearer_ok(request):
            return refuse(root="")
        csrf = auth.csrf(session) if session else ""
        try:
            html = await dashboard(settings, svc, Filters.of(request.query_params), csrf)
        except StoreError:
            return _html(unavailable_page(""), 503, **{"Retry-After": "5"})
        return _html(html)

    async def login(request: Request) -> Response:
        form = await _form(request)
        if not auth.token_ok(form.get("token", "")):
            # Logged, never stored: a refused request writes nothing.
            log.warning("admin login refused", extra={"client": who(request)})
            return refuse("That token is not right.")
        try:
            await audit(request, "login")
        except StoreError:
            return _html(unavailable_page(UP), 503, **{"Retry-After": "5"})
        response = _back()
        response.set_cookie(
            COOKIE,
            auth.new_session(),
            max_age=SESSION_SECONDS,
            path=None,  # the default path is this URL's folder: /admin, under any prefix
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    def action(job: Action) -> Callable[[Request], Awaitable[Response]]:
        """A state-changing POST: the header, or a session cookie plus its CSRF field."""

        async def endpoint(request: Request) -> Response:
            form = await _form(request)
            if not auth.bearer_ok(request):
                session = auth.session(request)
                if session is None:
                    return refuse()
                if not auth.csrf_ok(session, form.get("csrf", "")):
                    log.warning("admin form without a valid CSRF field", extra={"client": who(request)})
                    return _html(login_page("The form expired; reload the page and try again.", UP), 403)
            try:
                await job(request, form)
            except StoreError:
                return _html(unavailable_page(UP), 503, **{"Retry-After": "5"})
            except _Invalid as exc:
                return _html(login_page(str(exc), UP), 400)
            return _back()

        return endpoint

    async def logout(request: Request, form: dict[str, str]) -> None:
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
            response.set_cookie(COOKIE, "", max_age=0, path=None, httponly=True, samesite="strict")
        return response

    return [
        Route("/admin", home, methods=["GET"]),
        Route("/admin/login", login, methods=["POST"]),
        Route("/admin/logout", signed_out, methods=["POST"]),
        Route("/admin/kill-switch", action(kill_switch), methods=["POST"]),
        Route("/admin/retry", action(retry), methods=["POST"]),
    ]
