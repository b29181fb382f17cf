"""Operator authentication through the app: the sign-in limit, sessions that expire and end."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.servers.webhook import webhook_server
from tests.web.conftest import MakeClient
from triggergate.gate import ADMIN_LOGIN_KEY, ADMIN_LOGIN_PREFIX
from triggergate.quota import Check, Limit
from triggergate.web.admin_auth import COOKIE, SESSION_SECONDS

TOKEN = "Qm3vT8yKc1pZr6WnX0aLd4sEh7uJf2gBiN5oV9tRwYe"
BEARER = {"authorization": f"Bearer {TOKEN}"}


def _admin(make_client: MakeClient, **overrides: Any) -> TestClient:
    return make_client(admin_token=TOKEN, **overrides)


def _store(client: TestClient) -> Any:
    return client.app.state.service.store  # type: ignore[attr-defined]


def _call(client: TestClient, fn: Any, *args: Any, **kwargs: Any) -> Any:
    return client.portal.call(functools.partial(fn, *args, **kwargs))  # type: ignore[union-attr]


def _used(client: TestClient, key: str) -> int:
    decision = _call(client, _store(client).peek, [Check(key, (Limit(1_000_000, 86400),))])
    return int(decision.verdicts[0].used)


def _audit(client: TestClient) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = _call(
        client, _store(client).query, "audit", since=0, until=time.time() + 10, limit=1000
    )
    return docs


def _sign(token: str, expires: int, nonce: str) -> str:
    """A session value as the app signs one: HMAC under a key derived from the token."""
    key = hmac.new(token.encode(), b"triggergate admin session v1", hashlib.sha256).digest()
    body = f"{expires}.{nonce}"
    return f"{body}.{hmac.new(key, f'session|{body}'.encode(), hashlib.sha256).hexdigest()}"


def test_ten_wrong_tokens_then_429_with_retry_after_and_the_safe_body(make_client: MakeClient) -> None:
    """The 11th wrong sign-in within the hour is refused with 429, Retry-After and the
    safe error body, and only the ten compared guesses are charged."""
    client = _admin(make_client)
    statuses = [client.post("/admin/login", data={"token": f"guess-{i}"}).status_code for i in range(12)]
    assert statuses == [401] * 10 + [429] * 2
    refused = client.post("/admin/login", data={"token": "guess"})
    assert refused.status_code == 429 and 3500 <= int(refused.headers["retry-after"]) <= 3600
    body = refused.json()
    assert set(body) == {"error", "detail", "request_id"} and body["error"] == "too_many_attempts"
    assert body["request_id"] == refused.headers["x-request-id"]
    assert _used(client, f"{ADMIN_LOGIN_PREFIX}203.0.113.10") == 10
    assert _used(client, ADMIN_LOGIN_KEY) == 10


def test_while_the_limit_is_spent_the_right_token_is_not_even_compared(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spent limit refuses every sign-in, the right token included, before any
    comparison; another client is not affected."""
    client = _admin(make_client)
    for i in range(10):
        client.post("/admin/login", data={"token": f"guess-{i}"})
    compared: list[Any] = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append(a) or real(a, b))
    assert client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False).status_code == 429
    assert client.get("/admin", headers=BEARER).status_code == 429
    assert TOKEN.encode() not in compared
    other = _admin(make_client, peer="203.0.113.77")
    assert other.post("/admin/login", data={"token": TOKEN}, follow_redirects=False).status_code == 303


def test_successful_sign_ins_are_not_charged(make_client: MakeClient) -> None:
    """Fifteen right sign-ins (form and header) leave the limit untouched."""
    client = _admin(make_client)
    for _ in range(8):
        assert client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False).status_code == 303
        assert client.get("/admin", headers=BEARER).status_code == 200
    assert _used(client, f"{ADMIN_LOGIN_PREFIX}203.0.113.10") == 0
    assert _used(client, ADMIN_LOGIN_KEY) == 0


def test_a_bearer_guess_is_charged_like_a_sign_in(make_client: MakeClient) -> None:
    """Wrong Authorization headers on /admin and its actions spend the same limit."""
    client = _admin(make_client)
    for i in range(5):
        assert client.get("/admin", headers={"authorization": f"Bearer guess-{i}"}).status_code == 401
    for i in range(5):
        wrong = {"authorization": f"Bearer other-{i}"}
        assert client.post("/admin/kill-switch", data={"state": "on"}, headers=wrong).status_code == 401
    assert client.post("/admin/login", data={"token": TOKEN}).status_code == 429
    assert client.post("/trigger").status_code == 202  # no kill switch was set


