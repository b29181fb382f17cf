"""The DynamoDB store on moto: item shapes, TTL attributes, configuration, failure, no scans."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import boto3
import pytest

from tests.servers.aws import REGION
from triggergate.aws.dynamodb_schema import TTL_ATTRIBUTE
from triggergate.clock import ManualClock
from triggergate.errors import ConfigurationError, StoreError
from triggergate.quota import Check, Limit
from triggergate.registry import Context, store_from_url
from triggergate.stores.base import Batch, OutboxItem, Record
from triggergate.stores.dynamodb import DynamoDBStore

DAY = 86400
CLIENT = Check("c:203.0.113.9", (Limit(3, 7 * DAY), Limit(1, 600)))

pytestmark = pytest.mark.dynamodb


def _client(endpoint: str) -> Any:
    return boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint)


def _items(endpoint: str, table: str) -> dict[str, dict[str, Any]]:
    """Every item of the table by pk (a scan is fine in a test, never in the store)."""
    found = _client(endpoint).scan(TableName=table)["Items"]
    return {item["pk"]["S"]: item for item in found}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def open_store(moto: str, clock: ManualClock) -> Callable[..., Any]:
    """Open a store on moto with extra URL parameters; closed after the test."""
    opened: list[DynamoDBStore] = []

    async def make(table: str = "gate", **params: str) -> DynamoDBStore:
        query = "&".join(
            f"{k}={v}"
            for k, v in {
                "region": REGION,
                "endpoint_url": moto,
                "create_table": "true",
                **params,
            }.items()
        )
        store = store_from_url(f"dynamodb://{table}?{query}", Context(clock=clock))
        assert isinstance(store, DynamoDBStore)
        await store.open()
        opened.append(store)
        return store

    return make


@pytest.fixture
async def store(open_store: Callable[..., Any]) -> AsyncIterator[DynamoDBStore]:
    opened: DynamoDBStore = await open_store()
    yield opened
    await opened.close()


async def test_table_has_ttl_enabled_on_the_attribute_the_code_writes(
    store: DynamoDBStore, moto: str
) -> None:
    """create_table enables TTL on the store's TTL attribute name."""
    described = _client(moto).describe_time_to_live(TableName="gate")["TimeToLiveDescription"]
    assert described["TimeToLiveStatus"] == "ENABLED"
    assert described["AttributeName"] == TTL_ATTRIBUTE == store.ttl_attribute


async def test_quota_item_carries_ttl_when_its_newest_event_leaves_the_window(
    store: DynamoDBStore, moto: str, clock: ManualClock
) -> None:
    """The quota item's numeric TTL: newest event plus the longest window, in whole seconds."""
    clock.now = 1_700_000_000.25
    assert (await store.reserve("r1", [CLIENT], {"client": "203.0.113.9"})).allowed
    clock.advance(3600)
    assert (await store.reserve("r2", [CLIENT], {})).allowed
    item = _items(moto, "gate")[f"q#{CLIENT.key}"]
    assert item[TTL_ATTRIBUTE] == {"N": str(math.ceil(clock() + 7 * DAY))}
    assert set(item["ev"]["M"]) == {"r1", "r2"}
    ledger = _items(moto, "gate")["l#r1"]
    assert float(ledger[TTL_ATTRIBUTE]["N"]) > 1_700_000_000 + 7 * DAY


async def test_configured_ttl_attribute_name_is_written(open_store: Callable[..., Any], moto: str) -> None:
    """ttl_attribute= renames the attribute on quota items and in the table's TTL setting."""
    store = await open_store("custom", ttl_attribute="expires_at")
    await store.reserve("r1", [CLIENT], {})
    item = _items(moto, "custom")[f"q#{CLIENT.key}"]
    assert "expires_at" in item
    assert TTL_ATTRIBUTE not in item
    described = _client(moto).describe_time_to_live(TableName="custom")["TimeToLiveDescription"]
    assert described["AttributeName"] == "expires_at"
    await store.close()


async def test_audit_records_have_no_ttl_and_expiring_records_do(
    store: DynamoDBStore, moto: str, clock: ManualClock
) -> None:
    """Audit entries outlive quotas (no TTL attribute); records with an expiry carry one."""
    now = clock()
    await store.apply(
        Batch(
            records=[
                Record("audit", "a1", {"at": now, "event": "accepted"}),
                Record("idem", "k1", {"at": now}, expires=now + 60),
            ]
        )
    )
    found = _items(moto, "gate")
    assert TTL_ATTRIBUTE not in found["r#audit#a1"]
    assert found["r#idem#k1"][TTL_ATTRIBUTE] == {"N": str(math.ceil(now + 60))}


async def test_audit_table_holds_the_audit_records(
    open_store: Callable[..., Any], moto: str, clock: ManualClock
) -> None:
    """audit_table= sends kind "audit" to its own table and everything else to the main one."""
    store = await open_store("main", audit_table="main-audit")
    now = clock()
    await store.apply(Batch(records=[Record("audit", "a1", {"at": now}), Record("run", "x", {"at": now})]))
    assert set(_items(moto, "main-audit")) == {"r#audit#a1"}
    assert "r#run#x" in _items(moto, "main")
    assert [d["at"] for d in await store.query("audit", since=now, until=now + 1, limit=5)] == [now]
    await store.close()


