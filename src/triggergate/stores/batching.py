"""Calls that arrive while one round trip is in flight share the next one.

A remote store answers a flood of read-only peeks one network round trip each;
most of that cost is the client's, not the server's. :class:`Batcher` queues
each call, sends whatever has queued up as one request as soon as the previous
one is back (no timer, so a lone call waits for nothing), and hands every caller
its own answer. Each caller still hears within ``timeout`` of its call: a
batch must be back by the time its earliest caller's deadline passes, or every
caller in it gets the error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

Q = TypeVar("Q")
R = TypeVar("R")


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Consume an abandoned round trip's outcome so asyncio does not report it as lost."""
    if not task.cancelled():
        task.exception()


class Batcher(Generic[Q, R]):
    """``await batcher(item)``: the answer ``send`` gave for ``item``, sent with its neighbours.

    ``send`` takes up to ``size`` items and returns one answer per item, in order;
    ``wrap`` turns whatever ``send`` raised (or the timeout) into the error each
    caller of that batch gets.
    """

    def __init__(
        self,
        send: Callable[[list[Q]], Coroutine[Any, Any, Sequence[R]]],
        wrap: Callable[[BaseException], Exception],
        timeout: float,
        size: int = 64,
    ) -> None:
        if size < 1 or timeout <= 0:
            raise ValueError("size must be at least 1 and timeout positive")
        self._send = send
        self._wrap = wrap
        self.timeout = timeout
        self.size = size
        # (item, its caller's future, when it arrived on the monotonic clock)
        self._queue: list[tuple[Q, asyncio.Future[R], float]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Task[Sequence[R]]] = set()

    def _loop_of(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None  # set by the call that started the drain
        return self._loop

    async def __call__(self, item: Q) -> R:
        loop = self._loop
        if loop is None or self._task is None:
            # Looked up once per burst: get_running_loop costs a system call on 3.11.
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future, time.monotonic()))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                # Let every call already runnable in this turn of the event loop queue up
                # first: the requests a server woke together then share one round trip.
                await asyncio.sleep(0)
                batch, self._queue = self._queue[: self.size], self._queue[self.size :]
                await self._flush(batch)
        except BaseException as exc:  # cancelled (the store closes): nobody may wait forever
            for _, future, _ in self._queue:
                if not future.done():
                    future.set_exception(self._wrap(exc))
            self._queue = []
            raise
        finally:
            self._task = None

    async def _flush(self, batch: list[tuple[Q, asyncio.Future[R], float]]) -> None:
        try:
            left = batch[0][2] + self.timeout - time.monotonic()
            if left <= 0:
                raise TimeoutError
            # Waited on, not cancelled in place: a network client cancelled mid-call may take
            # seconds to unwind, and the callers must hear at their deadline.
            sending: asyncio.Task[Sequence[R]] = self._loop_of().create_task(
                self._send([item for item, _, _ in batch])
            )
            done, _ = await asyncio.wait({sending}, timeout=left)
            if not done:
                sending.cancel()
                self._abandoned.add(sending)  # the loop holds tasks weakly
                sending.add_done_callback(self._abandoned.discard)
                sending.add_done_callback(_retrieve)
                raise TimeoutError
            answers = sending.result()
            if len(answers) != len(batch):
                raise ValueError(f"{len(answers)} answers for {len(batch)} calls")
        except BaseException as exc:
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(self._wrap(exc))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future, _), answer in zip(batch, answers, strict=True):
            if not future.done():  # a caller that gave up was cancelled with its future
                future.set_result(answer)

    def cancel(self) -> None:
        """Stop sending; callers still waiting get the error of a cancelled batch."""
        if self._task is not None:
            self._task.cancel()
