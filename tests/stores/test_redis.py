"""The Redis store against a real redis-server: exactness, server time, outages, key space."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator

import pytest

from tests.servers import redis as redis_servers
from tests.servers.redis import RedisServer
from tests.stores import remote_cases as cases
from triggergate.clock import ManualClock
from triggergate.errors import ConfigurationError, StoreError
from triggergate.quota import Check, Limit
from triggergate.registry import Context, store_from_url
from triggergate.stores.base import Batch, Record

pytestmark = pytest.mark.redis


@pytest.fixture
def server(redis_server: RedisServer) -> Iterator[RedisServer]:
    redis_server.flush()
    yield redis_server
    if redis_server.process is None:
        redis_server.start()  # a failed outage test must not take the server from the others


async def test_200_racing_reservations_over_four_instances_admit_exactly_three(
    server: RedisServer,
) -> None:
    """200 concurrent reservations for one key via 4 store instances: exactly 3 pass, 3 rounds."""
    for round_ in range(3):
        # About exactness, not latency: a generous timeout keeps a loaded machine from failing it.
        assert await cases.race(f"{server.url}?timeout=10", 4, 200, cases.client(f"race-{round_}")) == 3


@pytest.mark.slow
def test_four_processes_racing_admit_exactly_three(server: RedisServer) -> None:
    """Four OS processes released by a barrier, 50 reservations each for one key: exactly 3 pass."""
    assert cases.race_processes(f"{server.url}?timeout=10", 4, 50, "processes") == 3


async def test_server_time_wins_over_skewed_replica_clocks(server: RedisServer) -> None:
    """Replicas with clocks 5 minutes apart admit exactly 3 on 3/1m: the server's TIME decides."""
    admitted, times = await cases.skewed_clocks_admit(server.url)
    assert admitted == 3
    assert max(times) - min(times) < 30


async def test_lua_admit_rule_matches_quota_evaluate(server: RedisServer) -> None:
    """Random reservations under several limits: the script's verdict equals quota.evaluate's.

    The store raises StoreError when the two disagree, so a clean run is the
    proof; the admitted count is also checked against the memory store.
    """
    rng = random.Random(4)
    clock, twin_clock = ManualClock(), ManualClock()
    checks = [Check("c:mirror", (Limit(3, 600), Limit(1, 60))), Check("g", (Limit(5, 3600),))]
    ctx = Context(clock=clock, options={"server_time": False})
    store = store_from_url(server.url, ctx)
    twin = store_from_url("memory://", Context(clock=twin_clock))
    await store.open()
    try:
        for i in range(300):
            step = rng.choice([0.0, 0.5, 1.0, 30.0, 59.999, 60.0, 61.0, 300.0])
            clock.advance(step)
            twin_clock.advance(step)
            got, want = (
                await store.reserve(f"r{i}", checks, {}),
                await twin.reserve(f"r{i}", checks, {}),
            )
            assert (got.allowed, got.retry_after) == (want.allowed, want.retry_after)
    finally:
        await store.close()


async def test_stopped_server_fails_fast_and_the_same_store_recovers(server: RedisServer) -> None:
    """Server down: reserve and peek raise StoreError within 1 s; back up, the same store works."""
    async with cases.opened(server.url) as store:
        await store.reserve("before", [cases.client("outage")], {})
        server.stop()
        assert await cases.fails_fast(lambda: store.reserve("x", [cases.client("outage")], {})) < 1
        assert await cases.fails_fast(lambda: store.peek([cases.client("outage")])) < 1
        server.start()
        await cases.recovers(store, within=10)
        assert (await store.reserve("after", [cases.client("outage")], {})).allowed


async def test_stalled_server_fails_within_a_second(server: RedisServer) -> None:
    """A SIGSTOP'd server (TCP open, no answer) makes reserve raise StoreError within 1 s."""
    async with cases.opened(server.url) as store:
        await store.ping()
        with server.paused():
            assert await cases.fails_fast(lambda: store.reserve("x", [cases.client("stall")], {})) < 1
        await cases.recovers(store, within=10)


