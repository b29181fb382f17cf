"""``sqlite:///path/to/file.db``: the embedded default, safe for several processes on one host.

The connections (inline reads, writes serialised across processes) are in
:mod:`triggergate.stores.sqlite_io`; this module holds the schema and the operations.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from triggergate.errors import ConfigurationError
from triggergate.quota import Check, Decision, decide
from triggergate.registry import Context
from triggergate.stores.base import Batch, Doc, OutboxItem, Record, Store
from triggergate.stores.sqlite_io import Connections

T = TypeVar("T")

# Quota events are the one table that grows with the number of clients, so each
# row is as small as it can be: the key and the event time in whole milliseconds
# (rounded up, so a slot never frees early), no request id and no index besides
# the primary key. The ledger names each pending event by (key, at); the sweep
# walks the table in key order and drops rows older than the longest window
# ever used (``meta.horizon``).
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS quota (
    key TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (key, at)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger (
    rid TEXT PRIMARY KEY, at REAL NOT NULL, keys TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ledger_at ON ledger (at);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, id TEXT NOT NULL, at REAL, expires REAL, doc TEXT NOT NULL,
    PRIMARY KEY (kind, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_at ON records (kind, at);
CREATE INDEX IF NOT EXISTS records_expires ON records (expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY, target TEXT NOT NULL, payload TEXT NOT NULL,
    attempts INTEGER NOT NULL, due REAL NOT NULL, error TEXT NOT NULL, dead INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (dead, due);
"""


def _ms(at: float) -> int:
    """Epoch seconds -> whole milliseconds, rounded up (a slot never frees early)."""
    return math.ceil(at * 1000)


def _item(row: Sequence[Any]) -> OutboxItem:
    return OutboxItem(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])


