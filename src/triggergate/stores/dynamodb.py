"""``dynamodb://TABLE?region=R&endpoint_url=U&ttl_attribute=ttl&audit_table=T``: one DynamoDB table.

Item design (partition key ``pk`` only; see :mod:`triggergate.aws.dynamodb_schema`):

* ``q#<key>`` one item per quota key: ``ev`` (map rid -> accepted-at), ``ver``
  (a version number), ``hz`` (the key's longest window) and the TTL attribute
  (the second its newest event leaves the window). Every write is a PutItem
  conditioned on the version that was read with a strongly consistent read,
  so two writers can never both extend the same state (optimistic concurrency;
  a loser re-reads, re-decides, and retries a bounded number of times).
* ``l#<rid>`` the reservation ledger: state, keys, the caller's ledger data;
  while pending it sits in the sparse ``by_kind`` index under ``pending``.
* ``r#<kind>#<id>`` records (JSON in ``doc``); those with a numeric ``at`` are
  in ``by_kind`` under ``r#<kind>`` sorted by ``at``, so queries are paginated
  Queries, never scans. Audit records stay in the same table: they carry the
  TTL of their own expiry (the configured audit retention, 400 days by
  default) or none, never a quota's, so they outlive quotas; ``audit_table=``
  moves them to a table of their own (other backups or permissions).
* ``o#<id>`` outbox items, in ``by_kind`` under ``outbox`` (by due time) or
  ``dead`` (by burial time).

Several checks (client limits and the global budget) cannot be reserved in one
transaction on every engine (dynalite has none), so ``reserve`` decides on
consistent reads, then adds the event key by key in the order given, each add
conditional on the version its decision read. If a key changed meanwhile it is
re-read and re-evaluated; a denial there removes the events already added and
returns the denial. Exactness: a key's events only grow through a conditional
write validated against exactly the state it replaces, so no key ever holds
more events in a window than its limits allow, whatever the interleaving;
undo only removes. The price is a possible spurious denial for a request
racing another one that is about to be undone (callers list the client check
first, so such a transient event mostly holds that client's own key).

Every item that stops mattering carries the numeric TTL attribute and sits in
the sparse ``by_expiry`` index; decisions ignore events outside the window, so
nothing relies on TTL deletion having happened, and ``sweep`` deletes expired
items through that index. A crash between adding the events and writing the
ledger leaves a slot used until its window passes: it can only under-admit.
Time always comes from the injected clock (Lambda's clock is good).
"""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from triggergate.aws import dynamodb_schema as schema
from triggergate.aws.clients import AwsUrl, error_code, make_client, parse_url
from triggergate.errors import ConfigurationError, StoreError
from triggergate.quota import Check, Decision, Verdict, decide, evaluate
from triggergate.registry import Context
from triggergate.stores import dynamodb_items as items
from triggergate.stores.base import Batch, Doc, OutboxItem, Record, Store
from triggergate.stores.dynamodb_records import RecordItems

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

T = TypeVar("T")
ATTEMPTS = 25  # every lost race means another writer won, so this bounds contention, not progress
_PARAMS = ("audit_table", "create_table", "timeout", "ttl_attribute")


