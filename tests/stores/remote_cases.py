"""Scenarios shared by the Redis and PostgreSQL engine tests (test_redis.py, test_postgres.py).

Each scenario opens its own store instances with the server's time
(``server_time`` left at its default, True) unless it says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from triggergate.clock import Clock, system_clock
from triggergate.errors import StoreError
from triggergate.quota import Check, Limit
from triggergate.registry import Context, store_from_url
from triggergate.stores.base import Store

DAY = 86400


def client(name: str) -> Check:
    return Check(f"c:{name}", (Limit(3, 7 * DAY),))


@contextlib.asynccontextmanager
async def opened(url: str, clock: Clock = system_clock, **options: Any) -> AsyncIterator[Store]:
    store = store_from_url(url, Context(clock=clock, options=options))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def race(url: str, instances: int, total: int, check: Check) -> int:
    """``total`` reservations for one key, spread over ``instances`` stores, all at once."""
    async with contextlib.AsyncExitStack() as stack:
        stores = [await stack.enter_async_context(opened(url)) for _ in range(instances)]
        results = await asyncio.gather(
            *(stores[i % instances].reserve(f"r{i}", [check], {}) for i in range(total))
        )
    return sum(d.allowed for d in results)


def _process_worker(url: str, key: str, count: int, barrier: Any, out: Any) -> None:
    async def work() -> int:
        async with opened(url) as store:
            await store.ping()
            barrier.wait(timeout=60)
            check = client(key)
            tag = uuid.uuid4().hex
            results = await asyncio.gather(*(store.reserve(f"{tag}-{i}", [check], {}) for i in range(count)))
            return sum(d.allowed for d in results)

    out.put(asyncio.run(work()))


def race_processes(url: str, processes: int, per_process: int, key: str) -> int:
    """Like :func:`race`, in separate OS processes released together by a barrier."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    workers = [
        ctx.Process(target=_process_worker, args=(url, key, per_process, barrier, out))
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    try:
        admitted = sum(int(out.get(timeout=90)) for _ in workers)
    finally:
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.kill()
    assert all(w.exitcode == 0 for w in workers)
    return admitted


def skewed(offset: float) -> Clock:
    """The wall clock shifted by ``offset`` seconds (a replica with a wrong clock)."""
    return lambda: time.time() + offset


async def skewed_clocks_admit(url: str) -> tuple[int, list[float]]:
    """Three replicas whose injected clocks are 5 minutes apart reserve 3 times each on 3/1m.

    Were the replicas' clocks used, each one's events would lie outside the
    others' one-minute window and all 9 would pass.
    """
    limit = Check(f"c:skew-{uuid.uuid4().hex}", (Limit(3, 60),))
    admitted, times = 0, []
    for offset in (-300.0, 0.0, 300.0):
        async with opened(url, clock=skewed(offset)) as store:
            for i in range(3):
                decision = await store.reserve(f"{offset}-{i}", [limit], {})
                admitted += decision.allowed
                times.append(decision.now)
    return admitted, times


async def fails_fast(call: Callable[[], Awaitable[object]]) -> float:
    """Seconds until ``call`` raised StoreError (it must raise it)."""
    started = time.monotonic()
    try:
        await call()
    except StoreError:
        return time.monotonic() - started
    raise AssertionError("the call succeeded while the server was unavailable")


async def recovers(store: Store, within: float) -> float:
    """Seconds until ``store`` answers a reservation again (bounded by ``within``)."""
    started = time.monotonic()
    while True:
        try:
            await store.peek([client("recover")])
            return time.monotonic() - started
        except StoreError:
            if time.monotonic() - started > within:
                raise
            await asyncio.sleep(0.2)


async def exhaust_budget(store: Store) -> Check:
    """A global budget of 1/1d, spent by one admitted client."""
    budget = Check("g", (Limit(1, DAY),))
    assert (await store.reserve("first", [client("first"), budget], {})).allowed
    return budget


async def deny_many(store: Store, budget: Check, clients: int) -> None:
    """Send ``clients`` distinct clients against the spent ``budget``; all must be denied."""
    for start in range(0, clients, 250):
        batch = range(start, min(start + 250, clients))
        results = await asyncio.gather(
            *(store.reserve(f"d{i}", [client(f"denied-{i}"), budget], {}) for i in batch)
        )
        assert not any(d.allowed for d in results)
