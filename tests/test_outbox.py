"""The outbox: delivery off the request path, retries with backoff, dead letters, races.

Real notifiers against real receivers on 127.0.0.1; the store is MemoryStore
and time is a ManualClock, so retries are driven by advancing the clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Iterator

import pytest

from tests.servers.webhook import WebhookServer, webhook_server
from triggergate.clock import ManualClock
from triggergate.errors import StoreError
from triggergate.notifiers.base import Alert, Notifier
from triggergate.notifiers.log import LogNotifier
from triggergate.notifiers.webhook import WebhookNotifier
from triggergate.outbox import Outbox
from triggergate.registry import Context, notifier_from_url
from triggergate.stores.base import Batch, OutboxItem
from triggergate.stores.memory import MemoryStore

SECRET = "whsec-outbox-test"


def alert(n: int = 0) -> Alert:
    return Alert(
        event="accepted",
        subject=f"Pipeline demo triggered ({n})",
        body=f"Run r-{n} started",
        attributes={"run_id": f"r-{n}"},
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(clock: ManualClock) -> MemoryStore:
    return MemoryStore(clock=clock)


@pytest.fixture
def receiver() -> Iterator[WebhookServer]:
    with webhook_server(secret=SECRET) as server:
        yield server


def hook(server: WebhookServer, path: str, clock: ManualClock) -> Notifier:
    ctx = Context(clock=clock, environ={"TRIGGERGATE_WEBHOOK_SECRET": SECRET})
    return notifier_from_url(f"webhook+{server.url}{path}", ctx)


async def enqueue(store: MemoryStore, outbox: Outbox, *alerts: Alert) -> list[OutboxItem]:
    items = [item for a in alerts for item in outbox.items_for(a)]
    await store.apply(Batch(outbox=items))
    return items


async def remaining(store: MemoryStore, clock: ManualClock) -> list[OutboxItem]:
    """Items still in the outbox, whatever their due time (claims far in the future)."""
    return await store.claim(clock() + 10**9, lease=0, limit=1000)


async def test_items_for_makes_one_due_item_per_notifier(
    store: MemoryStore, clock: ManualClock, receiver: WebhookServer
) -> None:
    """One item per notifier, targeted at its ``target``, carrying the alert, due now."""
    notifiers = [LogNotifier(), hook(receiver, "/a", clock)]
    outbox = Outbox(store, notifiers, clock=clock)
    items = outbox.items_for(alert(1))
    assert [i.target for i in items] == ["log://", notifiers[1].target]
    assert all(i.payload == alert(1).to_doc() and i.due == clock() for i in items)
    assert len({i.id for i in items}) == 2
    assert all(len(i.id) == 32 for i in items)
    assert await remaining(store, clock) == []  # items_for only builds; the service stores


async def test_due_items_are_delivered_and_acked(
    store: MemoryStore,
    clock: ManualClock,
    receiver: WebhookServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """deliver_due sends every due item once, returns the count, and leaves nothing behind."""
    outbox = Outbox(store, [LogNotifier(), hook(receiver, "/a", clock)], clock=clock)
    await enqueue(store, outbox, alert(1), alert(2))
    with caplog.at_level(logging.INFO, logger="triggergate.alerts"):
        assert await outbox.deliver_due() == 4
    assert sorted(r.json()["attributes"]["run_id"] for r in receiver.received) == ["r-1", "r-2"]
    assert all(r.signature_ok for r in receiver.received)
    assert len([r for r in caplog.records if r.name == "triggergate.alerts"]) == 2
    assert await remaining(store, clock) == []
    assert await store.dead(10) == []
    assert await outbox.deliver_due() == 0


async def test_failed_delivery_is_retried_with_capped_backoff(
    store: MemoryStore,
    clock: ManualClock,
    receiver: WebhookServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two 500s then success: each failure waits exactly its jittered, capped delay."""
    receiver.fail_times = 2
    twin = random.Random(11)  # replays the outbox's jitter draws
    outbox = Outbox(
        store,
        [hook(receiver, "/a", clock)],
        clock=clock,
        base_delay=2.0,
        max_delay=3.0,
        rng=random.Random(11),
    )
    await enqueue(store, outbox, alert(1))
    with caplog.at_level(logging.WARNING, logger="triggergate.outbox"):
        for cap in (2.0, 3.0):  # 1st failure: up to base_delay; 2nd: 4.0 capped at max_delay
            assert await outbox.deliver_due() == 0
            delay = twin.uniform(0, cap)
            assert 0.05 < delay <= cap  # the seed gives delays this test can bracket
            assert await store.claim(clock() + delay - 0.01, lease=0, limit=10) == []
            clock.advance(delay)
        assert await outbox.deliver_due() == 1
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "triggergate.outbox"]
    assert [(d["attempts"], d["error"].endswith("HTTP 500")) for d in logged] == [
        (1, True),
        (2, True),
    ]
    assert len(receiver.rejected) == 2
    assert len(receiver.received) == 1
    assert await remaining(store, clock) == []


