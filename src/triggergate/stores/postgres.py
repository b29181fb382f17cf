"""``postgresql://user@host:port/db`` (or ``postgres://``): a store shared by every replica.

A reservation is one transaction: it takes a transaction-scoped advisory lock
per check key (in sorted order, so two reservations never deadlock), then reads
the keys' events in a new statement (READ COMMITTED: it sees every reservation
that held the lock before), decides with :func:`triggergate.quota.decide` and
inserts the events and the ledger entry only when admitted. Time comes from the
database (``clock_timestamp()`` after the locks); ``options={"server_time": False}``
uses the injected clock instead, a hook for tests only.

Every operation answers within ``timeout`` seconds (URL option, default 0.8) or
raises StoreError; ``pool`` (default 10) sizes the connection pool. Other URL
options go to libpq (``sslmode``...). The password comes from
``TRIGGERGATE_POSTGRES_PASSWORD`` (or ``_FILE``), else from the URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from triggergate.errors import ConfigurationError, StoreError
from triggergate.quota import Check, Decision, decide
from triggergate.registry import Context
from triggergate.stores import postgres_sql as sql
from triggergate.stores.base import Batch, Doc, OutboxItem, Record, Store

T = TypeVar("T")
Conn = psycopg.AsyncConnection[dict[str, Any]]
MIGRATIONS = ("postgres_schema.sql",)
MIGRATE_LOCK = 0x7467_6D69_6772_6174  # "tgmigrat": one migrator at a time
OPTIONS = ("pool", "timeout")


def lock_id(key: str) -> int:
    """A stable signed 64-bit advisory lock id for a quota key."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _item(row: Mapping[str, Any], due: float = 0.0) -> OutboxItem:
    return OutboxItem(row["id"], row["target"], row["payload"], row["attempts"], due, row["error"])