def test_a_browser_gets_the_sign_in_page_with_the_429(make_client: MakeClient) -> None:
    """A form posted by a browser is refused with the page, the status and Retry-After."""
    client = _admin(make_client)
    for i in range(10):
        client.post("/admin/login", data={"token": f"guess-{i}"})
    page = client.post("/admin/login", data={"token": "x"}, headers={"accept": "text/html"})
    assert page.status_code == 429 and "retry-after" in page.headers
    assert "Too many failed sign-in attempts" in page.text and 'name="token"' in page.text


def test_failed_and_refused_sign_ins_are_counted_in_the_denial_summary(make_client: MakeClient) -> None:
    """Wrong tokens and refusals land in the per-minute denial record with their reasons."""
    client = _admin(make_client)
    for i in range(13):
        client.post("/admin/login", data={"token": f"guess-{i}"})
    _call(client, client.app.state.service.maintenance.flush_denials, True)  # type: ignore[attr-defined]
    denied = [d for d in _audit(client) if d["event"] == "denied"]
    assert denied[0]["reasons"] == {"admin_login": 10, "admin_login_limit": 3}
    assert denied[0]["top"] == {"203.0.113.10": 13}


def test_the_global_limit_refuses_every_client_and_alerts_once(make_client: MakeClient) -> None:
    """Past the global limit a fresh client is refused too; one audit record and one
    alert (delivered to a real webhook) for the window, however many refusals follow."""
    with webhook_server() as hook:
        limits = {
            "admin_login_limits": ["3/1h"],
            "admin_login_budget": ["6/1h"],
            "notify": [f"webhook+{hook.url}/hook"],
        }
        client = _admin(make_client, **limits)
        clients = [_admin(make_client, peer=f"198.51.100.{n}", **limits) for n in range(1, 5)]
        statuses = [
            c.post("/admin/login", data={"token": "guess"}).status_code for c in clients for _ in range(3)
        ]
        assert statuses == [401] * 6 + [429] * 6
        assert client.post("/admin/login", data={"token": TOKEN}).status_code == 429
        for c in clients:
            assert c.post("/admin/login", data={"token": "more"}).status_code == 429
        reached = [d for d in _audit(client) if d.get("action") == "login_limit_reached"]
        assert len(reached) == 1 and "6/1h" in reached[0]["detail"]
        deadline = time.monotonic() + 15
        while not hook.received and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a second alert, had one been queued, would have followed by now
        assert [r.json()["event"] for r in hook.received] == ["admin_login_limited"]


def test_a_signed_out_cookie_is_refused_even_when_copied(make_client: MakeClient) -> None:
    """Signing out ends the session on the server: a copy of the cookie taken before
    no longer opens the view."""
    client = _admin(make_client)
    client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
    copied = client.cookies[COOKIE]
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/admin").text)
    assert csrf is not None
    out = client.post("/admin/logout", data={"csrf": csrf.group(1)}, follow_redirects=False)
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
    thief = _admin(make_client)
    assert thief.get("/admin", headers={"cookie": f"{COOKIE}={copied}"}).status_code == 401


def test_each_sign_in_issues_a_new_session_and_ends_the_old_one(make_client: MakeClient) -> None:
    """Signing in again rotates the session: the previous value stops working."""
    client = _admin(make_client)
    client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
    first = client.cookies[COOKIE]
    client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
    second = client.cookies[COOKIE]
    assert first != second
    other = _admin(make_client)
    assert other.get("/admin", headers={"cookie": f"{COOKIE}={first}"}).status_code == 401
    assert other.get("/admin", headers={"cookie": f"{COOKIE}={second}"}).status_code == 200


def test_the_expiry_is_inside_the_signed_session(make_client: MakeClient) -> None:
    """A correctly signed session past its expiry, or expiring further out than a session
    may live, is refused; one inside its lifetime works."""
    client = _admin(make_client)
    now = int(time.time())
    for expires, status in (
        (now - 1, 401),
        (now + SESSION_SECONDS + 3600, 401),
        (now + 100, 200),
    ):
        value = _sign(TOKEN, expires, secrets.token_hex(16))
        assert client.get("/admin", headers={"cookie": f"{COOKIE}={value}"}).status_code == status
    foreign = _sign("x" * 43, now + 100, "0" * 32)  # signed with another token's key
    assert client.get("/admin", headers={"cookie": f"{COOKIE}={foreign}"}).status_code == 401


def test_a_store_outage_during_sign_in_is_503_not_a_guess(make_client: MakeClient) -> None:
    """When the store cannot charge the guess, the token is not compared: 503, Retry-After."""
    client = _admin(make_client)
    _call(client, _store(client).close)
    response = client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert set(response.json()) == {"error", "detail", "request_id"}