async def test_ten_thousand_denied_clients_leave_no_key(server: RedisServer) -> None:
    """Denied reservations write nothing: after 10,000 denied clients the key count is unchanged.

    The operation timeout is raised to 10 s: this test is about keys, not latency.
    """
    async with cases.opened(f"{server.url}?timeout=10") as store:
        budget = await cases.exhaust_budget(store)
        with server.client() as sync:
            before = sync.dbsize()
            await cases.deny_many(store, budget, 10_000)
            assert sync.dbsize() == before
            assert list(sync.scan_iter(match="*denied*", count=1000)) == []


async def test_every_key_carries_an_expiry(server: RedisServer) -> None:
    """After reservations, a refund, a settle and expiring records, every key has a TTL > 0."""
    async with cases.opened(server.url) as store:
        budget = Check("g", (Limit(100, cases.DAY),))
        for i in range(3):
            await store.reserve(f"r{i}", [cases.client("ttl"), budget], {"client": "ttl"})
        now = store.clock()
        records = [Record("audit", "a1", {"at": now}, expires=now + 3600)]
        await store.apply(Batch(settle="r0", records=records))
        await store.apply(Batch(release="r1"))
        with server.client() as sync:
            keys = list(sync.scan_iter(count=1000))
            assert len(keys) >= 6
            assert {k: sync.ttl(k) for k in keys if sync.ttl(k) <= 0} == {}


async def test_bad_password_names_the_store_and_masks_the_password(server: RedisServer) -> None:
    """Wrong credentials at open(): StoreError naming redis://***@host:port/db, not the password."""
    with server.client() as sync:
        sync.acl_setuser("tg", enabled=True, passwords=["+right-password"], keys=["*"], commands=["+@all"])
    store = store_from_url(f"redis://tg:wrong-secret@127.0.0.1:{server.port}/0", Context())
    with pytest.raises(StoreError) as raised:
        await store.open()
    message = str(raised.value)
    assert f"redis://***@127.0.0.1:{server.port}/0" in message
    assert "wrong-secret" not in message
    assert "password" in message.lower()


async def test_password_from_the_environment_is_used(server: RedisServer) -> None:
    """TRIGGERGATE_REDIS_PASSWORD wins over the URL's password."""
    with server.client() as sync:
        sync.acl_setuser("tg2", enabled=True, passwords=["+env-secret"], keys=["*"], commands=["+@all"])
    ctx = Context(environ={"TRIGGERGATE_REDIS_PASSWORD": "env-secret"})
    store = store_from_url(f"redis://tg2:not-this@127.0.0.1:{server.port}/0", ctx)
    await store.open()
    try:
        await store.ping()
    finally:
        await store.close()


async def test_refused_connection_names_the_store(server: RedisServer) -> None:
    """Nothing listening: open() raises a StoreError naming the store and the refusal."""
    from tests.servers._process import free_port

    port = free_port()
    store = store_from_url(f"redis://127.0.0.1:{port}/0", Context())
    with pytest.raises(StoreError, match=rf"redis://127\.0\.0\.1:{port}/0.*(refused|Connect)"):
        await store.open()


@pytest.mark.parametrize(
    "url",
    [
        "redis:///0",
        "redis://127.0.0.1:notaport/0",
        "redis://127.0.0.1/x",
        "redis://h/0?color=red",
        "redis://h/0?batch=0",
        "redis://h/0?batch=many",
    ],
)
def test_wrong_url_is_a_configuration_error(url: str) -> None:
    """A malformed URL (no host, bad port, bad db, unknown option, bad batch) fails before connecting."""
    with pytest.raises(ConfigurationError):
        store_from_url(url, Context())


