"""Who may read /metrics: allowed networks (loopback and private by default) or the admin token."""

from __future__ import annotations

from tests.web.conftest import MakeClient

TOKEN = "Qm3vT8yKc1pZr6WnX0aLd4sEh7uJf2gBiN5oV9tRwYe"


def test_metrics_are_refused_outside_the_allowed_networks(make_client: MakeClient) -> None:
    """A public address gets 403 with the safe body and no metric text."""
    response = make_client(peer="203.0.113.10").get("/metrics")
    assert response.status_code == 403
    body = response.json()
    assert set(body) == {"error", "detail", "request_id"} and body["error"] == "forbidden"
    assert "triggergate_" not in response.text


def test_metrics_are_served_to_loopback_and_private_networks_by_default(make_client: MakeClient) -> None:
    """127.0.0.0/8, ::1, 10/8, 172.16/12, 192.168/16 and fc00::/7 read the metrics."""
    for peer in ("127.0.0.1", "::1", "10.2.3.4", "172.31.0.1", "192.168.1.1", "fd00::1"):
        response = make_client(peer=peer).get("/metrics")
        assert response.status_code == 200 and "triggergate_" in response.text, peer
    assert make_client(peer="172.32.0.1").get("/metrics").status_code == 403


def test_the_admin_token_opens_metrics_from_anywhere(make_client: MakeClient) -> None:
    """With the right token a public address reads them; a wrong one is 403 and charged."""
    client = make_client(peer="203.0.113.10", admin_token=TOKEN, admin_login_limits=["2/1h"])
    assert client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    wrong = [client.get("/metrics", headers={"authorization": "Bearer nope"}).status_code for _ in range(3)]
    assert wrong == [403, 403, 429]


def test_behind_a_trusted_proxy_the_client_address_counts_not_the_proxy(make_client: MakeClient) -> None:
    """A public client forwarded by a private proxy is refused; a private one is served."""
    client = make_client(peer="10.0.0.5", trusted_proxies=["10.0.0.0/8"])
    assert client.get("/metrics", headers={"x-forwarded-for": "198.51.100.7"}).status_code == 403
    assert client.get("/metrics", headers={"x-forwarded-for": "192.168.0.7"}).status_code == 200


def test_metrics_allow_is_configurable_and_may_be_empty(make_client: MakeClient) -> None:
    """An empty list leaves the token as the only way in."""
    assert make_client(peer="127.0.0.1", metrics_allow=[]).get("/metrics").status_code == 403
    listed = make_client(peer="203.0.113.10", metrics_allow=["203.0.113.0/24"])
    assert listed.get("/metrics").status_code == 200
