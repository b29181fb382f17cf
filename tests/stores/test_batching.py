"""Batcher: calls waiting behind a round trip share the next; each keeps its own answer and deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from triggergate.errors import StoreError
from triggergate.stores.batching import Batcher


class Wire:
    """A fake round trip (this is our own class under test, not a vendor's): answers
    ``item * 10`` once ``release`` is set, and records the size of every batch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail: set[int] = set()  # a batch containing one of these raises

    async def send(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await self.release.wait()
        if self.fail & set(items):
            raise ConnectionError("connection reset")
        return [item * 10 for item in items]


def wrap(exc: BaseException) -> Exception:
    return StoreError(f"wrapped {type(exc).__name__}")


async def test_calls_arriving_during_a_round_trip_share_the_next_one() -> None:
    """One call goes alone; the ten that arrive while it is out go together; each gets its own answer."""
    wire = Wire()
    batcher: Batcher[int, int] = Batcher(wire.send, wrap, timeout=5)
    first = asyncio.ensure_future(batcher(1))
    await asyncio.sleep(0.01)
    rest = [asyncio.ensure_future(batcher(i)) for i in range(2, 12)]
    await asyncio.sleep(0.01)
    wire.release.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [i * 10 for i in range(2, 12)]
    assert [len(b) for b in wire.batches] == [1, 10]


async def test_no_batch_is_larger_than_its_bound() -> None:
    """Ten calls at once with size 4: batches of 4, 4 and 2, every answer right."""
    wire = Wire()
    wire.release.set()
    batcher: Batcher[int, int] = Batcher(wire.send, wrap, timeout=5, size=4)
    assert await asyncio.gather(*(batcher(i) for i in range(10))) == [i * 10 for i in range(10)]
    assert [len(b) for b in wire.batches] == [4, 4, 2]


async def test_a_failed_round_trip_fails_only_the_callers_in_it() -> None:
    """The batch that raised gives each of its callers the wrapped error; the next batch answers."""
    wire = Wire()
    wire.fail = {1}
    batcher: Batcher[int, int] = Batcher(wire.send, wrap, timeout=5)
    doomed = [asyncio.ensure_future(batcher(i)) for i in (1, 2)]
    await asyncio.sleep(0.01)
    later = asyncio.ensure_future(batcher(3))
    wire.release.set()
    for call in doomed:
        with pytest.raises(StoreError, match="wrapped ConnectionError"):
            await call
    assert await later == 30


async def test_each_caller_hears_within_its_own_timeout_behind_a_stuck_round_trip() -> None:
    """A round trip that never returns: callers queued behind it still fail within their timeout."""
    wire = Wire()
    batcher: Batcher[int, int] = Batcher(wire.send, wrap, timeout=0.3)

    async def timed(item: int) -> float:
        started = time.monotonic()
        with pytest.raises(StoreError, match="wrapped TimeoutError"):
            await batcher(item)
        return time.monotonic() - started

    first = asyncio.ensure_future(timed(1))
    await asyncio.sleep(0.15)
    behind = [asyncio.ensure_future(timed(i)) for i in (2, 3)]
    waits = [await first, *await asyncio.gather(*behind)]
    # Had the queued callers waited for the stuck batch and then a full timeout of their
    # own, they would take 0.45 s; a loaded machine gets 0.1 s of slack.
    assert all(0.25 <= wait < 0.4 for wait in waits), waits


async def test_a_caller_that_gives_up_leaves_the_others_their_answers() -> None:
    """Cancelling one waiting caller (its deadline passed elsewhere) does not disturb its batch."""
    wire = Wire()
    batcher: Batcher[int, int] = Batcher(wire.send, wrap, timeout=5)
    calls = [asyncio.ensure_future(batcher(i)) for i in range(4)]
    await asyncio.sleep(0.01)
    calls[1].cancel()
    wire.release.set()
    assert [await calls[i] for i in (0, 2, 3)] == [0, 20, 30]
    assert calls[1].cancelled()


async def test_cancelling_the_batcher_fails_every_waiting_caller() -> None:
    """cancel() (the store closes) gives the callers in flight and queued an error, never a hang."""
    wire = Wire()
    batcher: Batcher[int, int] = Batcher(wire.send, wrap, timeout=5)
    in_flight = asyncio.ensure_future(batcher(1))
    await asyncio.sleep(0.01)
    queued = asyncio.ensure_future(batcher(2))
    await asyncio.sleep(0)
    batcher.cancel()
    for call in (in_flight, queued):
        with pytest.raises(StoreError, match="wrapped CancelledError"):
            await call
