"""The operator view without a browser: who gets in, CSRF, and the audit of every action."""

from __future__ import annotations

import functools
import hmac
import re
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.servers.app import free_port
from tests.web.conftest import MakeClient
from triggergate.web.admin_auth import COOKIE, SECURE_COOKIE

TOKEN = "fkxga2jBsSXp2L9DwRDFFTCRf7EaYjq9paE5p2nZSaQ"
BEARER = {"authorization": f"Bearer {TOKEN}"}


def _admin(make_client: MakeClient, **overrides: Any) -> TestClient:
    return make_client(admin_token=TOKEN, **overrides)


def _login(client: TestClient) -> str:
    """Sign in through the form; return the CSRF field the dashboard hands out."""
    response = client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "../admin"
    page = client.get("/admin").text
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None
    return found.group(1)


def _audit(client: TestClient) -> list[dict[str, Any]]:
    store = client.app.state.service.store  # type: ignore[attr-defined]
    query = functools.partial(store.query, "audit", since=0, until=time.time() + 10, limit=1000)
    docs: list[dict[str, Any]] = client.portal.call(query)  # type: ignore[union-attr]
    return docs


def _kill_switch(client: TestClient) -> Any:
    store = client.app.state.service.store  # type: ignore[attr-defined]
    return client.portal.call(store.get, "flag", "kill_switch")  # type: ignore[union-attr]


def test_admin_is_404_when_no_token_is_configured(make_client: MakeClient) -> None:
    """Without an admin token the operator view does not exist, even with a header."""
    client = make_client()
    assert client.get("/admin", headers=BEARER).status_code == 404
    assert client.post("/admin/kill-switch", data={"state": "on"}).status_code == 404


