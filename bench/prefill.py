"""Record many spent clients directly in each store, and measure what each client costs.

A million clients through HTTP (three accepts each) would take longer than the
whole benchmark, so the big pool is written straight into each store's own
layout: three accepted events per client, as three settled reservations leave
them. The per-client footprint of the real write path is measured separately,
through the store API (``reserve`` then ``apply(settle)``), on a smaller sample.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.peer_slowapi import redis_key
from triggergate.quota import Check, Limit
from triggergate.registry import Context, store_from_url
from triggergate.stores.base import Batch

WEEK = 604_800
LIMIT = Limit(3, WEEK)

_REDIS_SPENT = """
local p, a, b, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- the store's packed layout (see stores/redis_store.lua): ':' and one double per event
local events = ':' .. struct.pack('>ddd', now - 3 * 3600, now - 2 * 3600, now - 3600)
for i = a, b - 1 do
  local ip = string.format('10.%d.%d.%d', math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
  redis.call('SET', p .. 'q:c:' .. ip, events, 'PX', 604800000 - 3600000)
end
redis.call('SET', p .. 'horizon', 604800, 'PX', 604800000)
return b - a
"""

_REDIS_PEER = """
local fmt, a, b = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = a, b - 1 do
  local ip = string.format('10.%d.%d.%d', math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
  redis.call('SET', string.format(fmt, ip), 3, 'EX', 604800)
end
return b - a
"""


def address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def sqlite_size(path: Path) -> int:
    """Bytes on disk after a checkpoint (the WAL folded into the file)."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


async def _open(url: str, **options: Any) -> Any:
    store = store_from_url(url, Context(options=options))
    await store.open()
    return store


def sqlite_schema(path: Path) -> None:
    async def run() -> None:
        store = await _open(f"sqlite:///{path}")
        await store.close()

    asyncio.run(run())


def sqlite_spent(path: Path, count: int) -> float:
    """Write ``count`` spent clients into a fresh SQLite store; return seconds taken."""
    started = time.monotonic()
    sqlite_schema(path)
    now = time.time()
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("BEGIN IMMEDIATE")
        for first in range(0, count, 50_000):
            rows = [
                (f"c:{address(i)}", int((now - 3600 * j) * 1000))
                for i in range(first, min(count, first + 50_000))
                for j in (1, 2, 3)
            ]
            # the store's layout: (key, event time in ms); see stores/sqlite.py
            conn.executemany("INSERT INTO quota (key, at) VALUES (?, ?)", rows)
        conn.execute(
            "INSERT INTO meta (name, value) VALUES ('horizon', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
            (WEEK,),
        )
        conn.execute("COMMIT")
    return time.monotonic() - started


def redis_used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def redis_spent(url: str, count: int, prefix: str = "tg:") -> float:
    started = time.monotonic()
    with redis.Redis.from_url(url) as client:
        script = client.register_script(_REDIS_SPENT)
        for first in range(0, count, 20_000):
            script(args=[prefix, first, min(count, first + 20_000), time.time()])
    return time.monotonic() - started


def redis_peer(url: str, count: int) -> None:
    """Spend the slowapi peer's quota of ``count`` addresses in Redis (its key layout)."""
    fmt = redis_key(0).replace(address(0), "%s")
    with redis.Redis.from_url(url) as client:
        script = client.register_script(_REDIS_PEER)
        for first in range(0, count, 20_000):
            script(args=[fmt, first, min(count, first + 20_000)])


async def _through_api(url: str, count: int, **options: Any) -> None:
    store = await _open(url, **options)
    try:
        for i in range(count):
            rid = uuid.uuid4().hex
            check = Check(f"c:192.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", (LIMIT,))
            decision = await store.reserve(rid, [check], {"client_key": check.key[2:]})
            assert decision.allowed
            await store.apply(Batch(settle=rid))
    finally:
        await store.close()


def footprint_sqlite(path: Path, count: int) -> dict[str, float]:
    """Bytes per client tracked through the store API (one accepted, settled trigger each)."""
    sqlite_schema(path)
    before = sqlite_size(path)
    asyncio.run(_through_api(f"sqlite:///{path}", count))
    after = sqlite_size(path)
    return {"clients": count, "before": before, "after": after, "per_client": (after - before) / count}


def footprint_redis(url: str, count: int) -> dict[str, float]:
    """The same for Redis (``used_memory``); ``url`` must name an otherwise empty database.

    A warm-up of a few clients, then flushed, comes first: the script cache, the Lua
    VM and the connection's buffers are the server's once, not each client's.
    """
    with redis.Redis.from_url(url) as client:
        asyncio.run(_through_api(url, 100))
        client.flushdb()
        before = redis_used(client)
        asyncio.run(_through_api(url, count))
        after = redis_used(client)
        client.flushdb()
    return {"clients": count, "before": before, "after": after, "per_client": (after - before) / count}
