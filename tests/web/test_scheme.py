"""The scheme behind TLS termination: the session cookie's name and Secure flag, and HSTS."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.web.conftest import MakeClient
from triggergate.web.admin_auth import COOKIE, SECURE_COOKIE

TOKEN = "Qm3vT8yKc1pZr6WnX0aLd4sEh7uJf2gBiN5oV9tRwYe"
PROXY = "10.0.0.5"  # the peer every proxied case connects from


def _sign_in(client: TestClient, **headers: str) -> str:
    response = client.post("/admin/login", data={"token": TOKEN}, headers=headers, follow_redirects=False)
    assert response.status_code == 303
    return response.headers["set-cookie"]


@pytest.mark.parametrize(
    ("overrides", "headers"),
    [
        pytest.param({}, {"x-forwarded-for": "198.51.100.9", "x-forwarded-proto": "https"}, id="xff"),
        pytest.param(
            {"forwarded_header": "forwarded"}, {"forwarded": "for=198.51.100.9;proto=https"}, id="rfc7239"
        ),
    ],
)
def test_https_at_a_trusted_proxy_gives_a_host_cookie_and_hsts(
    make_client: MakeClient, overrides: dict[str, str], headers: dict[str, str]
) -> None:
    """Plain http from a trusted proxy that says the client came over https: the cookie
    is ``__Host-`` and Secure, and every answer carries HSTS."""
    client = make_client(peer=PROXY, admin_token=TOKEN, trusted_proxies=["10.0.0.0/8"], **overrides)
    cookie = _sign_in(client, **headers)
    assert cookie.startswith(f"{SECURE_COOKIE}=") and "Secure" in cookie and "Path=/;" in cookie
    for response in (client.get("/healthz", headers=headers), client.post("/trigger", headers=headers)):
        assert response.headers["strict-transport-security"] == "max-age=31536000"


def test_a_client_claiming_https_itself_is_not_believed(make_client: MakeClient) -> None:
    """Without a trusted proxy in front, X-Forwarded-Proto and Forwarded change nothing."""
    client = make_client(peer="198.51.100.9", admin_token=TOKEN, trusted_proxies=["10.0.0.0/8"])
    claims = {"x-forwarded-proto": "https", "forwarded": "for=1.2.3.4;proto=https"}
    cookie = _sign_in(client, **claims)
    assert cookie.startswith(f"{COOKIE}=") and "Secure" not in cookie
    assert "strict-transport-security" not in client.get("/healthz", headers=claims).headers


def test_plain_http_through_a_trusted_proxy_is_plain(make_client: MakeClient) -> None:
    """A trusted proxy that says http: no Secure, no HSTS."""
    client = make_client(peer=PROXY, admin_token=TOKEN, trusted_proxies=["10.0.0.0/8"])
    headers = {"x-forwarded-for": "198.51.100.9", "x-forwarded-proto": "http"}
    assert _sign_in(client, **headers).startswith(f"{COOKIE}=")
    assert "strict-transport-security" not in client.get("/healthz", headers=headers).headers


def test_a_direct_https_connection_gets_hsts_on_every_answer_of_the_stack(make_client: MakeClient) -> None:
    """Over https itself, HSTS is on the page, the API, errors and a browser's refusal."""
    client = make_client(limits=["1/1d"])
    client.base_url = client.base_url.copy_with(scheme="https")
    form = {"content-type": "application/x-www-form-urlencoded", "accept": "text/html"}
    responses = [
        client.get("/"),
        client.get("/nope"),
        client.post("/trigger"),
        client.post("/trigger", headers=form),
    ]
    assert [r.status_code for r in responses] == [200, 404, 202, 429]
    assert all(r.headers["strict-transport-security"] == "max-age=31536000" for r in responses)
