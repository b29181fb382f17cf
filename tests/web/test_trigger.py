"""POST /trigger through the real app: the curl exchange, every status, headers, limits."""

from __future__ import annotations

import re

import pytest

from tests.web.conftest import MakeClient

SAFE_BODY_KEYS = {"error", "detail", "request_id"}


def test_three_presses_accepted_then_429_with_retry_after(make_client: MakeClient) -> None:
    """The README's exchange: 202 three times with a run id and Location, then 429 and when to retry."""
    client = make_client()
    for remaining in (2, 1, 0):
        response = client.post("/trigger")
        assert response.status_code == 202
        body = response.json()
        assert re.fullmatch(r"[0-9a-f]{32}", body["run_id"])
        assert body["status_url"] == f"/runs/{body['run_id']}"
        assert response.headers["location"] == f"/runs/{body['run_id']}"
        assert response.headers["ratelimit-policy"] == '"3/7d";q=3;w=604800'
        assert response.headers["ratelimit"].startswith(f'"3/7d";r={remaining};t=')
    denied = client.post("/trigger")
    assert denied.status_code == 429
    assert set(denied.json()) == SAFE_BODY_KEYS
    assert denied.json()["error"] == "quota_exhausted"
    assert "try again after" in denied.json()["detail"]
    assert 604790 <= int(denied.headers["retry-after"]) <= 604800
    assert denied.headers["ratelimit"].startswith('"3/7d";r=0;t=')
    assert denied.headers["x-request-id"] == denied.json()["request_id"]


def test_quota_survives_an_app_restart(make_client: MakeClient) -> None:
    """The SQLite store keeps the spent quota across a new app over the same file."""
    first = make_client()
    for _ in range(3):
        assert first.post("/trigger").status_code == 202
    assert make_client().post("/trigger").status_code == 429


def test_clients_are_counted_apart(make_client: MakeClient) -> None:
    """Another peer address has its own quota."""
    a = make_client(peer="198.51.100.1")
    for _ in range(3):
        a.post("/trigger")
    assert make_client(peer="198.51.100.2").post("/trigger").status_code == 202


def test_spoofed_forwarded_header_changes_nothing_without_trusted_proxy(
    make_client: MakeClient,
) -> None:
    """With no trusted proxy, X-Forwarded-For cannot buy a fresh quota."""
    client = make_client()
    for i in range(3):
        client.post("/trigger", headers={"X-Forwarded-For": f"192.0.2.{i}"})
    assert client.post("/trigger", headers={"X-Forwarded-For": "192.0.2.99"}).status_code == 429


def test_trusted_proxy_forwarded_client_is_keyed(make_client: MakeClient) -> None:
    """Behind a trusted proxy, the forwarded client address is the key."""
    client = make_client(peer="10.0.0.5", trusted_proxies=["10.0.0.0/8"])
    for _ in range(3):
        assert client.post("/trigger", headers={"X-Forwarded-For": "192.0.2.7"}).status_code == 202
    assert client.post("/trigger", headers={"X-Forwarded-For": "192.0.2.7"}).status_code == 429
    assert client.post("/trigger", headers={"X-Forwarded-For": "192.0.2.8"}).status_code == 202


def test_body_over_4kib_is_413(make_client: MakeClient) -> None:
    """A body larger than 4 KiB is refused before parsing and costs no quota."""
    client = make_client(params={"branch": {}})
    big = '{"params": {"branch": "' + "a" * 5000 + '"}}'
    response = client.post("/trigger", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"
    assert client.get("/quota").json()["remaining"] == 3


def test_non_json_body_is_415(make_client: MakeClient) -> None:
    """Only JSON bodies are accepted."""
    response = make_client().post("/trigger", content="branch=main", headers={"content-type": "text/plain"})
    assert response.status_code == 415 and set(response.json()) == SAFE_BODY_KEYS


def test_malformed_json_is_400(make_client: MakeClient) -> None:
    """Broken JSON is a 400 with the safe body."""
    response = make_client().post("/trigger", content="{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "bad_json"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"params": {"evil": "x"}}, "unknown_parameter"),
        ({"params": {"branch": "main; rm -rf /"}}, "bad_parameter"),
        ({"params": {"branch": 5}}, "bad_parameter"),
        ({"other": 1}, "bad_body"),
        ([1, 2], "bad_body"),
    ],
)
def test_parameters_outside_the_allow_list_are_400(make_client: MakeClient, body: object, code: str) -> None:
    """Only allow-listed parameters with allowed values pass; nothing is charged otherwise."""
    client = make_client(params={"branch": {"choices": ["main", "dev"]}})
    response = client.post("/trigger", json=body)
    assert response.status_code == 400 and response.json()["error"] == code
    assert client.get("/quota").json()["remaining"] == 3