class PostgresStore(Store):
    """Quota, records and outbox in PostgreSQL tables (``tg_*``)."""

    schemes = ("postgresql", "postgres")

    def __init__(
        self,
        ctx: Context,
        name: str,
        conninfo: str,
        connect: dict[str, Any],
        size: int,
        timeout: float,
    ) -> None:
        super().__init__(clock=ctx.clock)
        self.name = name
        self._conninfo = conninfo
        self._connect = connect
        self._size = size
        self._timeout = timeout
        self._server_time = bool(ctx.options.get("server_time", True))
        self._pool: AsyncConnectionPool[Conn] | None = None

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> PostgresStore:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        ours = {k: query.pop(k) for k in OPTIONS if k in query}
        # The password travels apart (in `connect`), never inside the conninfo string.
        userinfo, at, hostport = parts.netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}{at}{hostport}"
        conninfo = urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))
        try:
            params = psycopg.conninfo.conninfo_to_dict(conninfo)
            parts.port  # noqa: B018 - raises ValueError when out of range
            size, timeout = int(ours.get("pool", 10)), float(ours.get("timeout", 0.8))
        except (psycopg.Error, ValueError) as exc:
            raise ConfigurationError(f"store: invalid PostgreSQL URL ({exc})", key="store") from exc
        password = ctx.secret("POSTGRES_PASSWORD") or (unquote(parts.password) if parts.password else None)
        user = f"{params['user']}:***@" if params.get("user") else ""
        where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"
        name = f"{parts.scheme}://{user}{where}/{params.get('dbname', '')}"
        connect: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": 2,  # libpq's minimum; the per-operation deadline cuts in first
            "application_name": "triggergate",
            # A stalled client must not hold row or advisory locks for long.
            "options": f"-c statement_timeout={int(timeout * 1000)} "
            "-c idle_in_transaction_session_timeout=5000",
            **({"password": password} if password else {}),
        }
        return cls(ctx, name, conninfo, connect, size, timeout)

    # -- plumbing ----------------------------------------------------------------

    def _now(self) -> float | None:
        return None if self._server_time else self.clock()

    def _fail(self, exc: BaseException) -> StoreError:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        password = self._connect.get("password")
        return StoreError(f"store {self.name}: {text.replace(password, '***') if password else text}")

    async def _run(self, work: Callable[[Conn], Awaitable[T]], deadline: float | None = None) -> T:
        """Run ``work`` on a pooled connection; StoreError after ``deadline`` at the latest.

        On timeout the work is cancelled but not awaited: psycopg's cancellation
        asks a stalled server to cancel and could wait seconds for it.
        """
        if self._pool is None:
            raise StoreError(f"store {self.name}: used before open()")
        pool = self._pool

        async def job() -> T:
            async with pool.connection(timeout=self._timeout) as conn:
                return await work(conn)

        task = asyncio.ensure_future(job())
        try:
            done, _ = await asyncio.wait({task}, timeout=deadline or self._timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise StoreError(f"store {self.name}: no answer within {deadline or self._timeout:g}s")
        try:
            return task.result()
        except (psycopg.Error, OSError) as exc:
            raise self._fail(exc) from exc

    async def _rows(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        async def work(conn: Conn) -> list[dict[str, Any]]:
            cur = await conn.execute(sql, {"now": self._now(), **params})
            return await cur.fetchall() if cur.description else []

        return await self._run(work)

    async def _count(self, sql: str, params: Mapping[str, Any]) -> int:
        async def work(conn: Conn) -> int:
            cur = await conn.execute(sql, {"now": self._now(), **params})
            return cur.rowcount

        return await self._run(work)

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Check the server and credentials with one direct connection, migrate, open the pool."""
        try:
            async with asyncio.timeout(max(self._timeout, 5.0)):
                conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._connect)
                await conn.close()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise self._fail(exc if str(exc) else TimeoutError("no answer")) from exc
        self._pool = AsyncConnectionPool(
            self._conninfo,
            kwargs={**self._connect, "row_factory": dict_row},
            min_size=1,
            max_size=self._size,
            timeout=self._timeout,
            # A connection the server dropped (restart) is replaced before use.
            check=AsyncConnectionPool.check_connection,
            reconnect_timeout=3600,
            open=False,
            name="triggergate",
        )
        try:
            await self._pool.open(wait=True, timeout=max(self._timeout, 5.0))
            await self.migrate()
        except StoreError:
            await self.close()
            raise
        except psycopg.Error as exc:
            await self.close()
            raise self._fail(exc) from exc

    async def migrate(self) -> int:
        """Apply the schema versions this database lacks; return how many were applied."""

        async def work(conn: Conn) -> int:
            async with conn.transaction():
                await conn.execute("SET LOCAL statement_timeout = 0")
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
                await conn.execute(sql.SCHEMA_VERSION)
                cur = await conn.execute("SELECT coalesce(max(version), 0) AS v FROM tg_schema_version")
                current = int((await cur.fetchone() or {"v": 0})["v"])
                files = importlib.resources.files(__package__)
                for version, name in enumerate(MIGRATIONS, 1):
                    if version > current:
                        await conn.execute(files.joinpath(name).read_text("utf-8").encode())
                        await conn.execute("INSERT INTO tg_schema_version (version) VALUES (%s)", (version,))
                return max(len(MIGRATIONS) - current, 0)

        return await self._run(work, deadline=60.0)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close(timeout=2.0)

    async def ping(self) -> None:
        await self._rows("SELECT 1", {})

    async def sweep(self, limit: int = 500) -> int:
        removed = 0
        for table in ("tg_events", "tg_records", "tg_ledger"):
            removed += await self._count(sql.sweep(table), {"n": limit - removed})
            if removed >= limit:
                break
        return removed

    # -- quota -------------------------------------------------------------------------

    @staticmethod
    def _horizons(checks: Sequence[Check]) -> dict[str, int]:
        horizons: dict[str, int] = {}
        for c in checks:
            horizons[c.key] = max(horizons.get(c.key, 0), c.horizon)
        return horizons

    async def _decide(self, conn: Conn, checks: Sequence[Check], lock: bool) -> Decision:
        horizons = self._horizons(checks)
        if lock:
            await conn.execute(sql.LOCK_KEYS, {"ids": sorted({lock_id(k) for k in horizons})})
        # A new statement: its snapshot sees every reservation committed before the lock.
        cur = await conn.execute(
            sql.EVENTS,
            {
                "now": self._now(),
                "keys": list(horizons),
                "horizon": max(horizons.values(), default=0),
            },
        )
        rows = await cur.fetchall()
        events: dict[str, list[float]] = {k: [] for k in horizons}
        for row in rows:
            if row["key"] is not None:
                events[row["key"]].append(row["at"])
        return decide(checks, [events[c.key] for c in checks], rows[0]["now"])

    async def reserve(self, rid: str, checks: Sequence[Check], ledger: Mapping[str, Any]) -> Decision:
        horizons = self._horizons(checks)

        async def work(conn: Conn) -> Decision:
            # Events only appear through admissions, so a denial seen without the
            # locks stands: the deny path takes no lock and writes nothing.
            seen = await self._decide(conn, checks, lock=False)
            if not seen.allowed:
                return seen
            # Pipelined: BEGIN, the locks and the read travel in one round trip.
            async with conn.pipeline(), conn.transaction():
                decision = await self._decide(conn, checks, lock=True)
                if decision.allowed:
                    await conn.execute(
                        sql.ADMIT,
                        {
                            "rid": rid,
                            "at": decision.now,
                            "keys": list(horizons),
                            "h": [float(h) for h in horizons.values()],
                            "doc": Jsonb(dict(ledger)),
                            "keyset": Jsonb([c.key for c in checks]),
                            "top": max(horizons.values()),
                        },
                    )
                return decision

        return await self._run(work)

    async def peek(self, checks: Sequence[Check]) -> Decision:
        return await self._run(lambda conn: self._decide(conn, checks, lock=False))

    async def pending(self, older_than: float) -> list[Doc]:
        rows = await self._rows(sql.PENDING, {"t": older_than})
        return [
            {**r["doc"], "rid": r["rid"], "at": r["at"], "keys": r["keys"], "state": "pending"} for r in rows
        ]

    async def reset(self, key: str) -> int:
        return await self._count(sql.RESET, {"key": key})

    # -- records, outbox and settlement ---------------------------------------------------

    @staticmethod
    def _record(record: Record) -> dict[str, Any]:
        return {
            "kind": record.kind,
            "id": record.id,
            "doc": Jsonb(record.doc),
            "at": float(record.doc.get("at", 0)),
            "expires": record.expires,
        }

    @staticmethod
    def _item_params(item: OutboxItem) -> dict[str, Any]:
        return {**vars(item), "payload": Jsonb(item.payload)}

    async def apply(self, batch: Batch) -> None:
        async def work(conn: Conn) -> None:
            async with conn.transaction():
                if batch.settle:
                    await conn.execute(sql.SETTLE, {"rid": batch.settle})
                if batch.release:
                    await conn.execute(sql.RELEASE, {"rid": batch.release})
                async with conn.cursor() as cur:
                    if batch.records:
                        await cur.executemany(sql.UPSERT_RECORD, [self._record(r) for r in batch.records])
                    if batch.outbox:
                        await cur.executemany(sql.UPSERT_ITEM, [self._item_params(i) for i in batch.outbox])

        await self._run(work)

    async def put_new(self, record: Record) -> bool:
        return bool(await self._rows(sql.PUT_NEW, self._record(record)))

    async def get(self, kind: str, id: str) -> Doc | None:
        rows = await self._rows(sql.GET, {"kind": kind, "id": id})
        return dict(rows[0]["doc"]) if rows else None

    async def delete(self, kind: str, id: str) -> None:
        await self._count(sql.DELETE, {"kind": kind, "id": id})

    async def query(self, kind: str, *, since: float, until: float, limit: int) -> list[Doc]:
        rows = await self._rows(sql.QUERY, {"kind": kind, "since": since, "until": until, "limit": limit})
        return [dict(r["doc"]) for r in rows]

    async def claim(self, now: float, lease: float, limit: int) -> list[OutboxItem]:
        rows = await self._rows(sql.CLAIM, {"at": now, "until": now + lease, "limit": limit})
        return [_item(r, now + lease) for r in rows]

    async def ack(self, item_id: str) -> None:
        await self._count(sql.ACK, {"id": item_id})

    async def retry_later(self, item: OutboxItem) -> None:
        await self._count(sql.RETRY, self._item_params(item))

    async def bury(self, item: OutboxItem) -> None:
        await self._count(sql.BURY, self._item_params(item))

    async def dead(self, limit: int) -> list[OutboxItem]:
        return [_item(r) for r in await self._rows(sql.DEAD, {"limit": limit})]

    async def revive(self, item_id: str | None) -> int:
        return await self._count(sql.REVIVE, {"id": item_id})
