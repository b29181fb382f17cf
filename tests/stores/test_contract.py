"""The store contract: every engine behaves the same way (parametrized in conftest)."""

from __future__ import annotations

import asyncio

from triggergate.clock import ManualClock
from triggergate.quota import Check, Limit
from triggergate.stores.base import Batch, OutboxItem, Record, Store

DAY = 86400
CLIENT = Check("c:198.51.100.7", (Limit(3, 7 * DAY),))


async def test_admits_exactly_the_limit_then_denies(store: Store) -> None:
    """Three reservations pass for 3/7d; the fourth is denied with a positive retry time."""
    results = [await store.reserve(f"r{i}", [CLIENT], {}) for i in range(4)]
    assert [d.allowed for d in results] == [True, True, True, False]
    assert results[3].retry_after > 0


async def test_denied_reservation_writes_nothing(store: Store, clock: ManualClock) -> None:
    """A denial leaves no ledger entry and changes no later decision."""
    for i in range(3):
        assert (await store.reserve(f"r{i}", [CLIENT], {})).allowed
    before = await store.pending(clock() + 1)
    denied = await store.reserve("denied", [CLIENT], {"x": 1})
    assert not denied.allowed
    assert await store.pending(clock() + 1) == before
    assert all(p["rid"] != "denied" for p in before)


async def test_window_rolls_exactly(store: Store, clock: ManualClock) -> None:
    """A slot frees exactly when its event leaves the window, not earlier."""
    for i in range(3):
        assert (await store.reserve(f"r{i}", [CLIENT], {})).allowed
        clock.advance(DAY)
    denied = await store.reserve("x", [CLIENT], {})
    assert not denied.allowed
    assert abs(denied.retry_after - 4 * DAY) < 1e-3
    clock.advance(4 * DAY - 1)
    assert not (await store.reserve("y", [CLIENT], {})).allowed
    clock.advance(1)
    assert (await store.reserve("z", [CLIENT], {})).allowed


async def test_several_checks_must_all_pass(store: Store) -> None:
    """A global budget denies even when the client has slots left, and writes nothing."""
    budget = Check("g", (Limit(2, DAY),))
    assert (await store.reserve("a", [Check("c:a", (Limit(3, DAY),)), budget], {})).allowed
    assert (await store.reserve("b", [Check("c:b", (Limit(3, DAY),)), budget], {})).allowed
    third = await store.reserve("c", [Check("c:c", (Limit(3, DAY),)), budget], {})
    assert not third.allowed
    assert third.blocking is not None and third.blocking.key == "g"
    peek = await store.peek([Check("c:c", (Limit(3, DAY),))])
    assert peek.verdicts[0].used == 0


async def test_peek_reports_use_without_writing(store: Store) -> None:
    """peek counts used slots and never consumes one."""
    await store.reserve("a", [CLIENT], {})
    for _ in range(5):
        assert (await store.peek([CLIENT])).verdicts[0].remaining == 2


async def test_release_returns_the_slot_once(store: Store, clock: ManualClock) -> None:
    """Refunding frees the slot; refunding again or settling afterwards changes nothing."""
    for i in range(3):
        await store.reserve(f"r{i}", [CLIENT], {})
    await store.apply(Batch(release="r1"))
    await store.apply(Batch(release="r1"))
    await store.apply(Batch(settle="r1"))
    assert (await store.reserve("r3", [CLIENT], {})).allowed
    assert not (await store.reserve("r4", [CLIENT], {})).allowed


async def test_settled_reservation_is_no_longer_pending(store: Store, clock: ManualClock) -> None:
    """pending lists reserved-but-unsettled entries with their ledger data; settle and release clear them."""
    await store.reserve("a", [CLIENT], {"client": "198.51.100.7"})
    await store.reserve("b", [CLIENT], {})
    await store.reserve("c", [CLIENT], {})
    clock.advance(10)
    pending = {p["rid"]: p for p in await store.pending(clock())}
    assert set(pending) == {"a", "b", "c"}
    assert pending["a"]["client"] == "198.51.100.7"
    await store.apply(Batch(settle="a"))
    await store.apply(Batch(release="b"))
    assert [p["rid"] for p in await store.pending(clock())] == ["c"]
    assert await store.pending(clock() - 20) == []
    assert (await store.reserve("d", [CLIENT], {})).allowed


