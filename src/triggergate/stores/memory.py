"""``memory://``: everything in one process's memory; for tests, demos and dry runs.

Not shared between processes and lost on restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from triggergate.quota import Check, Decision, decide
from triggergate.registry import Context
from triggergate.stores.base import Batch, Doc, OutboxItem, Record, Store


class MemoryStore(Store):
    """A store in a few dictionaries, guarded by one lock."""

    schemes = ("memory",)
    inline_reads = True

    def __init__(self, clock: Any = None, **kwargs: Any) -> None:
        super().__init__(**({"clock": clock} if clock else {}))
        self._lock = asyncio.Lock()
        self._events: dict[str, dict[str, float]] = {}  # key -> rid -> at
        self._horizon: dict[str, int] = {}
        self._ledger: dict[str, Doc] = {}
        self._records: dict[tuple[str, str], tuple[Doc, float | None]] = {}
        self._outbox: dict[str, OutboxItem] = {}
        self._dead: dict[str, OutboxItem] = {}

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> MemoryStore:
        return cls(clock=ctx.clock)

    # -- quota -----------------------------------------------------------------

    def _decide(self, checks: Sequence[Check]) -> Decision:
        now = self.clock()
        return decide(checks, [list(self._events.get(c.key, {}).values()) for c in checks], now)

    async def reserve(self, rid: str, checks: Sequence[Check], ledger: Mapping[str, Any]) -> Decision:
        async with self._lock:
            decision = self._decide(checks)
            if decision.allowed:
                for check in checks:
                    self._events.setdefault(check.key, {})[rid] = decision.now
                    self._horizon[check.key] = max(self._horizon.get(check.key, 0), check.horizon)
                self._ledger[rid] = {
                    **ledger,
                    "rid": rid,
                    "at": decision.now,
                    "keys": [c.key for c in checks],
                    "state": "pending",
                }
            return decision

    async def peek(self, checks: Sequence[Check]) -> Decision:
        return self._decide(checks)

    async def pending(self, older_than: float) -> list[Doc]:
        return [dict(d) for d in self._ledger.values() if d["state"] == "pending" and d["at"] < older_than]

    async def reset(self, key: str) -> int:
        async with self._lock:
            return len(self._events.pop(key, {}))

    # -- records and outbox ------------------------------------------------------

    async def apply(self, batch: Batch) -> None:
        async with self._lock:
            if batch.settle and self._ledger.get(batch.settle, {}).get("state") == "pending":
                self._ledger[batch.settle]["state"] = "started"
            if batch.release and self._ledger.get(batch.release, {}).get("state") == "pending":
                entry = self._ledger[batch.release]
                entry["state"] = "refunded"
                for key in entry["keys"]:
                    self._events.get(key, {}).pop(batch.release, None)
            for record in batch.records:
                self._records[(record.kind, record.id)] = (dict(record.doc), record.expires)
            for item in batch.outbox:
                self._outbox[item.id] = item

    def _live(self, kind: str, id: str) -> Doc | None:
        found = self._records.get((kind, id))
        if found is None:
            return None
        doc, expires = found
        if expires is not None and expires <= self.clock():
            return None
        return doc

    async def put_new(self, record: Record) -> bool:
        async with self._lock:
            if self._live(record.kind, record.id) is not None:
                return False
            self._records[(record.kind, record.id)] = (dict(record.doc), record.expires)
            return True

    async def get(self, kind: str, id: str) -> Doc | None:
        doc = self._live(kind, id)
        return dict(doc) if doc is not None else None

    async def delete(self, kind: str, id: str) -> None:
        self._records.pop((kind, id), None)

    async def query(self, kind: str, *, since: float, until: float, limit: int) -> list[Doc]:
        found = [
            dict(doc)
            for (k, id), (doc, _) in self._records.items()
            if k == kind and self._live(k, id) is not None and since <= doc.get("at", 0) < until
        ]
        found.sort(key=lambda d: d.get("at", 0), reverse=True)
        return found[:limit]

    async def claim(self, now: float, lease: float, limit: int) -> list[OutboxItem]:
        async with self._lock:
            due = sorted((i for i in self._outbox.values() if i.due <= now), key=lambda i: i.due)
            taken = due[:limit]
            for item in taken:
                item.due = now + lease
            return [OutboxItem(**vars(i)) for i in taken]

    async def ack(self, item_id: str) -> None:
        self._outbox.pop(item_id, None)

    async def retry_later(self, item: OutboxItem) -> None:
        if item.id in self._outbox:
            self._outbox[item.id] = OutboxItem(**vars(item))

    async def bury(self, item: OutboxItem) -> None:
        self._outbox.pop(item.id, None)
        self._dead[item.id] = OutboxItem(**vars(item))

    async def dead(self, limit: int) -> list[OutboxItem]:
        return [OutboxItem(**vars(i)) for i in list(self._dead.values())[:limit]]

    async def revive(self, item_id: str | None) -> int:
        ids = list(self._dead) if item_id is None else [item_id] if item_id in self._dead else []
        for i in ids:
            item = self._dead.pop(i)
            item.due = 0.0
            self._outbox[i] = item
        return len(ids)

    # -- lifecycle ---------------------------------------------------------------

    async def ping(self) -> None:
        return None

    async def sweep(self, limit: int = 500) -> int:
        now = self.clock()
        removed = 0
        for key in list(self._events):
            horizon = self._horizon.get(key, 0)
            events = self._events[key]
            for rid in [r for r, at in events.items() if at <= now - horizon][: limit - removed]:
                del events[rid]
                removed += 1
            if not events:
                del self._events[key]
        for ref in [r for r, (_, exp) in self._records.items() if exp is not None and exp <= now]:
            if removed >= limit:
                break
            del self._records[ref]
            removed += 1
        return removed