def test_admin_without_credentials_is_401_with_a_sign_in_form(make_client: MakeClient) -> None:
    """No token, no view: 401, the sign-in form, never cached, never framed."""
    response = _admin(make_client).get("/admin")
    assert response.status_code == 401
    assert 'name="token" type="password"' in response.text
    assert "Operator view" not in response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_wrong_token_is_401_and_compared_in_constant_time(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong bearer or login token is refused, and every check goes through
    hmac.compare_digest; a refused login writes no audit record."""
    client = _admin(make_client)
    seen: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    before = len(_audit(client))
    assert client.get("/admin", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert (b"wrong", TOKEN.encode()) in seen
    refused = client.post("/admin/login", data={"token": TOKEN[:-1]}, follow_redirects=False)
    assert refused.status_code == 401 and COOKIE not in refused.cookies
    assert (TOKEN[:-1].encode(), TOKEN.encode()) in seen
    assert len(_audit(client)) == before
    assert client.get("/admin", headers=BEARER).status_code == 200


def test_login_cookie_is_httponly_strict_and_never_the_token(make_client: MakeClient) -> None:
    """Over plain http (a local demo) the session cookie is the unprefixed one: HttpOnly,
    SameSite=Strict, Path=/, not Secure, and it holds a derived session value, not the token."""
    response = _admin(make_client).post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/;" in cookie
    assert "Secure" not in cookie and "Domain" not in cookie
    value = response.cookies[COOKIE]
    assert TOKEN not in value and TOKEN.encode().hex() not in value


def test_login_cookie_over_https_is_a_secure_host_cookie(make_client: MakeClient) -> None:
    """Over https the session cookie is ``__Host-``: Secure, Path=/, no Domain."""
    client = _admin(make_client)
    client.base_url = client.base_url.copy_with(scheme="https")
    response = client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SECURE_COOKIE}=")
    assert "Secure" in cookie and "Path=/;" in cookie and "Domain" not in cookie
    assert client.get("/admin").status_code == 200


def test_a_cookie_set_over_http_is_not_honoured_over_https(make_client: MakeClient) -> None:
    """The plain-http cookie name never signs anyone in over https (and the reverse)."""
    client = _admin(make_client)
    _login(client)
    value = client.cookies[COOKIE]
    secure = _admin(make_client)
    secure.base_url = secure.base_url.copy_with(scheme="https")
    assert secure.get("/admin", headers={"cookie": f"{COOKIE}={value}"}).status_code == 401
    plain = _admin(make_client)
    assert plain.get("/admin", headers={"cookie": f"{SECURE_COOKIE}={value}"}).status_code == 401
    assert plain.get("/admin", headers={"cookie": f"{COOKIE}={value}"}).status_code == 200


def test_forged_or_tampered_session_cookie_is_refused(make_client: MakeClient) -> None:
    """A cookie not signed with the token's key is as good as none."""
    client = _admin(make_client)
    client.cookies.set(COOKIE, f"{int(time.time())}.abcd.{'0' * 64}", path="/admin")
    assert client.get("/admin").status_code == 401
    client.cookies.clear()
    odd = f"{COOKIE}=\u00b2\u00b3.ab.\u00e9\u00e9".encode("latin-1")
    assert client.get("/admin", headers={"cookie": odd}).status_code == 401  # not a 500
    other = _admin(make_client)
    _login(other)
    issued, nonce, signature = other.cookies[COOKIE].split(".")
    client.cookies.set(COOKIE, f"{int(issued) + 1}.{nonce}.{signature}", path="/admin")
    assert client.get("/admin").status_code == 401


@pytest.mark.parametrize("csrf", [None, "", "0" * 64])
def test_state_change_without_a_valid_csrf_field_is_403_and_changes_nothing(
    make_client: MakeClient, csrf: str | None
) -> None:
    """A signed-in cookie alone cannot pause triggers: missing or wrong CSRF is 403."""
    client = _admin(make_client)
    _login(client)
    data = {"state": "on", "reason": "forged"}
    if csrf is not None:
        data["csrf"] = csrf
    response = client.post("/admin/kill-switch", data=data, follow_redirects=False)
    assert response.status_code == 403
    assert _kill_switch(client) is None
    assert not [d for d in _audit(client) if d.get("action") == "kill_switch_on"]
    assert client.post("/trigger").status_code == 202


def test_csrf_of_another_session_is_refused(make_client: MakeClient) -> None:
    """The CSRF field is bound to its own session."""
    client, other = _admin(make_client), _admin(make_client)
    _login(client)
    foreign = _login(other)
    response = client.post(
        "/admin/kill-switch", data={"state": "on", "csrf": foreign}, follow_redirects=False
    )
    assert response.status_code == 403 and _kill_switch(client) is None


def test_actions_without_any_credentials_are_401(make_client: MakeClient) -> None:
    """No cookie and no header: every state-changing route is refused."""
    client = _admin(make_client)
    for path in ("/admin/kill-switch", "/admin/retry", "/admin/logout"):
        assert client.post(path, data={"state": "on"}).status_code == 401
    assert _kill_switch(client) is None


def test_kill_switch_with_csrf_pauses_with_the_reason_and_resumes(make_client: MakeClient) -> None:
    """The form toggles the same record as the CLI; the public sees the reason at once."""
    client = _admin(make_client)
    csrf = _login(client)
    on = client.post(
        "/admin/kill-switch",
        data={"state": "on", "reason": "Release freeze", "retry_after": "120", "csrf": csrf},
        follow_redirects=False,
    )
    assert on.status_code == 303
    flag = _kill_switch(client)
    assert flag["reason"] == "Release freeze" and flag["retry_after"] == 120
    paused = client.post("/trigger")
    assert paused.status_code == 503 and paused.json()["detail"] == "Release freeze"
    assert paused.headers["retry-after"] == "120"
    assert "Release freeze" in client.get("/admin").text
    off = client.post("/admin/kill-switch", data={"state": "off", "csrf": csrf}, follow_redirects=False)
    assert off.status_code == 303 and _kill_switch(client) is None
    assert client.post("/trigger").status_code == 202


def test_bearer_header_needs_no_csrf_field(make_client: MakeClient) -> None:
    """Scripts use the Authorization header, which a cross-site form cannot send."""
    client = _admin(make_client)
    response = client.post("/admin/kill-switch", data={"state": "on"}, headers=BEARER, follow_redirects=False)
    assert response.status_code == 303 and _kill_switch(client) is not None


def _wait_for_dead_letter(client: TestClient) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = re.search(r'name="item" value="([0-9a-f]+)"', client.get("/admin", headers=BEARER).text)
        if found:
            return found.group(1)
        time.sleep(0.2)
    raise AssertionError("no dead letter appeared")


def test_dead_letter_retry_sends_it_back_to_the_outbox(make_client: MakeClient) -> None:
    """An alert that could not be delivered shows as a dead letter; Retry revives it."""
    notify = [f"webhook+http://127.0.0.1:{free_port()}/hook"]
    client = _admin(make_client, notify=notify, outbox_attempts=1)
    csrf = _login(client)
    assert client.post("/trigger").status_code == 202
    item = _wait_for_dead_letter(client)
    response = client.post("/admin/retry", data={"item": item, "csrf": csrf}, follow_redirects=False)
    assert response.status_code == 303
    retry = [d for d in _audit(client) if d.get("action") == "dlq_retry"]
    assert retry and retry[0]["item"] == item and retry[0]["count"] == 1


def test_every_admin_action_is_audited(make_client: MakeClient) -> None:
    """Sign-in, both kill switch moves, a retry and sign-out each leave an admin record."""
    client = _admin(make_client)
    csrf = _login(client)
    for data in ({"state": "on", "reason": "r"}, {"state": "off"}):
        client.post("/admin/kill-switch", data={**data, "csrf": csrf}, follow_redirects=False)
    client.post("/admin/retry", data={"csrf": csrf}, follow_redirects=False)
    client.post("/admin/logout", data={"csrf": csrf}, follow_redirects=False)
    docs = [d for d in _audit(client) if d["event"] == "admin"]
    assert sorted(d["action"] for d in docs) == sorted(
        ["login", "kill_switch_on", "kill_switch_off", "dlq_retry", "logout"]
    )
    assert all(d["via"] == "web" and d["at"] > 0 for d in docs)
    assert client.get("/admin").status_code == 401  # signed out


def test_admin_urls_are_relative_so_a_path_prefix_works(make_client: MakeClient) -> None:
    """The sign-in page, the refusal pages below /admin/ and the dashboard use relative
    URLs (``../`` below /admin/), so the view works behind an API Gateway stage."""
    client = _admin(make_client)
    refused = client.post("/admin/login", data={"token": "nope"})
    assert 'action="../admin/login"' in refused.text and 'href="../static/page.css"' in refused.text
    _login(client)
    pages = [client.get("/admin").text, client.get("/admin", headers=BEARER).text, refused.text]
    assert 'action="admin/kill-switch"' in pages[0]
    for html in pages:
        assert not re.search(r'(src|href|action)="/', html)


def test_dashboard_lists_triggers_with_filters(make_client: MakeClient) -> None:
    """Accepted triggers are listed; the outcome and client filters narrow the list."""
    client = _admin(make_client)
    run_id = client.post("/trigger").json()["run_id"]
    page = client.get("/admin", headers=BEARER).text
    assert run_id in page and "accepted" in page
    assert run_id not in client.get("/admin?outcome=refunded", headers=BEARER).text
    assert run_id not in client.get("/admin?client=198.51.100.99", headers=BEARER).text
    assert run_id in client.get("/admin?client=203.0.113.10&since=1h", headers=BEARER).text
    odd = client.get("/admin?since=yesterday-ish", headers=BEARER).text
    assert "Use a duration" in odd and run_id in odd


def test_dashboard_shows_top_denied_keys_and_budget(make_client: MakeClient) -> None:
    """Denial summaries feed the top denied keys; the budget shows used and left."""
    client = _admin(make_client, budget=["10/1d"])
    for _ in range(5):
        client.post("/trigger")
    client.portal.call(client.app.state.service.maintenance.flush_denials, True)  # type: ignore[attr-defined,union-attr]
    page = client.get("/admin", headers=BEARER).text
    top = page[page.index('id="top-denied"') :]
    assert re.search(r"<td>203\.0\.113\.10</td><td>2</td>", top)
    budget = page[page.index('id="budget"') :]
    assert re.search(r"<td>10 per day</td><td>3</td><td>7</td>", budget)