async def test_reset_forgets_a_key(store: Store) -> None:
    """An operator reset frees every slot of that key and no other."""
    other = Check("c:other", (Limit(1, DAY),))
    for i in range(3):
        await store.reserve(f"r{i}", [CLIENT], {})
    await store.reserve("o", [other], {})
    assert await store.reset(CLIENT.key) == 3
    assert (await store.reserve("again", [CLIENT], {})).allowed
    assert not (await store.reserve("o2", [other], {})).allowed


async def test_concurrent_reservations_never_over_admit(store: Store) -> None:
    """Fifty racing reservations for one key admit exactly the limit."""
    results = await asyncio.gather(*(store.reserve(f"r{i}", [CLIENT], {}) for i in range(50)))
    assert sum(d.allowed for d in results) == 3


async def test_records_put_new_get_query_and_expire(store: Store, clock: ManualClock) -> None:
    """put_new writes once; query orders by time; expired records vanish."""
    now = clock()
    assert await store.put_new(Record("idem", "k", {"at": now, "v": 1}, expires=now + 60))
    assert not await store.put_new(Record("idem", "k", {"at": now, "v": 2}, expires=now + 60))
    assert (await store.get("idem", "k")) == {"at": now, "v": 1}
    await store.apply(Batch(records=[Record("audit", f"a{i}", {"at": now + i, "n": i}) for i in range(5)]))
    found = await store.query("audit", since=now + 1, until=now + 4, limit=10)
    assert [d["n"] for d in found] == [3, 2, 1]
    assert len(await store.query("audit", since=now, until=now + 10, limit=2)) == 2
    clock.advance(61)
    assert await store.get("idem", "k") is None
    assert await store.put_new(Record("idem", "k", {"at": clock(), "v": 3}, expires=clock() + 60))
    await store.delete("idem", "k")
    assert await store.get("idem", "k") is None


async def test_outbox_claim_retry_bury_revive(store: Store, clock: ManualClock) -> None:
    """Claimed items hide for the lease; buried items move to dead letters and can be revived."""
    now = clock()
    await store.apply(Batch(outbox=[OutboxItem(f"o{i}", "log://", {"n": i}, due=now) for i in range(3)]))
    first = await store.claim(now, lease=30, limit=2)
    assert len(first) == 2
    second = await store.claim(now, lease=30, limit=10)
    assert len(second) == 1
    assert await store.claim(now, lease=30, limit=10) == []
    await store.ack(first[0].id)
    retry = first[1]
    retry.attempts, retry.due, retry.error = 1, now + 5, "timeout"
    await store.retry_later(retry)
    await store.bury(second[0])
    assert [i.id for i in await store.dead(10)] == [second[0].id]
    clock.advance(6)
    again = await store.claim(clock(), lease=30, limit=10)
    assert [(i.id, i.attempts, i.error) for i in again] == [(retry.id, 1, "timeout")]
    assert await store.revive(None) == 1
    assert await store.dead(10) == []
    revived = await store.claim(clock() + 100, lease=30, limit=10)
    assert second[0].id in {i.id for i in revived}


async def test_concurrent_claims_never_share_an_item(store: Store, clock: ManualClock) -> None:
    """Racing claimers partition the due items."""
    now = clock()
    await store.apply(Batch(outbox=[OutboxItem(f"o{i}", "log://", {}, due=now) for i in range(20)]))
    batches = await asyncio.gather(*(store.claim(now, lease=60, limit=5) for _ in range(6)))
    ids = [i.id for b in batches for i in b]
    assert len(ids) == len(set(ids)) == 20


async def test_sweep_drops_expired_events_and_records(store: Store, clock: ManualClock) -> None:
    """After the window and expiry pass, sweep removes old data and decisions stay right."""
    await store.reserve("a", [CLIENT], {})
    await store.apply(Batch(settle="a", records=[Record("run", "x", {"at": clock()}, expires=clock() + 10)]))
    clock.advance(8 * DAY)
    assert await store.sweep() >= 2
    assert (await store.peek([CLIENT])).verdicts[0].used == 0
    assert await store.get("run", "x") is None


async def test_ping_answers(store: Store) -> None:
    """A healthy store answers ping."""
    await store.ping()