class SQLiteStore(Store):
    """One SQLite file in WAL mode, shared by the processes of one host."""

    schemes = ("sqlite",)
    inline_reads = True

    def __init__(self, path: Path, ctx: Context, synchronous: str = "NORMAL") -> None:
        super().__init__(ctx.clock)
        self.path = path
        self._io = Connections(path, synchronous, float(ctx.options.get("write_timeout", 0.7)))
        self._horizon = 0  # the longest window this process has recorded in meta
        self._sweep_from: tuple[str, int] = ("", -1)

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> SQLiteStore:
        parts = urlsplit(url)
        if parts.netloc or not parts.path:
            raise ConfigurationError(
                f"store: {url!r} is not a SQLite URL; write sqlite:///relative/file.db or "
                "sqlite:////absolute/file.db",
                key="store",
                value=url,
            )
        query = parse_qs(parts.query)
        sync = query.get("synchronous", ["normal"])[0].upper()
        if sync not in {"NORMAL", "FULL"}:
            raise ConfigurationError(
                f"store: synchronous={sync.lower()!r} is not allowed; use normal or full",
                key="store",
                value=url,
            )
        # sqlite:///x.db -> "x.db" (relative), sqlite:////abs/x.db -> "/abs/x.db"
        return cls(Path(parts.path[1:]), ctx, sync)

    @staticmethod
    def _prepare(writer: sqlite3.Connection) -> None:
        if writer.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            # A file from before version 1 kept events in another layout.
            writer.executescript("DROP TABLE IF EXISTS events; DROP TABLE IF EXISTS ledger;")
        writer.executescript(SCHEMA)
        writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    async def open(self) -> None:
        self._io.open(self._prepare)

    async def close(self) -> None:
        self._io.close()

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._io.read(fn)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._io.write(fn)

    @staticmethod
    def _events(conn: sqlite3.Connection, checks: Sequence[Check], now: float) -> list[list[float]]:
        return [
            [
                row[0] / 1000
                for row in conn.execute(
                    # floor: never leave out an event that decide() still counts
                    "SELECT at FROM quota WHERE key = ? AND at > ?",
                    (c.key, math.floor((now - c.horizon) * 1000)),
                )
            ]
            for c in checks
        ]

    @staticmethod
    def _place(conn: sqlite3.Connection, key: str, at: int) -> int:
        """Insert one event at ``at`` ms, or just after the key's last one if taken."""
        if conn.execute("INSERT OR IGNORE INTO quota (key, at) VALUES (?, ?)", (key, at)).rowcount:
            return at
        last = conn.execute("SELECT max(at) FROM quota WHERE key = ?", (key,)).fetchone()[0]
        at = max(at, int(last)) + 1
        conn.execute("INSERT INTO quota (key, at) VALUES (?, ?)", (key, at))
        return at

    # -- quota -----------------------------------------------------------------------

    async def reserve(self, rid: str, checks: Sequence[Check], ledger: Mapping[str, Any]) -> Decision:
        def tx(conn: sqlite3.Connection) -> Decision:
            now = self.clock()
            decision = decide(checks, self._events(conn, checks, now), now)
            if decision.allowed:
                placed = [(c.key, self._place(conn, c.key, _ms(now))) for c in checks]
                horizon = max((c.horizon for c in checks), default=0)
                if horizon > self._horizon:
                    conn.execute(
                        "INSERT INTO meta (name, value) VALUES ('horizon', ?) "
                        "ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                        (horizon,),
                    )
                    self._horizon = horizon
                conn.execute(
                    "INSERT INTO ledger (rid, at, keys, doc) VALUES (?, ?, ?, ?)",
                    (rid, now, json.dumps(placed), json.dumps(dict(ledger))),
                )
            return decision

        return await self._write(tx)

    async def peek(self, checks: Sequence[Check]) -> Decision:
        now = self.clock()
        return self._read(lambda conn: decide(checks, self._events(conn, checks, now), now))

    async def pending(self, older_than: float) -> list[Doc]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT rid, at, keys, doc FROM ledger WHERE at < ? ORDER BY at", (older_than,)
            ).fetchall()
        )
        return [
            {**json.loads(doc), "rid": rid, "at": at, "keys": [key for key, _ in json.loads(keys)]}
            for rid, at, keys, doc in rows
        ]

    async def reset(self, key: str) -> int:
        return await self._write(
            lambda conn: conn.execute("DELETE FROM quota WHERE key = ?", (key,)).rowcount
        )

    # -- records and outbox -------------------------------------------------------------

    async def apply(self, batch: Batch) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            if batch.settle:
                conn.execute("DELETE FROM ledger WHERE rid = ?", (batch.settle,))
            if batch.release:
                row = conn.execute(
                    "DELETE FROM ledger WHERE rid = ? RETURNING keys", (batch.release,)
                ).fetchone()
                if row is not None:
                    conn.executemany("DELETE FROM quota WHERE key = ? AND at = ?", json.loads(row[0]))
            conn.executemany(
                "INSERT OR REPLACE INTO records (kind, id, at, expires, doc) VALUES (?, ?, ?, ?, ?)",
                [(r.kind, r.id, r.doc.get("at"), r.expires, json.dumps(r.doc)) for r in batch.records],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?, ?, ?, 0)",
                [(i.id, i.target, json.dumps(i.payload), i.attempts, i.due, i.error) for i in batch.outbox],
            )

        await self._write(tx)

    async def put_new(self, record: Record) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "DELETE FROM records WHERE kind = ? AND id = ? AND expires <= ?",
                (record.kind, record.id, self.clock()),
            )
            cursor = conn.execute(
                "INSERT OR IGNORE INTO records (kind, id, at, expires, doc) VALUES (?, ?, ?, ?, ?)",
                (
                    record.kind,
                    record.id,
                    record.doc.get("at"),
                    record.expires,
                    json.dumps(record.doc),
                ),
            )
            return cursor.rowcount == 1

        return await self._write(tx)

    async def get(self, kind: str, id: str) -> Doc | None:
        row = self._read(
            lambda conn: conn.execute(
                "SELECT doc FROM records WHERE kind = ? AND id = ? AND (expires IS NULL OR expires > ?)",
                (kind, id, self.clock()),
            ).fetchone()
        )
        return json.loads(row[0]) if row else None

    async def delete(self, kind: str, id: str) -> None:
        await self._write(
            lambda conn: conn.execute("DELETE FROM records WHERE kind = ? AND id = ?", (kind, id))
        )

    async def query(self, kind: str, *, since: float, until: float, limit: int) -> list[Doc]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT doc FROM records WHERE kind = ? AND at >= ? AND at < ? "
                "AND (expires IS NULL OR expires > ?) ORDER BY at DESC LIMIT ?",
                (kind, since, until, self.clock(), limit),
            ).fetchall()
        )
        return [json.loads(r[0]) for r in rows]

    async def claim(self, now: float, lease: float, limit: int) -> list[OutboxItem]:
        def tx(conn: sqlite3.Connection) -> list[OutboxItem]:
            rows = conn.execute(
                "SELECT id, target, payload, attempts, due, error FROM outbox "
                "WHERE dead = 0 AND due <= ? ORDER BY due LIMIT ?",
                (now, limit),
            ).fetchall()
            conn.executemany("UPDATE outbox SET due = ? WHERE id = ?", [(now + lease, r[0]) for r in rows])
            return [_item(r) for r in rows]

        return await self._write(tx)

    async def ack(self, item_id: str) -> None:
        await self._write(lambda conn: conn.execute("DELETE FROM outbox WHERE id = ?", (item_id,)))

    async def retry_later(self, item: OutboxItem) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE outbox SET attempts = ?, due = ?, error = ? WHERE id = ? AND dead = 0",
                (item.attempts, item.due, item.error, item.id),
            )
        )

    async def bury(self, item: OutboxItem) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?, ?, ?, 1)",
                (
                    item.id,
                    item.target,
                    json.dumps(item.payload),
                    item.attempts,
                    self.clock(),
                    item.error,
                ),
            )
        )

    async def dead(self, limit: int) -> list[OutboxItem]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT id, target, payload, attempts, due, error FROM outbox "
                "WHERE dead = 1 ORDER BY due LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [_item(r) for r in rows]

    async def revive(self, item_id: str | None) -> int:
        sql = "UPDATE outbox SET dead = 0, due = 0 WHERE dead = 1 AND (? IS NULL OR id = ?)"
        args = (item_id, item_id)
        return await self._write(lambda conn: conn.execute(sql, args).rowcount)

    # -- lifecycle -------------------------------------------------------------------------

    async def ping(self) -> None:
        self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def sweep(self, limit: int = 500) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            now = self.clock()
            found = conn.execute("SELECT value FROM meta WHERE name = 'horizon'").fetchone()
            cutoff = _ms(now - (found[0] if found else 0))
            # No index on time: walk the next rows in key order from where the last
            # sweep stopped, drop the old ones, and start over at the end.
            rows = conn.execute(
                "SELECT key, at FROM quota WHERE (key, at) > (?, ?) ORDER BY key, at LIMIT ?",
                (*self._sweep_from, limit * 4),
            ).fetchall()
            self._sweep_from = rows[-1] if len(rows) == limit * 4 else ("", -1)
            old = [row for row in rows if row[1] <= cutoff][:limit]
            conn.executemany("DELETE FROM quota WHERE key = ? AND at = ?", old)
            events = len(old)
            records = conn.execute(
                "DELETE FROM records WHERE (kind, id) IN (SELECT kind, id FROM records "
                "WHERE expires IS NOT NULL AND expires <= ? LIMIT ?)",
                (now, limit),
            ).rowcount
            return int(events + records)

        return await self._write(tx)