class DynamoDBStore(Store):
    """Quotas, ledger, records and outbox in one DynamoDB table (plus an optional audit table)."""

    schemes = ("dynamodb",)

    def __init__(self, where: AwsUrl, *, clock: Any, timeout: float = 1.0) -> None:
        super().__init__(clock=clock)
        self.where, self.table, self.timeout = where, where.location, timeout
        self.audit_table = where.query.get("audit_table") or None
        self.create = where.query.get("create_table", "").lower() in {"1", "true", "yes"}
        self.ttl_attribute = where.query.get("ttl_attribute") or schema.TTL_ATTRIBUTE
        self.quota = items.QuotaItems(self.ttl_attribute)
        self.records = RecordItems(self.ttl_attribute)
        self._client: DynamoDBClient | None = None
        self._client_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="dynamodb")

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> DynamoDBStore:
        where = parse_url(url, ctx, "store", _PARAMS)
        audit = where.query.get("audit_table")
        problem = (
            "write dynamodb://TABLE?region=REGION"
            if not items.valid_table(where.location)
            else "audit_table is not a valid table name"
            if audit and not items.valid_table(audit)
            else ""
        )
        try:
            timeout = float(ctx.options.get("timeout", where.query.get("timeout", 1.0)))
        except ValueError:
            problem = problem or "timeout must be a number of seconds"
            timeout = 1.0
        if problem:
            raise ConfigurationError(f"store: {problem}", key="store", value=url)
        return cls(where, clock=ctx.clock, timeout=timeout)

    # -- plumbing --------------------------------------------------------------------

    @property
    def client(self) -> DynamoDBClient:
        with self._client_lock:
            if self._client is None:
                # One retry inside ~1 s: an unreachable store must fail closed quickly.
                self._client = make_client(
                    "dynamodb", self.where, timeout=0.8 * self.timeout, attempts=2, pool=16
                )
            return self._client

    def prepare(self) -> None:
        # Built here, before serving: building it inside a request's store deadline costs
        # ~0.1 s of CPU (boto3's import and the service model), which a starved process
        # (a cold Lambda) cannot fit into the deadline.
        _ = self.client

    async def _run(self, fn: Callable[..., T], *args: Any, budget: float = 1.0) -> T:
        """Run blocking boto3 work in the pool; any failure or a stall becomes StoreError."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, functools.partial(fn, *args))
        try:
            return await asyncio.wait_for(future, self.timeout * budget)
        except TimeoutError as exc:
            raise StoreError("dynamodb: no answer in time") from exc
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"dynamodb: {error_code(exc)}") from exc

    def _table_of(self, kind: str) -> str:
        return self.audit_table if kind == "audit" and self.audit_table else self.table

    # -- quota -----------------------------------------------------------------------

    def _reserve(self, rid: str, checks: Sequence[Check], ledger: Mapping[str, Any]) -> Decision:
        db, quota = self.client, self.quota
        now = self.clock()
        states = [quota.read_quota(db, self.table, c.key) for c in checks]
        decision = decide(checks, [s.times for s in states], now)
        if not decision.allowed:
            return decision
        verdicts: list[Verdict] = list(decision.verdicts)
        added: list[str] = []
        for i, (check, state) in enumerate(zip(checks, states, strict=True)):
            for attempt in range(ATTEMPTS):
                if quota.add_event(db, self.table, check, state, rid, now):
                    added.append(check.key)
                    break
                _pause(attempt)
                state = quota.read_quota(db, self.table, check.key)
                verdicts[i] = evaluate(check.key, state.times, check.limits, now)
                if not verdicts[i].allowed:
                    for key in added:
                        quota.remove_event(db, self.table, key, rid)
                    return Decision(now, tuple(verdicts))
            else:
                for key in added:
                    quota.remove_event(db, self.table, key, rid)
                raise StoreError("dynamodb: too much contention on one quota key")
        quota.put_ledger(db, self.table, rid, checks, ledger, now)
        return Decision(now, tuple(verdicts))

    async def reserve(self, rid: str, checks: Sequence[Check], ledger: Mapping[str, Any]) -> Decision:
        return await self._run(self._reserve, rid, checks, dict(ledger), budget=5.0)

    def _peek(self, checks: Sequence[Check]) -> Decision:
        # Eventually consistent (half the read price): the peek only spares the deny path a
        # write; every admission is decided again by reserve() on consistent reads.
        states = [self.quota.read_quota(self.client, self.table, c.key, consistent=False) for c in checks]
        return decide(checks, [s.times for s in states], self.clock())

    async def peek(self, checks: Sequence[Check]) -> Decision:
        return await self._run(self._peek, checks)

    async def pending(self, older_than: float) -> list[Doc]:
        found = await self._run(
            self.quota.query_index,
            self.client,
            self.table,
            "pending",
            None,
            older_than,
            False,
            10_000,
        )
        return [items.ledger_doc(item) for item in found if items.num(item["gsk"]) < older_than]

    async def reset(self, key: str) -> int:
        return await self._run(self.quota.drop_quota, self.client, self.table, key)

    # -- records, outbox and settlement --------------------------------------------------

    def _apply(self, batch: Batch) -> None:
        db, quota, records = self.client, self.quota, self.records
        if batch.settle:
            quota.settle(db, self.table, batch.settle)
        if batch.release:
            for key in quota.refund(db, self.table, batch.release):
                quota.remove_event(db, self.table, key, batch.release)
        for record in batch.records:
            db.put_item(TableName=self._table_of(record.kind), Item=records.record_item(record))
        for entry in batch.outbox:
            db.put_item(TableName=self.table, Item=records.outbox_item(entry, "outbox", entry.due))

    async def apply(self, batch: Batch) -> None:
        await self._run(self._apply, batch, budget=3.0)

    async def put_new(self, record: Record) -> bool:
        table = self._table_of(record.kind)
        return await self._run(self.records.put_new, self.client, table, record, self.clock())

    async def get(self, kind: str, id: str) -> Doc | None:
        table = self._table_of(kind)
        return await self._run(self.records.get_record, self.client, table, kind, id, self.clock())

    async def delete(self, kind: str, id: str) -> None:
        key = {schema.PK: {"S": items.record_pk(kind, id)}}
        await self._run(functools.partial(self.client.delete_item, TableName=self._table_of(kind), Key=key))

    async def query(self, kind: str, *, since: float, until: float, limit: int) -> list[Doc]:
        table, now = self._table_of(kind), self.clock()
        found = await self._run(
            self.records.query_records, self.client, table, kind, since, until, limit, now, budget=3.0
        )
        return found

    async def claim(self, now: float, lease: float, limit: int) -> list[OutboxItem]:
        return await self._run(self.records.claim, self.client, self.table, now, lease, limit, budget=3.0)

    async def claim_ids(self, ids: Sequence[str], now: float, lease: float) -> list[OutboxItem]:
        """Claim the named outbox items that are due, as :meth:`claim` does, but by key.

        For a DynamoDB Stream's announcement of new items: each claim is a conditional
        write on the item itself, so it sees an item the moment it exists, while the
        index :meth:`claim` queries is eventually consistent and may not list it yet.
        """
        return await self._run(
            self.records.claim_ids, self.client, self.table, list(ids), now, lease, budget=3.0
        )

    async def ack(self, item_id: str) -> None:
        key = {schema.PK: {"S": items.outbox_pk(item_id)}}
        await self._run(functools.partial(self.client.delete_item, TableName=self.table, Key=key))

    async def retry_later(self, item: OutboxItem) -> None:
        await self._run(self.records.retry_later, self.client, self.table, item)

    async def bury(self, item: OutboxItem) -> None:
        entry = self.records.outbox_item(item, "dead", self.clock())
        await self._run(functools.partial(self.client.put_item, TableName=self.table, Item=entry))

    async def dead(self, limit: int) -> list[OutboxItem]:
        found = await self._run(
            self.quota.query_index, self.client, self.table, "dead", None, None, True, limit
        )
        return [items.outbox_entry(item) for item in found]

    async def revive(self, item_id: str | None) -> int:
        return await self._run(self.records.revive, self.client, self.table, item_id, budget=5.0)

    # -- lifecycle -------------------------------------------------------------------

    async def ping(self) -> None:
        # GetItem needs no permission beyond what serving uses (DescribeTable would).
        key = {schema.PK: {"S": "ping"}}
        await self._run(functools.partial(self.client.get_item, TableName=self.table, Key=key))

    async def sweep(self, limit: int = 500) -> int:
        tables = [self.table] + ([self.audit_table] if self.audit_table else [])
        now, removed = self.clock(), 0
        for table in tables:
            removed += await self._run(
                self.records.sweep, self.client, table, now, limit - removed, budget=5.0
            )
        return removed

    async def open(self) -> None:
        if self.create:
            for table in [self.table] + ([self.audit_table] if self.audit_table else []):
                await self._run(schema.create_table, self.client, table, self.ttl_attribute, budget=30.0)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _pause(attempt: int) -> None:
    # Jittered, growing, capped: racing writers spread out instead of colliding again.
    time.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.05)))  # noqa: S311 - jitter, not crypto
