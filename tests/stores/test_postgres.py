"""The PostgreSQL store against a real server: exactness, server time, outages, rows, schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.postgres import PASSWORD, PostgresServer
from tests.stores import remote_cases as cases
from triggergate.errors import ConfigurationError, StoreError
from triggergate.registry import Context, store_from_url
from triggergate.stores.base import Batch, Record
from triggergate.stores.postgres import PostgresStore

pytestmark = pytest.mark.postgres


@pytest.fixture
def server(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    postgres_server.resume()
    if not postgres_server.pid:
        postgres_server.start()
    postgres_server.reset()
    yield postgres_server
    postgres_server.resume()
    if not postgres_server.pid:
        postgres_server.start()  # a failed outage test must not take the server from the others


def rows(server: PostgresServer, sql: str) -> int:
    with server.connect() as conn:
        found = conn.execute(sql).fetchone()
        assert found is not None
        value = found[0]
        assert isinstance(value, int)
        return value


async def test_200_racing_reservations_over_four_instances_admit_exactly_three(
    server: PostgresServer,
) -> None:
    """200 concurrent reservations for one key through 4 pools: exactly 3 pass, in each of 3 rounds.

    The burst is about exactness, not latency, so the operation timeout is raised to 10 s.
    """
    async with cases.opened(server.url):  # creates the schema once
        pass
    for round_ in range(3):
        admitted = await cases.race(f"{server.url}?timeout=10", 4, 200, cases.client(f"race-{round_}"))
        assert admitted == 3


@pytest.mark.slow
def test_four_processes_racing_admit_exactly_three(server: PostgresServer) -> None:
    """Four OS processes released by a barrier, 50 reservations each for one key: exactly 3 pass."""
    assert cases.race_processes(f"{server.url}?timeout=10", 4, 50, "processes") == 3


async def test_server_time_wins_over_skewed_replica_clocks(server: PostgresServer) -> None:
    """Replicas with clocks 5 minutes apart admit exactly 3 on 3/1m: the database clock decides."""
    admitted, times = await cases.skewed_clocks_admit(server.url)
    assert admitted == 3
    assert max(times) - min(times) < 30


async def test_stopped_server_fails_fast_and_the_same_store_recovers(
    server: PostgresServer,
) -> None:
    """Server down: reserve and peek raise StoreError within 1 s; back up, the same pool works."""
    async with cases.opened(server.url) as store:
        await store.reserve("before", [cases.client("outage")], {})
        server.stop()
        assert await cases.fails_fast(lambda: store.reserve("x", [cases.client("outage")], {})) < 1
        assert await cases.fails_fast(lambda: store.peek([cases.client("outage")])) < 1
        server.start()
        await cases.recovers(store, within=20)
        assert (await store.peek([cases.client("outage")])).verdicts[0].used == 1


async def test_stalled_server_fails_within_a_second(server: PostgresServer) -> None:
    """A SIGSTOP'd server (TCP open, no answer): reserve and peek raise StoreError within 1 s."""
    async with cases.opened(server.url) as store:
        await store.ping()
        with server.paused():
            assert await cases.fails_fast(lambda: store.reserve("x", [cases.client("stall")], {})) < 1
            assert await cases.fails_fast(lambda: store.peek([cases.client("stall")])) < 1
        await cases.recovers(store, within=20)


async def test_ten_thousand_denied_clients_leave_no_row(server: PostgresServer) -> None:
    """Denied reservations write nothing: after 10,000 denied clients the row counts are unchanged.

    Every reservation locks the one global budget key, so the burst queues; the
    operation timeout is raised to 10 s because this test is about rows, not latency.
    """
    async with cases.opened(f"{server.url}?timeout=10") as store:
        budget = await cases.exhaust_budget(store)
        count = "SELECT (SELECT count(*) FROM tg_events) + (SELECT count(*) FROM tg_ledger)"
        before = rows(server, count)
        await cases.deny_many(store, budget, 10_000)
        assert rows(server, count) == before == 3
        assert rows(server, "SELECT count(*) FROM tg_events WHERE key LIKE 'c:denied%'") == 0


async def test_sweep_deletes_expired_rows_in_small_batches(server: PostgresServer) -> None:
    """sweep(limit) deletes at most ``limit`` expired rows per call, and only expired ones."""
    async with cases.opened(server.url) as store:
        now = store.clock()
        expired = [Record("run", f"x{i}", {"at": now}, expires=now - 1) for i in range(25)]
        await store.apply(Batch(records=[*expired, Record("run", "keep", {"at": now})]))
        assert [await store.sweep(limit=10) for _ in range(4)] == [10, 10, 5, 0]
        assert rows(server, "SELECT count(*) FROM tg_records") == 1


async def test_schema_is_versioned_and_migrate_is_idempotent(server: PostgresServer) -> None:
    """open() applies version 1 once; a second migrate applies nothing."""
    async with cases.opened(server.url) as store:
        assert isinstance(store, PostgresStore)
        assert await store.migrate() == 0
    assert rows(server, "SELECT max(version) FROM tg_schema_version") == 1
    assert rows(server, "SELECT count(*) FROM tg_schema_version") == 1


async def test_bad_password_names_the_store_and_masks_the_password(server: PostgresServer) -> None:
    """Wrong credentials at open(): a StoreError naming the store (masked) and the cause."""
    store = store_from_url(f"postgresql://postgres:wrong-secret@127.0.0.1:{server.port}/postgres", Context())
    with pytest.raises(StoreError) as raised:
        await store.open()
    message = str(raised.value)
    assert f"postgresql://postgres:***@127.0.0.1:{server.port}/postgres" in message
    assert "password authentication failed" in message
    assert "wrong-secret" not in message


async def test_password_from_the_environment_is_used(server: PostgresServer) -> None:
    """TRIGGERGATE_POSTGRES_PASSWORD supplies the password the URL leaves out."""
    ctx = Context(environ={"TRIGGERGATE_POSTGRES_PASSWORD": PASSWORD})
    store = store_from_url(f"postgres://postgres@127.0.0.1:{server.port}/postgres", ctx)
    await store.open()
    try:
        await store.ping()
    finally:
        await store.close()


async def test_refused_connection_names_the_store(server: PostgresServer) -> None:
    """Nothing listening: open() raises a StoreError naming the store and the refusal."""
    from tests.servers._process import free_port

    port = free_port()
    store = store_from_url(f"postgresql://u:pw@127.0.0.1:{port}/db", Context())
    with pytest.raises(StoreError, match=rf"postgresql://u:\*\*\*@127\.0\.0\.1:{port}/db.*refused"):
        await store.open()


@pytest.mark.parametrize(
    "url",
    ["postgresql://h/db?pool=many", "postgresql://h:99999999/db", "postgresql://h/db?nonsense=1"],
)
def test_wrong_url_is_a_configuration_error(url: str) -> None:
    """A malformed URL (bad option, bad port, unknown libpq option) fails before connecting."""
    with pytest.raises(ConfigurationError):
        store_from_url(url, Context())
