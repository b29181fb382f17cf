"""Exactness under concurrency on dynalite, whose conditional writes are atomic (moto's are not)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.servers.aws import REGION
from triggergate.clock import ManualClock
from triggergate.quota import Check, Limit
from triggergate.registry import Context, store_from_url
from triggergate.stores.base import Batch
from triggergate.stores.dynamodb import DynamoDBStore

DAY = 86400
CLIENT = Check("c:198.51.100.23", (Limit(3, 7 * DAY),))

pytestmark = pytest.mark.dynamodb


@pytest.fixture
async def store(dynalite: str) -> AsyncIterator[DynamoDBStore]:
    """A store on a fresh dynalite table; a generous deadline since 200 calls share 2 cores."""
    table = f"race-{uuid.uuid4().hex[:12]}"
    url = f"dynamodb://{table}?region={REGION}&endpoint_url={dynalite}&create_table=true&timeout=5"
    opened = store_from_url(url, Context(clock=ManualClock()))
    assert isinstance(opened, DynamoDBStore)
    await opened.open()
    yield opened
    await opened.close()


def _events(store: DynamoDBStore, key: str) -> set[str]:
    """The rids stored under a quota key, read straight from the engine."""
    found = store.client.get_item(TableName=store.table, Key={"pk": {"S": f"q#{key}"}}, ConsistentRead=True)
    return set(found.get("Item", {}).get("ev", {}).get("M", {}))


async def test_two_hundred_racing_reservations_admit_exactly_three_in_every_round(
    store: DynamoDBStore,
) -> None:
    """5 rounds of 200 concurrent reservations for one client: exactly 3 admitted each time."""
    for round_ in range(5):
        results = await asyncio.gather(*(store.reserve(f"{round_}-{i}", [CLIENT], {}) for i in range(200)))
        admitted = {f"{round_}-{i}" for i, d in enumerate(results) if d.allowed}
        assert len(admitted) == 3
        assert _events(store, CLIENT.key) == admitted
        assert {p["rid"] for p in await store.pending(store.clock() + 1)} >= admitted
        assert await store.reset(CLIENT.key) == 3


async def test_racing_clients_never_overrun_the_global_budget(store: DynamoDBStore) -> None:
    """60 clients race against a budget of 5: 5 admitted, and undone events leave no trace."""
    budget = Check("g", (Limit(5, DAY),))
    results = await asyncio.gather(
        *(store.reserve(f"r{i}", [Check(f"c:{i}", (Limit(3, DAY),)), budget], {}) for i in range(60))
    )
    admitted = {f"r{i}" for i, d in enumerate(results) if d.allowed}
    assert len(admitted) == 5
    assert _events(store, "g") == admitted
    clients_with_events = {f"r{i}" for i in range(60) if _events(store, f"c:{i}")}
    assert clients_with_events == admitted


async def test_refunds_racing_reservations_never_over_admit(store: DynamoDBStore) -> None:
    """Refunding two slots while 100 reservations race admits exactly two more."""
    for i in range(3):
        assert (await store.reserve(f"first{i}", [CLIENT], {})).allowed
    gate = asyncio.Event()

    async def refund(rid: str) -> None:
        await gate.wait()
        await store.apply(Batch(release=rid))

    async def racer(i: int) -> bool:
        await gate.wait()
        for _ in range(3):
            if (await store.reserve(f"race{i}", [CLIENT], {})).allowed:
                return True
            await asyncio.sleep(0.01)
        return False

    tasks = [asyncio.create_task(refund("first0")), asyncio.create_task(refund("first1"))]
    racers = [asyncio.create_task(racer(i)) for i in range(100)]
    gate.set()
    await asyncio.gather(*tasks)
    won = sum(await asyncio.gather(*racers))
    assert won <= 2
    assert len(_events(store, CLIENT.key)) == 1 + won
    assert (await store.reserve("late", [CLIENT], {})).allowed == (1 + won < 3)
