"""A Redis written by the layout before packing keeps counting after the upgrade.

``data/redis_store_before_packing.lua`` is the store's script as released before
quota keys became packed strings (a sorted set of reservation ids per key, a ledger
hash kept after settling, a sweep index). :class:`BeforePacking` calls it exactly as
that release's ``RedisStore`` did, so the data the new store opens is data the old
one wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.servers.redis import RedisServer
from tests.stores import remote_cases as cases
from triggergate.clock import ManualClock
from triggergate.quota import Check, Limit
from triggergate.stores.base import Batch, Record

pytestmark = pytest.mark.redis

OLD_SCRIPT = (Path(__file__).parent / "data" / "redis_store_before_packing.lua").read_text()
WEEK = 7 * cases.DAY
CLIENT = Check("c:203.0.113.9", (Limit(3, WEEK), Limit(1, 600)))
OTHER = Check("c:203.0.113.10", (Limit(3, WEEK),))


class BeforePacking:
    """The pre-packing store's calls (its ``_call``, ``reserve`` and ``apply``), with an injected clock."""

    def __init__(self, client: redis.Redis, clock: ManualClock, prefix: str = "tg:") -> None:
        self.script = client.register_script(OLD_SCRIPT)
        self.clock = clock
        self.prefix = prefix

    def call(self, op: str, args: dict[str, Any]) -> Any:
        return self.script(args=[op, self.prefix, repr(self.clock()), json.dumps(args)])

    def reserve(self, rid: str, checks: list[Check], ledger: dict[str, Any]) -> bool:
        args = {
            "rid": rid,
            "checks": [
                {"key": c.key, "horizon": c.horizon, "limits": [[x.count, x.window] for x in c.limits]}
                for c in checks
            ],
            "ledger": json.dumps(ledger, separators=(",", ":")),
            "keys": json.dumps([c.key for c in checks]),
        }
        return bool(self.call("reserve", args)[0])

    def apply(self, settle: str | None = None, release: str | None = None) -> None:
        args: dict[str, Any] = {"records": [], "outbox": []}
        args.update({k: v for k, v in (("settle", settle), ("release", release)) if v})
        self.call("apply", args)


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    redis_server.flush()
    return redis_server


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def written_before(server: RedisServer, clock: ManualClock) -> None:
    """The old store's history: CLIENT spent (one reservation still pending), OTHER used once."""
    with server.client() as sync:
        old = BeforePacking(sync, clock)
        for rid in ("old-1", "old-2", "old-3"):
            assert old.reserve(rid, [CLIENT], {"client_key": "203.0.113.9"})
            clock.advance(3600)
        assert not old.reserve("old-4", [CLIENT], {})
        old.apply(settle="old-1")
        old.apply(settle="old-3")  # old-2 stays pending, as after a crash
        assert old.reserve("other-1", [OTHER], {})
        old.apply(settle="other-1")
        assert sync.type("tg:q:c:203.0.113.9") == "zset"
    clock.advance(60)


async def test_keys_of_the_old_layout_still_deny_and_never_over_admit(
    server: RedisServer, clock: ManualClock
) -> None:
    """A client spent under the old layout is denied by peek and reserve after the upgrade."""
    written_before(server, clock)
    async with cases.opened(server.url, clock=clock, server_time=False) as store:
        peek = await store.peek([CLIENT])
        assert not peek.allowed and peek.verdicts[0].used == 3
        assert not (await store.reserve("new-1", [CLIENT], {})).allowed
        with server.client() as sync:
            assert sync.type("tg:q:c:203.0.113.9") == "zset"  # a denial converts nothing: it writes nothing


async def test_the_old_pending_reservation_is_reconciled_and_refunded_exactly_once(
    server: RedisServer, clock: ManualClock
) -> None:
    """pending() lists the old store's unsettled reservation; refunding it frees exactly one slot."""
    written_before(server, clock)
    async with cases.opened(server.url, clock=clock, server_time=False) as store:
        pending = await store.pending(clock())
        assert [(p["rid"], p["client_key"], p["keys"]) for p in pending] == [
            ("old-2", "203.0.113.9", [CLIENT.key])
        ]
        await store.apply(Batch(release="old-2"))
        await store.apply(Batch(release="old-2"))
        assert await store.pending(clock()) == []
        assert (await store.reserve("new-1", [CLIENT], {})).allowed
        clock.advance(601)
        assert not (await store.reserve("new-2", [CLIENT], {})).allowed


async def test_a_reservation_rewrites_an_old_key_packed_with_every_event(
    server: RedisServer, clock: ManualClock
) -> None:
    """OTHER's old event still counts after its key is rewritten: 2 more pass, then denied."""
    written_before(server, clock)
    async with cases.opened(server.url, clock=clock, server_time=False) as store:
        assert (await store.reserve("new-1", [OTHER], {})).allowed
        with server.client() as sync:
            assert sync.type("tg:q:c:203.0.113.10") == "string"
            assert "q:c:203.0.113.10" not in sync.zrange("tg:exp", 0, -1)
        assert (await store.reserve("new-2", [OTHER], {})).allowed
        denied = await store.reserve("new-3", [OTHER], {})
        assert not denied.allowed and denied.verdicts[0].used == 3


async def test_a_refund_after_conversion_removes_the_old_pending_event(
    server: RedisServer, clock: ManualClock
) -> None:
    """An old pending reservation refunded after its key was rewritten packed frees its slot."""
    written_before(server, clock)
    with server.client() as sync:
        old = BeforePacking(sync, clock)
        assert old.reserve("other-2", [OTHER], {})  # pending, in the old layout
    async with cases.opened(server.url, clock=clock, server_time=False) as store:
        assert (await store.reserve("new-1", [OTHER], {})).allowed  # rewrites OTHER packed
        assert not (await store.reserve("new-2", [OTHER], {})).allowed
        await store.apply(Batch(release="other-2"))
        assert (await store.peek([OTHER])).verdicts[0].used == 2
        assert (await store.reserve("new-3", [OTHER], {})).allowed


async def test_reset_sweep_and_expiry_cover_old_keys(server: RedisServer, clock: ManualClock) -> None:
    """reset counts an old key's events; the sweep drops old keys past their window; every key expires."""
    written_before(server, clock)
    async with cases.opened(server.url, clock=clock, server_time=False) as store:
        assert await store.reset(CLIENT.key) == 3
        assert (await store.reserve("new-1", [CLIENT], {})).allowed
        await store.apply(Batch(settle="new-1", records=[Record("run", "x", {"at": clock()}, clock() + 60)]))
        with server.client() as sync:
            keys = list(sync.scan_iter(count=1000))
            assert {k: sync.ttl(k) for k in keys if sync.ttl(k) <= 0} == {}
        clock.advance(WEEK + 3600)
        assert await store.sweep() >= 2  # OTHER's old sorted set and CLIENT's packed key
        with server.client() as sync:
            assert not sync.exists("tg:q:c:203.0.113.10", "tg:q:c:203.0.113.9")


async def test_an_older_replica_fails_closed_on_a_key_the_new_store_rewrote(
    server: RedisServer, clock: ManualClock
) -> None:
    """During a rolling upgrade the old script refuses (an error, so a 503) a packed key, never admits."""
    written_before(server, clock)
    async with cases.opened(server.url, clock=clock, server_time=False) as store:
        assert (await store.reserve("new-1", [OTHER], {})).allowed
    with server.client() as sync:
        old = BeforePacking(sync, clock)
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            old.reserve("old-5", [OTHER], {})
        assert not sync.exists("tg:l:old-5")