async def test_decisions_ignore_items_ttl_has_not_deleted_yet(
    store: DynamoDBStore, moto: str, clock: ManualClock
) -> None:
    """moto never deletes expired items (DynamoDB may take days): the window frees the slot."""
    for i in range(3):
        assert (await store.reserve(f"r{i}", [CLIENT], {})).allowed
        clock.advance(601)
    assert not (await store.reserve("over", [CLIENT], {})).allowed
    clock.advance(7 * DAY)
    item = _items(moto, "gate")[f"q#{CLIENT.key}"]
    assert float(item[TTL_ATTRIBUTE]["N"]) < clock()  # expired, still present
    assert (await store.reserve("again", [CLIENT], {})).allowed
    assert set(_items(moto, "gate")[f"q#{CLIENT.key}"]["ev"]["M"]) == {"again"}


async def test_denied_reservation_leaves_the_table_unchanged(store: DynamoDBStore, moto: str) -> None:
    """The deny path reads only: every item is byte-for-byte the same afterwards."""
    assert (await store.reserve("r1", [CLIENT], {})).allowed
    before = _items(moto, "gate")
    assert not (await store.reserve("r2", [CLIENT], {})).allowed
    assert _items(moto, "gate") == before


async def test_store_never_scans_and_every_query_is_paginated(
    store: DynamoDBStore, clock: ManualClock
) -> None:
    """Every method together: no Scan, every Query has a Limit, only the granted actions."""
    calls: list[tuple[str, dict[str, Any]]] = []
    store.client.meta.events.register(
        "provide-client-params.dynamodb.*",
        lambda params, model, **_: calls.append((model.name, dict(params))),
    )
    now = clock()
    await store.reserve("r1", [CLIENT, Check("g", (Limit(100, DAY),))], {})
    await store.peek([CLIENT])
    await store.pending(now + 1)
    await store.apply(
        Batch(
            settle="r1",
            records=[Record("audit", "a", {"at": now})],
            outbox=[OutboxItem("o1", "log://", {}, due=now)],
        )
    )
    await store.query("audit", since=0, until=now + 1, limit=10)
    claimed = await store.claim(now, 30, 5)
    await store.bury(claimed[0])
    await store.dead(5)
    await store.revive(None)
    clock.advance(30 * DAY)
    await store.sweep()
    await store.reset(CLIENT.key)
    names = {name for name, _ in calls}
    assert "Scan" not in names
    # Exactly the actions the template's IAM policy grants on the table (tests/aws/test_template.py).
    assert names == {"Query", "PutItem", "GetItem", "UpdateItem", "DeleteItem"}
    assert all("Limit" in params for name, params in calls if name == "Query")


async def test_sweep_deletes_expired_items_through_the_index(
    store: DynamoDBStore, moto: str, clock: ManualClock
) -> None:
    """sweep removes quota, ledger and record items whose expiry passed, and keeps audit entries."""
    await store.reserve("r1", [CLIENT], {})
    await store.apply(
        Batch(
            settle="r1",
            records=[
                Record("audit", "a", {"at": clock()}),
                Record("run", "x", {"at": clock()}, expires=clock() + 10),
            ],
        )
    )
    clock.advance(9 * DAY)
    assert await store.sweep() == 3
    assert set(_items(moto, "gate")) == {"r#audit#a"}


async def test_unreachable_store_raises_store_error_within_a_second(clock: ManualClock) -> None:
    """Fail closed, fast: nothing listens on the endpoint, StoreError comes in about a second."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = store_from_url(
        f"dynamodb://gate?region={REGION}&endpoint_url=http://127.0.0.1:{port}",
        Context(clock=clock),
    )
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        await store.reserve("r1", [CLIENT], {})
    assert time.monotonic() - started < 1.5
    assert "127.0.0.1" not in str(caught.value)
    with pytest.raises(StoreError):
        await store.ping()
    await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "dynamodb://?region=us-east-1",
        "dynamodb://x?region=us-east-1",
        "dynamodb://gate",
        "dynamodb://gate?region=us-east-1&colour=blue",
        "dynamodb://gate?region=us-east-1&endpoint_url=ftp://127.0.0.1",
        "dynamodb://gate?region=us-east-1&timeout=soon",
        "dynamodb://gate?region=us-east-1&audit_table=a",
    ],
)
def test_invalid_urls_are_configuration_errors_naming_the_store(url: str) -> None:
    """Each malformed URL is refused before any connection, with key "store"."""
    with pytest.raises(ConfigurationError) as caught:
        store_from_url(url, Context(environ={}))
    assert caught.value.key == "store"


def test_region_falls_back_to_the_lambda_environment() -> None:
    """Without ?region= the store takes AWS_REGION, which Lambda always sets."""
    store = store_from_url("dynamodb://gate", Context(environ={"AWS_REGION": "eu-west-1"}))
    assert isinstance(store, DynamoDBStore)
