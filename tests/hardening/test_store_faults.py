"""Store down, stalled and read-only on real Redis and PostgreSQL servers: fail closed, fast,
quietly, and recover without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.hardening.support import base_env, leaks, raw_once, serving, started_runs
from tests.servers._process import free_port
from tests.servers.postgres import PASSWORD, PostgresServer
from tests.servers.redis import RedisServer

pytestmark = [pytest.mark.slow]

Fault = Callable[[], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def redis_down(server: RedisServer) -> Iterator[None]:
    server.stop()
    try:
        yield
    finally:
        server.start()


@contextlib.contextmanager
def redis_read_only(server: RedisServer) -> Iterator[None]:
    """A replica of a dead master: reads answer, every write is refused with READONLY."""
    with server.client() as admin:
        admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    try:
        yield
    finally:
        with server.client() as admin:
            admin.execute_command("REPLICAOF", "NO", "ONE")


@contextlib.contextmanager
def pg_down(server: PostgresServer) -> Iterator[None]:
    server.stop()
    try:
        yield
    finally:
        server.start()


@contextlib.contextmanager
def pg_read_only(server: PostgresServer) -> Iterator[None]:
    """default_transaction_read_only=on, reloaded: open sessions' next transactions are
    read-only too."""
    with server.connect() as admin:
        admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        admin.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        with server.connect() as admin:
            admin.execute("SET default_transaction_read_only = off")
            admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
            admin.execute("SELECT pg_reload_conf()")


async def _fail_closed_and_recover(workdir: Path, store_url: str, fault: Fault) -> None:
    env = base_env(workdir, TRIGGERGATE_STORE=store_url)
    with serving(workdir, env) as server:
        first = await raw_once(server.port, "127.0.20.1")
        assert first[0] == 202, first
        log_mark = len(server.output())
        outage: list[tuple[int, bytes, float]] = []
        with fault():
            await asyncio.sleep(0.3)
            for i in range(2, 8):
                started = time.monotonic()
                status, body = await raw_once(server.port, f"127.0.20.{i}")
                outage.append((status, body, time.monotonic() - started))
        recovered: tuple[int, bytes] = (0, b"")
        deadline = time.monotonic() + 20
        while recovered[0] != 202 and time.monotonic() < deadline:
            recovered = await raw_once(server.port, "127.0.20.50")
            await asyncio.sleep(0.3)
        assert server.proc.poll() is None, "the server must not have restarted"
        outage_log = server.output()[log_mark:]
    assert [(s, json.loads(b)["error"]) for s, b, _ in outage] == [(503, "unavailable")] * 6
    slowest = max(t for _, _, t in outage)
    assert slowest < 1.0, f"a 503 took {slowest:.2f}s"
    assert recovered[0] == 202, recovered
    assert len(started_runs(workdir, expect=2)) == 2, "no run may start during the outage"
    alarms = [line for line in outage_log.splitlines() if "store unavailable" in line]
    assert len(alarms) <= 1, alarms
    assert not leaks(outage_log, (PASSWORD,)), leaks(outage_log, (PASSWORD,))
    print(f"slowest 503: {slowest:.3f}s, alarm lines: {len(alarms)}")


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["down", "stalled", "read_only"])
async def test_redis_fault_fails_closed_fast_and_recovers(
    redis_server: RedisServer, tmp_path: Path, kind: str
) -> None:
    """Redis down/SIGSTOPped/read-only: six presses get 503 within 1 s each, no run starts,
    at most one 'store unavailable' log line, and presses succeed again once it is back."""
    redis_server.flush()
    faults: dict[str, Fault] = {
        "down": lambda: redis_down(redis_server),
        "stalled": redis_server.paused,
        "read_only": lambda: redis_read_only(redis_server),
    }
    await _fail_closed_and_recover(tmp_path, redis_server.url, faults[kind])


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["down", "stalled", "read_only"])
async def test_postgres_fault_fails_closed_fast_and_recovers(
    postgres_server: PostgresServer, tmp_path: Path, kind: str
) -> None:
    """PostgreSQL down/SIGSTOPped/read-only: the same promises as for Redis, and the
    database password never reaches a log line."""
    postgres_server.reset()
    faults: dict[str, Fault] = {
        "down": lambda: pg_down(postgres_server),
        "stalled": postgres_server.paused,
        "read_only": lambda: pg_read_only(postgres_server),
    }
    await _fail_closed_and_recover(tmp_path, postgres_server.url, faults[kind])