def test_backoff_is_full_jitter_doubling_up_to_the_cap(store: MemoryStore, clock: ManualClock) -> None:
    """Delays lie in [0, min(max, base * 2**(n-1))] and spread over that range."""
    outbox = Outbox(store, [], clock=clock, base_delay=2.0, max_delay=300.0, rng=random.Random(7))
    for attempts, cap in [(1, 2.0), (2, 4.0), (3, 8.0), (8, 256.0), (9, 300.0), (30, 300.0)]:
        delays = [outbox.backoff(attempts) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > 0.8 * cap
        assert min(delays) < 0.2 * cap


async def test_item_is_dead_lettered_after_max_attempts(
    store: MemoryStore, clock: ManualClock, receiver: WebhookServer
) -> None:
    """After max_attempts failures the item is buried and the dead-letter notifier is told."""
    receiver.always_fail_paths.add("/down")
    outbox = Outbox(
        store,
        [hook(receiver, "/down", clock)],
        clock=clock,
        max_attempts=3,
        max_delay=5.0,
        dead_letter=hook(receiver, "/dlq", clock),
    )
    await enqueue(store, outbox, alert(7))
    for _ in range(3):
        assert await outbox.deliver_due() == 0
        clock.advance(5.0)
    assert await remaining(store, clock) == []
    [dead] = await store.dead(10)
    assert dead.attempts == 3
    assert "HTTP 500" in dead.error
    assert len(receiver.rejected) == 3
    [letter] = [r.json() for r in receiver.received if r.path == "/dlq"]
    assert letter["event"] == "dead_letter"
    assert letter["attributes"]["original_event"] == "accepted"
    assert letter["attributes"]["run_id"] == "r-7"
    assert "after 3 attempt(s)" in letter["body"]
    assert await outbox.deliver_due() == 0  # buried means never retried


async def test_dead_letter_failure_is_logged_not_raised(
    store: MemoryStore,
    clock: ManualClock,
    receiver: WebhookServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dead-letter notifier that is down makes deliver_due log, not raise; the item is buried."""
    receiver.always_fail_paths.update({"/down", "/dlq"})
    outbox = Outbox(
        store,
        [hook(receiver, "/down", clock)],
        clock=clock,
        max_attempts=1,
        dead_letter=hook(receiver, "/dlq", clock),
    )
    await enqueue(store, outbox, alert(1))
    with caplog.at_level(logging.WARNING, logger="triggergate.outbox"):
        assert await outbox.deliver_due() == 0
    assert len(await store.dead(10)) == 1
    events = [json.loads(r.getMessage())["msg"] for r in caplog.records if r.name == "triggergate.outbox"]
    assert events == ["notify_failed", "dead_letter_failed"]


async def test_unknown_target_is_buried(store: MemoryStore, clock: ManualClock) -> None:
    """An item whose notifier is no longer configured goes straight to the dead letters."""
    outbox = Outbox(store, [LogNotifier()], clock=clock)
    stray = OutboxItem(id="stray", target="smtp://gone:25", payload=alert(1).to_doc(), due=clock())
    await store.apply(Batch(outbox=[stray]))
    assert await outbox.deliver_due() == 0
    [dead] = await store.dead(10)
    assert dead.id == "stray"
    assert dead.error == "unknown target"


async def test_one_failing_or_slow_notifier_does_not_hold_back_the_others(
    store: MemoryStore, clock: ManualClock, receiver: WebhookServer
) -> None:
    """With a 500-ing and a hanging receiver configured, the healthy one gets every alert."""
    receiver.always_fail_paths.add("/down")
    with webhook_server() as slow:
        slow.delay = 1.0
        hanging = WebhookNotifier(slow.url + "/slow", timeout=0.3)
        healthy = hook(receiver, "/up", clock)
        outbox = Outbox(store, [hook(receiver, "/down", clock), hanging, healthy], clock=clock)
        await enqueue(store, outbox, *(alert(n) for n in range(5)))
        assert await outbox.deliver_due() == 5
        await hanging.close()
    up = sorted(r.json()["attributes"]["run_id"] for r in receiver.received if r.path == "/up")
    assert up == [f"r-{n}" for n in range(5)]
    left = await remaining(store, clock)
    assert len(left) == 10
    assert all(i.attempts == 1 for i in left)
    assert {i.target for i in left} == {outbox.items_for(alert())[0].target, hanging.target}


async def test_failure_log_line_is_json_without_secrets(
    store: MemoryStore,
    clock: ManualClock,
    receiver: WebhookServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each failure logs one JSON line with item, target, attempts; no path token or secret."""
    receiver.always_fail_paths.add("/services/T/B/tok3n")
    outbox = Outbox(store, [hook(receiver, "/services/T/B/tok3n", clock)], clock=clock)
    [item] = await enqueue(store, outbox, alert(1))
    with caplog.at_level(logging.WARNING, logger="triggergate.outbox"):
        await outbox.deliver_due()
    [record] = [r for r in caplog.records if r.name == "triggergate.outbox"]
    line = record.getMessage()
    assert "tok3n" not in line
    assert SECRET not in line
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["msg"] == "notify_failed"
    assert doc["item"] == item.id
    assert doc["attempts"] == 1
    assert doc["error"].endswith("HTTP 500")


async def test_two_outboxes_racing_on_one_store_deliver_each_item_once(
    store: MemoryStore, clock: ManualClock, receiver: WebhookServer
) -> None:
    """Two run() loops with their own notifiers share one store: 40 items, 40 deliveries."""
    receiver.delay = 0.01  # keep requests in flight so the loops interleave
    first = Outbox(store, [hook(receiver, "/a", clock)], clock=clock)
    second = Outbox(store, [hook(receiver, "/a", clock)], clock=clock)
    await enqueue(store, first, *(alert(n) for n in range(40)))
    stop = asyncio.Event()
    runs = [asyncio.create_task(o.run(stop, interval=0.02, limit=3)) for o in (first, second)]
    for _ in range(500):
        if len(receiver.received) >= 40:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # time for a duplicate to show up, if there were one
    stop.set()
    await asyncio.wait_for(asyncio.gather(*runs), timeout=5)
    ids = [r.json()["attributes"]["run_id"] for r in receiver.received]
    assert sorted(ids) == sorted(f"r-{n}" for n in range(40))
    assert receiver.rejected == []


async def test_wake_delivers_without_waiting_for_the_interval(
    store: MemoryStore, clock: ManualClock, receiver: WebhookServer
) -> None:
    """A loop sleeping a 60 s interval delivers a new item within moments of wake()."""
    outbox = Outbox(store, [hook(receiver, "/a", clock)], clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop, interval=60.0))
    await asyncio.sleep(0.1)  # the loop has found nothing and is asleep
    await enqueue(store, outbox, alert(1))
    outbox.wake()
    for _ in range(100):
        if receiver.received:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, timeout=2)
    assert len(receiver.received) == 1


class FlakyStore(MemoryStore):
    """A MemoryStore whose claim fails the first ``failures`` times, as a store that is down."""

    def __init__(self, clock: ManualClock, failures: int) -> None:
        super().__init__(clock=clock)
        self.failures = failures

    async def claim(self, now: float, lease: float, limit: int) -> list[OutboxItem]:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("store unavailable")
        return await super().claim(now, lease, limit)


async def test_run_survives_store_errors_and_stops_when_told(
    clock: ManualClock, receiver: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Store failures are logged and the loop carries on; stop ends it promptly."""
    store = FlakyStore(clock, failures=3)
    outbox = Outbox(store, [hook(receiver, "/a", clock)], clock=clock)
    await enqueue(store, outbox, alert(1))
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="triggergate.outbox"):
        task = asyncio.create_task(outbox.run(stop, interval=0.02))
        for _ in range(200):
            if receiver.received:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, timeout=2)
    assert len(receiver.received) == 1
    failures = [json.loads(r.getMessage()) for r in caplog.records if r.name == "triggergate.outbox"]
    assert [f["msg"] for f in failures] == ["outbox_store_failed"] * 3
    assert all(f["error"] == "StoreError" for f in failures)
