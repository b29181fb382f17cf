"""The deny fast path: same answer as the route, nothing written, everything else untouched."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from triggergate.clock import ManualClock
from triggergate.settings import Settings
from triggergate.spent_cache import DEFAULT_LIFETIME
from triggergate.web.app import create_app
from triggergate.web.fastpath import FastDeny
from triggergate.wiring import build_service

PEER = "203.0.113.10"


class Pair:
    """Two apps over one store and one clock: with the fast path, and without it."""

    def __init__(self, tmp_path: Path, stack: ExitStack, **overrides: Any) -> None:
        values: dict[str, Any] = {
            "store": f"sqlite:///{tmp_path}/gate.db",
            "pipeline": "noop://",
            "notify": ["log://"],
            "state_dir": tmp_path / "state",
            "coalesce": False,
            **overrides,
        }
        self.db = tmp_path / "gate.db"
        self.clock = ManualClock()
        settings = Settings(**values)
        self.fast_service = build_service(settings, self.clock)
        fast = create_app(settings, service=self.fast_service)
        slow = create_app(settings, service=build_service(settings, self.clock))
        slow.user_middleware = [m for m in slow.user_middleware if m.cls is not FastDeny]
        self.fast = stack.enter_context(TestClient(fast, client=(PEER, 4000)))
        self.slow = stack.enter_context(TestClient(slow, client=(PEER, 4000)))

    def spend(self, **kwargs: Any) -> None:
        for _ in range(3):
            assert self.slow.post("/trigger", **kwargs).status_code == 202

    def events(self) -> int:
        with sqlite3.connect(self.db) as conn:
            return int(conn.execute("SELECT count(*) FROM quota").fetchone()[0])


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Any]:
    stack = ExitStack()

    def make(**overrides: Any) -> Pair:
        return Pair(tmp_path, stack, **overrides)

    yield make
    stack.close()


def _same(fast: Any, slow: Any) -> None:
    assert fast.status_code == slow.status_code
    fast_body, slow_body = fast.json(), slow.json()
    assert fast_body.pop("request_id") != slow_body.pop("request_id")
    assert fast_body == slow_body
    names = [k for k in fast.headers if k != "x-request-id"]
    assert names == [k for k in slow.headers if k != "x-request-id"]
    for name in names:
        assert fast.headers[name] == slow.headers[name], name
    assert fast.headers["x-request-id"] == fast.json()["request_id"]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (None, {}),
        (b'{"ref": "main"}', {"content-type": "application/json"}),
        (b"", {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}),
    ],
)
def test_fast_denial_is_byte_for_byte_the_routes_denial(pair: Any, body: Any, headers: Any) -> None:
    """A spent client gets the same status, body and headers (in order) from both paths, twice."""
    p = pair(params={"ref": {"default": "main"}})
    p.spend()
    for _ in range(2):  # the first from the store, the second from the spent-key cache
        fast = p.fast.post("/trigger", content=body, headers=headers)
        slow = p.slow.post("/trigger", content=body, headers=headers)
        assert fast.status_code == 429
        _same(fast, slow)
    assert p.fast_service.denials.reasons["quota"] == 2


def test_fast_denial_writes_nothing_and_is_counted(pair: Any) -> None:
    """A flood of denials leaves the events table as it was and is summed in the denial counter."""
    p = pair()
    p.spend()
    before = p.events()
    for _ in range(50):
        assert p.fast.post("/trigger").status_code == 429
    assert p.events() == before
    assert p.fast_service.denials.counts[PEER] == 50


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"x" * 5000, {"content-type": "application/json"}, 413),
        (b"not json", {"content-type": "application/json"}, 400),
        (b"hello", {"content-type": "text/plain"}, 415),
        (b'{"nope": 1}', {"content-type": "application/json"}, 400),
        (None, {"idempotency-key": "bad key with spaces"}, 400),
        (
            b"ref=main",
            {"content-type": "application/x-www-form-urlencoded", "sec-fetch-site": "cross-site"},
            403,
        ),
    ],
)
def test_requests_the_route_answers_otherwise_fall_through(
    pair: Any, body: Any, headers: Any, status: int
) -> None:
    """A spent client's malformed request gets the route's own answer, body replayed intact."""
    p = pair()
    p.spend()
    fast = p.fast.post("/trigger", content=body, headers=headers)
    slow = p.slow.post("/trigger", content=body, headers=headers)
    assert fast.status_code == slow.status_code == status
    assert fast.json()["error"] == slow.json()["error"]


def test_fresh_clients_and_other_routes_pass_through(pair: Any) -> None:
    """An unspent client is accepted by the route; GET routes are untouched."""
    p = pair()
    assert p.fast.post("/trigger").status_code == 202
    assert p.fast.get("/healthz").json() == {"status": "ok"}


def test_a_refund_in_this_process_clears_the_cached_denial(pair: Any) -> None:
    """After the cache learns a key is spent, forgetting it (a local refund) is seen at once."""
    p = pair()
    p.spend()
    assert p.fast.post("/trigger").status_code == 429
    assert len(p.fast_service.spent) == 1
    with sqlite3.connect(p.db) as conn:
        conn.execute("DELETE FROM quota")
    assert p.fast.post("/trigger").status_code == 429  # cached: the reset is not yet seen
    p.fast_service.spent.forget(f"c:{PEER}")
    assert p.fast.post("/trigger").status_code == 202


def test_a_reset_elsewhere_is_seen_within_the_cache_lifetime(pair: Any) -> None:
    """An operator reset from another process frees the client after at most the cache lifetime of denials."""
    p = pair()
    p.spend()
    assert p.fast.post("/trigger").status_code == 429
    with sqlite3.connect(p.db) as conn:
        conn.execute("DELETE FROM quota")
    p.clock.advance(DEFAULT_LIFETIME)
    assert p.fast.post("/trigger").status_code == 202


def test_pause_and_deny_list_are_left_to_the_route(pair: Any) -> None:
    """A deny-listed spent client still gets 403, as the route says."""
    p = pair(deny=["203.0.113.0/24"])
    assert p.fast.post("/trigger").status_code == 403
