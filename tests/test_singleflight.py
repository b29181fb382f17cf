"""The one single-flight helper: shared calls, released waiters, status reads that never hang."""

from __future__ import annotations

import asyncio

import pytest

from triggergate.backends.base import Backend, Started, StartRequest, Status
from triggergate.clock import ManualClock
from triggergate.registry import Context
from triggergate.runs import RunTracker
from triggergate.singleflight import SingleFlight
from triggergate.stores.base import Batch, Record
from triggergate.stores.memory import MemoryStore


async def test_concurrent_calls_with_one_key_share_one_call() -> None:
    """Ten callers of one key while the call is under way: one call, ten equal results."""
    flight: SingleFlight[int] = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def call() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 7

    tasks = [asyncio.create_task(flight.run("k", call)) for _ in range(10)]
    await asyncio.sleep(0.01)
    gate.set()
    assert await asyncio.gather(*tasks) == [7] * 10
    assert calls == 1


async def test_an_exception_of_any_type_reaches_every_waiter() -> None:
    """The shared call raising ValueError releases all nine waiters with that ValueError."""
    flight: SingleFlight[int] = SingleFlight()
    gate = asyncio.Event()

    async def call() -> int:
        await gate.wait()
        raise ValueError("adapter bug")

    tasks = [asyncio.create_task(flight.run("k", call)) for _ in range(10)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2.0)
    assert all(isinstance(r, ValueError) for r in results)
    assert not flight.in_flight("k")


async def test_a_cancelled_leader_hands_the_call_to_a_waiter() -> None:
    """Cancelling the caller that makes the call does not fail or hang its waiters: one of
    them makes the call again and all of them get its result."""
    flight: SingleFlight[str] = SingleFlight()
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)
        return "second"

    leader = asyncio.create_task(flight.run("k", call))
    await asyncio.sleep(0.01)
    waiters = [asyncio.create_task(flight.run("k", call)) for _ in range(5)]
    await asyncio.sleep(0.01)
    leader.cancel()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 2.0) == ["second"] * 5
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert calls == 2


async def test_remembered_results_answer_later_calls_and_others_call_again() -> None:
    """With remember=N a finished key answers from memory; with the default every later
    call is a new call."""
    remembering: SingleFlight[int] = SingleFlight(remember=2)
    plain: SingleFlight[int] = SingleFlight()
    counter = iter(range(100))

    async def call() -> int:
        return next(counter)

    assert [await remembering.run("k", call) for _ in range(3)] == [0, 0, 0]
    assert [await plain.run("k", call) for _ in range(3)] == [1, 2, 3]
    await remembering.run("a", call)
    await remembering.run("b", call)  # "k" is now the oldest beyond 2 and forgotten
    assert await remembering.run("k", call) == 6


class BrokenStatus(Backend):
    """A backend whose status read fails with an exception that is not a BackendError."""

    name = "broken"

    def __init__(self) -> None:
        self.reads = 0
        self.gate = asyncio.Event()

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> BrokenStatus:
        return cls()

    async def start(self, request: StartRequest) -> Started:
        return Started(request.request_id)

    async def status(self, ref: str) -> Status:
        self.reads += 1
        await self.gate.wait()
        raise ValueError("unexpected answer shape")


async def test_a_status_read_raising_value_error_hangs_no_reader() -> None:
    """Ten readers of one run whose status read raises ValueError all get an answer
    (``unknown``) at once, from a single backend read."""
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    run = {"at": clock(), "run_id": "r1", "ref": "ci-1", "url": None, "state": "queued"}
    await store.apply(Batch(records=[Record("run", "r1", run, expires=clock() + 3600)]))
    backend = BrokenStatus()
    tracker = RunTracker(store, backend, clock, retention=3600)
    readers = [asyncio.create_task(tracker.read("r1")) for _ in range(10)]
    await asyncio.sleep(0.05)
    backend.gate.set()
    views = await asyncio.wait_for(asyncio.gather(*readers), 2.0)
    assert [v["status"] if v else None for v in views] == ["queued"] * 10
    assert backend.reads == 1
