"""Who is the operator: the admin token, the limit on guessing it, and revocable sessions.

Every presentation of the token is a guess: the sign-in form, and an
``Authorization: Bearer`` header on ``/admin`` or ``/metrics``. A guess is
charged before it is compared (one atomic ``reserve`` against the per-client
limit and the global one), compared in constant time, and given back when it
was right; so however many guesses race, no more of them are compared than the
limit allows, and while the limit is spent no token is compared at all. A
refused guess writes nothing (it is read first, like a denied trigger); wrong and
refused guesses are counted in the denial summaries (reasons ``admin_login`` and
``admin_login_limit``), and the first refusal by the global limit in a window
sends one alert and writes one audit record, whichever replica sees it first.

The session cookie holds ``expires.nonce.signature`` (HMAC under a key derived
from the token), never the token. Signing out stores a revocation marker for
the nonce that lives as long as the session would have, so a copied cookie
stops working on every replica.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
import uuid
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from triggergate.audit import audit_record, iso
from triggergate.errors import RequestError, StoreError
from triggergate.gate import (
    ADMIN_LOGIN_ALERT,
    ADMIN_LOGIN_KEY,
    ADMIN_LOGIN_PREFIX,
    ADMIN_LOGIN_PURPOSE,
    REVOKED_SESSION,
)
from triggergate.identity import Client
from triggergate.models import Outcome, TriggerRequest, error
from triggergate.quota import Check, Decision, Limit
from triggergate.service import Service
from triggergate.stores.base import Batch, Record
from triggergate.web.scheme import scope_scheme

log = logging.getLogger("triggergate.admin")

COOKIE = "triggergate_admin"  # over plain http only (a local demo on 127.0.0.1)
# Over https: the __Host- prefix makes browsers refuse the cookie unless it is
# Secure, has Path=/ and no Domain (draft-ietf-httpbis-rfc6265bis, section 4.1.3.2),
# so no sibling subdomain or plain-http page can plant or overwrite it.
SECURE_COOKIE = "__Host-" + COOKIE
SESSION_SECONDS = 12 * 3600
SKEW = 60  # seconds of clock difference tolerated between replicas
REQUEST_ID = "triggergate.request_id"  # the scope key web.app.RequestIdMiddleware sets


@dataclass(frozen=True)
class Attempt:
    """One guess at the token: ``ok`` when right; ``refused`` when it was not compared
    (the limit is spent, the store did not answer, the client address is unreadable)."""

    ok: bool
    refused: Outcome | None = None


def request_id(request: Request) -> str:
    return str(request.scope.get(REQUEST_ID, ""))


class AdminAuth:
    """Checks the token under the sign-in limit; issues, verifies and revokes sessions."""

    def __init__(
        self, token: str, svc: Service, limits: tuple[Limit, ...], budget: tuple[Limit, ...]
    ) -> None:
        self._token = token.encode()
        # Sessions are signed with a key derived from the token: rotating the token
        # ends every session, and a leaked cookie never reveals the token.
        self._key = hmac.new(self._token, b"triggergate admin session v1", hashlib.sha256).digest()
        self.svc = svc
        self.limits = limits
        self.budget = budget

    # -- the token, under the sign-in limit ------------------------------------------------

    def bearer(self, request: Request) -> str | None:
        """The token of an ``Authorization: Bearer`` header, or None when there is none."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    async def attempt(self, request: Request, given: str) -> Attempt:
        """Charge one guess, compare it, and give the charge back if it was right."""
        svc, rid = self.svc, request_id(request)
        try:
            client = self.client(request)
        except RequestError as exc:
            return Attempt(False, error(exc.status, exc.code, exc.detail, rid))
        checks = [Check(ADMIN_LOGIN_PREFIX + client.key, self.limits), Check(ADMIN_LOGIN_KEY, self.budget)]
        ledger = {"purpose": ADMIN_LOGIN_PURPOSE, "client_key": client.key, "client": str(client.address)}
        slot = f"login-{uuid.uuid4().hex}"
        try:
            # Read-only first: while the limit is spent, a guess costs no write at all.
            decision = await svc.store_call(svc.store.peek(checks))
            if decision.allowed:
                decision = await svc.store_call(svc.store.reserve(slot, checks, ledger))
        except StoreError as exc:
            svc.store_alarm(rid, exc)
            return Attempt(False, _unavailable(rid))
        if not decision.allowed:
            return Attempt(False, await self._limited(rid, client, decision))
        ok = hmac.compare_digest(given.encode(), self._token)
        try:
            # Right: the charge is given back (a sign-in is never charged). Wrong: it stays.
            await svc.store_call(svc.store.apply(Batch(release=slot) if ok else Batch(settle=slot)))
        except StoreError as exc:
            svc.store_alarm(rid, exc)  # the charge stays pending; the reconciler settles it
            if ok:
                return Attempt(False, _unavailable(rid))
        if not ok:
            svc.denials.add(client.key, "admin_login", decision.now)
            log.warning("admin sign-in refused", extra={"client": str(client.address), "request_id": rid})
        return Attempt(ok)

    def client(self, request: Request) -> Client:
        """The caller, resolved through trusted proxies like any client; RequestError if unreadable."""
        peer = request.client.host if request.client else None
        headers = [(k.lower(), v) for k, v in request.headers.items()]
        return self.svc.identify(TriggerRequest(peer, headers, request_id(request)))

    async def _limited(self, rid: str, client: Client, decision: Decision) -> Outcome:
        svc, now = self.svc, decision.now
        svc.denials.add(client.key, "admin_login_limit", now)
        tripped = next((v for v in decision.verdicts if v.key == ADMIN_LOGIN_KEY and not v.allowed), None)
        if tripped is not None:
            limits = ",".join(str(limit) for limit in self.budget)
            record = audit_record(
                now,
                svc.policy.audit_retention,
                "admin",
                action="login_limit_reached",
                via="web",
                client=str(client.address),
                detail=f"failed sign-ins reached the global limit {limits}",
            )
            alert = svc.alerts.admin_login_limited(limits, now)
            try:
                await svc.alert_once(ADMIN_LOGIN_ALERT, now, now + tripped.retry_after, alert, [record])
            except StoreError as exc:
                svc.store_alarm(rid, exc)
        retry = max(1, math.ceil(decision.retry_after))
        return error(
            429,
            "too_many_attempts",
            f"too many failed sign-in attempts; try again after {iso(now + retry)}",
            rid,
            **{"Retry-After": str(retry)},
        )

    # -- sessions --------------------------------------------------------------------------

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        body = f"{int(self.svc.clock()) + SESSION_SECONDS}.{secrets.token_hex(16)}"
        return f"{body}.{self._sign('session|' + body)}"

    def _signed(self, value: str) -> tuple[int, str] | None:
        """(expires, nonce) of a well-signed, unexpired session value, else None."""
        expires, _, rest = value.partition(".")
        nonce, _, signature = rest.partition(".")
        if not (re.fullmatch(r"[0-9]{1,12}", expires) and re.fullmatch(r"[0-9a-f]{32}", nonce)):
            return None
        left = int(expires) - self.svc.clock()
        expected = self._sign(f"session|{expires}.{nonce}").encode()
        good = hmac.compare_digest(signature.encode(), expected)
        return (int(expires), nonce) if good and 0 < left <= SESSION_SECONDS + SKEW else None

    def cookie_name(self, request: Request) -> str:
        return SECURE_COOKIE if self.https(request) else COOKIE

    def https(self, request: Request) -> bool:
        return scope_scheme(request.scope, self.svc.policy.identity) == "https"

    async def session(self, request: Request) -> str | None:
        """The request's live session: signed, unexpired, not revoked. Raises StoreError.

        Over https only the ``__Host-`` cookie counts, over http only the plain one,
        so a cookie set over plain http is never honoured over https.
        """
        value = request.cookies.get(self.cookie_name(request), "")
        signed = self._signed(value) if value else None
        if signed is None:
            return None
        revoked = await self.svc.store_call(self.svc.store.get(REVOKED_SESSION, signed[1]))
        return None if revoked is not None else value

    async def revoke(self, session: str) -> None:
        """End ``session`` on every replica: a marker that lives as long as the session would."""
        signed = self._signed(session)
        if signed is not None:
            expires, nonce = signed
            marker = Record(REVOKED_SESSION, nonce, {"at": self.svc.clock()}, expires=expires + SKEW)
            await self.svc.store_call(self.svc.store.apply(Batch(records=[marker])))

    def set_session(self, request: Request, response: Response, session: str) -> None:
        secure = self.https(request)
        response.set_cookie(
            SECURE_COOKIE if secure else COOKIE,
            session,
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="strict",
            secure=secure,
        )

    def clear_session(self, request: Request, response: Response) -> None:
        secure = self.https(request)
        name = SECURE_COOKIE if secure else COOKIE
        response.set_cookie(name, "", max_age=0, path="/", httponly=True, samesite="strict", secure=secure)

    def csrf(self, session: str) -> str:
        return self._sign("csrf|" + session)

    def csrf_ok(self, session: str, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf(session).encode())


def _unavailable(rid: str) -> Outcome:
    detail = "the store did not answer; try again shortly"
    return error(503, "unavailable", detail, rid, **{"Retry-After": "5"})