async def test_evicting_memory_policy_is_warned_about(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """maxmemory-policy allkeys-lru logs one WARNING naming the policy and noeviction."""
    with server.client() as sync:
        sync.config_set("maxmemory-policy", "allkeys-lru")
        try:
            with caplog.at_level(logging.WARNING, logger="triggergate.stores.redis"):
                async with cases.opened(server.url):
                    pass
        finally:
            sync.config_set("maxmemory-policy", "noeviction")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "allkeys-lru" in warnings[0].getMessage()
    assert "noeviction" in warnings[0].getMessage()


async def test_safe_memory_policy_is_not_warned_about(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The default noeviction policy opens without a warning."""
    with caplog.at_level(logging.WARNING, logger="triggergate.stores.redis"):
        async with cases.opened(server.url):
            pass
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_rediss_talks_tls_and_verifies_the_server() -> None:
    """rediss:// with the server's CA works end to end; without that CA the chain is refused."""
    with redis_servers.running(tls=True) as server:
        async with cases.opened(server.url) as store:
            assert (await store.reserve("tls", [cases.client("tls")], {})).allowed
        untrusted = store_from_url(f"rediss://127.0.0.1:{server.port}/0", Context())
        with pytest.raises(StoreError, match=r"(?i)certificate"):
            await untrusted.open()


def _script_calls(server: RedisServer) -> int:
    with server.client() as sync:
        stats = sync.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


async def test_concurrent_peeks_share_round_trips_and_each_gets_its_own_answer(server: RedisServer) -> None:
    """300 peeks at once over spent, half-used and fresh clients: every answer is that client's own,
    and they took far fewer script calls than peeks."""
    async with cases.opened(server.url) as store:
        uses = {f"b-{i}": i % 4 for i in range(30)}  # 0, 1, 2 or 3 (spent) of 3 slots used
        for name, used in uses.items():
            for n in range(used):
                assert (await store.reserve(f"{name}-{n}", [cases.client(name)], {})).allowed
        names = [f"b-{i % 30}" for i in range(300)]
        before = _script_calls(server)
        decisions = await asyncio.gather(*(store.peek([cases.client(name)]) for name in names))
        calls = _script_calls(server) - before
    for name, decision in zip(names, decisions, strict=True):
        assert decision.verdicts[0].key == f"c:{name}"
        assert decision.verdicts[0].used == uses[name]
        assert decision.allowed == (uses[name] < 3)
    assert calls <= 300 // 64 + 3, calls


async def test_peeks_behind_a_stalled_server_each_fail_within_the_timeout(server: RedisServer) -> None:
    """Server SIGSTOP'd: peeks that queued behind a stuck round trip still fail within their own 0.8 s."""
    async with cases.opened(server.url) as store:
        await store.ping()

        async def timed(name: str) -> float:
            return await cases.fails_fast(lambda: store.peek([cases.client(name)]))

        with server.paused():
            first = asyncio.ensure_future(timed("stall-0"))
            await asyncio.sleep(0.4)
            waits = [await first, *await asyncio.gather(*(timed(f"stall-{i}") for i in range(1, 20)))]
        assert max(waits) < 1, waits
        await cases.recovers(store, within=10)


async def test_peeks_keep_the_fail_closed_budget_when_it_is_shorter_than_the_store_timeout(
    server: RedisServer,
) -> None:
    """URL timeout 5 s, service budget 0.3 s: a peek on a stalled server fails within the budget."""
    async with cases.opened(f"{server.url}?timeout=5", store_timeout=0.3) as store:
        await store.ping()
        with server.paused():
            waited = await cases.fails_fast(lambda: store.peek([cases.client("budget")]))
        assert 0.25 <= waited < 0.8, waited
        await cases.recovers(store, within=10)


async def test_batch_1_sends_every_peek_alone_with_the_same_answers(server: RedisServer) -> None:
    """?batch=1: twenty concurrent peeks make twenty script calls, and answer as batched ones do."""
    async with cases.opened(f"{server.url}?batch=1") as store:
        for n in range(3):
            await store.reserve(f"alone-{n}", [cases.client("alone")], {})
        before = _script_calls(server)
        decisions = await asyncio.gather(*(store.peek([cases.client("alone")]) for _ in range(20)))
        assert _script_calls(server) - before == 20
    assert {(d.allowed, d.verdicts[0].used) for d in decisions} == {(False, 3)}