def test_allowed_parameter_is_accepted(make_client: MakeClient) -> None:
    """An allow-listed value passes."""
    client = make_client(params={"branch": {"choices": ["main", "dev"]}})
    assert client.post("/trigger", json={"params": {"branch": "dev"}}).status_code == 202


def test_wrong_method_is_405_with_safe_body(make_client: MakeClient) -> None:
    """GET /trigger is a 405 in the public error shape."""
    response = make_client().get("/trigger")
    assert response.status_code == 405 and set(response.json()) == SAFE_BODY_KEYS


def test_unknown_path_is_404_with_safe_body(make_client: MakeClient) -> None:
    """Unknown paths answer 404 in the public error shape, with a request id header."""
    response = make_client().get("/nope")
    assert response.status_code == 404 and set(response.json()) == SAFE_BODY_KEYS
    assert response.headers["x-request-id"]
    assert "ratelimit-policy" in response.headers


def test_deny_list_is_403_and_allow_list_is_never_limited(make_client: MakeClient) -> None:
    """Deny-listed clients are refused; allow-listed clients pass beyond the limit."""
    denied = make_client(peer="192.0.2.1", deny=["192.0.2.0/24"]).post("/trigger")
    assert denied.status_code == 403
    allowed = make_client(peer="198.51.100.9", allow=["198.51.100.0/24"])
    assert all(allowed.post("/trigger").status_code == 202 for _ in range(5))


def test_global_budget_is_503_with_retry_after(make_client: MakeClient) -> None:
    """When the global budget is spent, fresh clients get 503 budget_exhausted."""
    make_client(peer="198.51.100.1", budget=["2/1d"]).post("/trigger")
    make_client(peer="198.51.100.2", budget=["2/1d"]).post("/trigger")
    response = make_client(peer="198.51.100.3", budget=["2/1d"]).post("/trigger")
    assert response.status_code == 503 and response.json()["error"] == "budget_exhausted"
    assert int(response.headers["retry-after"]) > 0


def test_idempotency_key_replays_the_first_response(make_client: MakeClient) -> None:
    """The same Idempotency-Key gets the same run and is charged once."""
    client = make_client()
    first = client.post("/trigger", headers={"Idempotency-Key": "abc"})
    again = client.post("/trigger", headers={"Idempotency-Key": "abc"})
    assert first.status_code == again.status_code == 202
    assert first.json()["run_id"] == again.json()["run_id"]
    assert client.get("/quota").json()["remaining"] == 2


def test_bad_idempotency_key_is_400(make_client: MakeClient) -> None:
    """A key with spaces or over 255 characters is refused."""
    response = make_client().post("/trigger", headers={"Idempotency-Key": "a" * 300})
    assert response.status_code == 400 and response.json()["error"] == "bad_idempotency_key"


def test_unparseable_peer_is_400(make_client: MakeClient) -> None:
    """A transport peer that is not an address is a 400, never a 500."""
    response = make_client(peer="not-an-address").post("/trigger")
    assert response.status_code == 400 and response.json()["error"] == "bad_client_address"


def test_ipv6_wider_cap_holds_across_many_64s(make_client: MakeClient) -> None:
    """With a /56 cap of 4/7d, clients in four different /64s of one /56 use it up; a fifth is refused."""
    caps = {"ipv6_wider_caps": {56: ["4/7d"]}}
    results = [
        make_client(peer=f"2001:db8:0:{n:x}::1", **caps).post("/trigger").status_code for n in range(5)
    ]
    assert results == [202, 202, 202, 202, 429]
    other_56 = make_client(peer="2001:db8:0:100::1", **caps).post("/trigger")
    assert other_56.status_code == 202
