"""``Idempotency-Key``: the same key from the same client gets the first request's response,
starts one run and is charged once, even when the requests race."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from triggergate.clock import Clock
from triggergate.models import Outcome, error
from triggergate.stores.base import Record, Store

Guard = Callable[[Awaitable[Any]], Awaitable[Any]]


class IdempotencyKeys:
    """Claims, replays and forgets keys; records live in the store (kind ``idem``)."""

    def __init__(self, store: Store, clock: Clock, ttl: float, wait: float, guard: Guard) -> None:
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self.wait = wait  # how long a racing duplicate waits for the first request's answer
        self.guard = guard  # the fail-closed deadline around every store call

    @staticmethod
    def record_id(client_key: str, key: str) -> str:
        return f"{client_key}|{key}"

    def record(self, client_key: str, key: str, now: float, response: Outcome) -> Record:
        """The finished answer, written in the same batch as the accepted trigger."""
        doc = {
            "at": now,
            "state": "done",
            "status": response.status,
            "body": response.body,
            "headers": response.headers,
        }
        return Record("idem", self.record_id(client_key, key), doc, expires=now + self.ttl)

    async def claim(self, client_key: str, key: str, request_id: str) -> Outcome | None:
        """None when this request owns the key; else the first request's response (or 409)."""
        now = self.clock()
        claim = Record(
            "idem", self.record_id(client_key, key), {"at": now, "state": "pending"}, expires=now + self.ttl
        )
        if await self.guard(self.store.put_new(claim)):
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while loop.time() < deadline:
            doc = await self.guard(self.store.get("idem", claim.id))
            if doc is None:  # the first request failed and gave the key back
                if await self.guard(self.store.put_new(claim)):
                    return None
            elif doc.get("state") == "done":
                return Outcome(int(doc["status"]), dict(doc["body"]), dict(doc["headers"]))
            await asyncio.sleep(0.05)
        return error(409, "in_progress", "a request with this Idempotency-Key is still running", request_id)

    async def forget(self, client_key: str, key: str | None) -> None:
        """Give the key back (the request was refused or failed), so a retry is judged afresh."""
        if key is not None:
            await self.guard(self.store.delete("idem", self.record_id(client_key, key)))
