"""One call per key at a time, shared by every concurrent caller of that key.

Used for backend starts (racing presses with one request id share one start, and a
recent result answers a retry) and for run status reads (a crowd refreshing one run's
page costs the CI system one read).

The caller that makes the call (the leader) always releases the callers waiting on it,
whatever happens to the call: its result or its exception reaches every waiter, and a
leader that is cancelled (or dies of a BaseException) hands the key to a waiter, which
makes the call itself. No waiter is ever left waiting on a call nobody is making.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class _Abandoned(Exception):
    """Set on a shared call whose leader stopped without an outcome: a waiter takes over."""

    def __init__(self, successor: asyncio.Future[Any]) -> None:
        super().__init__("the leading caller stopped")
        self.successor = successor


class SingleFlight(Generic[T]):
    """Concurrent :meth:`run` calls with one key share one call.

    ``remember`` keeps that many recent results, so a later call with the same key
    gets the same answer without a new call (0 keeps none: every call after the
    shared one finished is a new call).
    """

    def __init__(self, remember: int = 0) -> None:
        self._inflight: dict[str, asyncio.Future[T]] = {}
        self._orphans: set[str] = set()  # keys whose next caller leads the waiting future
        self._done: OrderedDict[str, T] = OrderedDict()
        self._remember = remember

    def in_flight(self, key: str) -> bool:
        """Whether a call for ``key`` is under way now."""
        return key in self._inflight and key not in self._orphans

    async def run(self, key: str, call: Callable[[], Awaitable[T]]) -> T:
        """The result of ``call()`` for ``key``, made once however many callers wait."""
        if key in self._done:
            return self._done[key]
        pending = self._inflight.get(key)
        while True:
            if pending is None or (pending is self._inflight.get(key) and key in self._orphans):
                self._orphans.discard(key)
                return await self._lead(key, call, pending)
            try:
                # shield: a waiter that is cancelled must not cancel the leader's call.
                return await asyncio.shield(pending)
            except _Abandoned as abandoned:
                pending = abandoned.successor  # the first waiter to get here leads it

    async def _lead(self, key: str, call: Callable[[], Awaitable[T]], future: asyncio.Future[T] | None) -> T:
        loop = asyncio.get_running_loop()
        if future is None:
            future = loop.create_future()
            self._inflight[key] = future
        try:
            result = await call()
        except Exception as exc:
            del self._inflight[key]
            future.set_exception(exc)
            future.exception()  # mark retrieved: there may be no waiter
            raise
        except BaseException:
            # Cancelled (or dying): the waiters wait on a successor, which the first of
            # them to wake makes the call for.
            successor: asyncio.Future[T] = loop.create_future()
            self._inflight[key] = successor
            self._orphans.add(key)
            future.set_exception(_Abandoned(successor))
            future.exception()
            raise
        del self._inflight[key]
        future.set_result(result)
        if self._remember:
            self._done[key] = result
            while len(self._done) > self._remember:
                self._done.popitem(last=False)
        return result
