"""The DynamoDB store's items and their conditional writes; blocking boto3, run in threads.

Why each write is shaped the way it is lives in :mod:`triggergate.stores.dynamodb`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from triggergate.aws.dynamodb_schema import BY_EXPIRY, BY_KIND, PK
from triggergate.quota import Check
from triggergate.stores.base import Doc, OutboxItem, Record

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

Item = dict[str, Any]
LEDGER_GRACE = 86400  # a ledger entry outlives its events by a day, for late reconciliation
_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_CONFLICT = "ConditionalCheckFailedException"
_ABSENT_OR_EXPIRED = "attribute_not_exists(pk) OR (attribute_exists(exp) AND exp <= :now)"
_EXPIRED = "xpk = :x AND xat <= :now"


def valid_table(name: str) -> bool:
    return bool(_TABLE.match(name))


def error_code(exc: BaseException) -> str:
    """A short, non-secret name for a failure (the error code, never its message)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", "error"))
    return type(exc).__name__


def conflicted(exc: BaseException) -> bool:
    return error_code(exc) == _CONFLICT


def n(value: float) -> dict[str, str]:
    return {"N": repr(float(value))}


def s(value: str) -> dict[str, str]:
    return {"S": value}


def num(attr: Mapping[str, Any]) -> float:
    return float(attr["N"])


def record_pk(kind: str, id: str) -> str:
    return f"r#{kind}#{id}"


def outbox_pk(id: str) -> str:
    return f"o#{id}"


def ledger_doc(item: Item) -> Doc:
    doc: Doc = json.loads(item["data"]["S"])
    return {
        **doc,
        "rid": item[PK]["S"][2:],
        "at": num(item["at"]),
        "keys": [k["S"] for k in item["keys"]["L"]],
        "state": item["st"]["S"],
    }


def outbox_entry(item: Item) -> OutboxItem:
    return OutboxItem(
        id=item[PK]["S"][2:],
        target=item["target"]["S"],
        payload=json.loads(item["payload"]["S"]),
        attempts=int(num(item["attempts"])),
        due=num(item["due"]),
        error=item["error"]["S"],
    )


@dataclass
class QuotaState:
    """One quota key as read: its events (rid -> at), version (0: absent) and horizon."""

    events: dict[str, float] = field(default_factory=dict)
    ver: int = 0
    hz: int = 0

    @property
    def times(self) -> list[float]:
        return list(self.events.values())


class Codec:
    """Reads and conditional writes of every item kind, with the configured TTL attribute name."""

    def __init__(self, ttl_attribute: str) -> None:
        self.ttl = ttl_attribute

    def _expiring(self, expires: float) -> Item:
        # The TTL attribute is whole seconds (DynamoDB ignores fractions); xat is exact for sweep.
        return {self.ttl: {"N": str(math.ceil(expires))}, "xpk": s("x"), "xat": n(expires)}

    # -- quota --------------------------------------------------------------------

    def read_quota(self, db: DynamoDBClient, table: str, key: str) -> QuotaState:
        found = db.get_item(TableName=table, Key={PK: s(f"q#{key}")}, ConsistentRead=True)
        item = found.get("Item")
        if not item:
            return QuotaState()
        events = {rid: num(at) for rid, at in item["ev"]["M"].items()}
        return QuotaState(events, int(num(item["ver"])), int(num(item["hz"])))

    def _write_quota(
        self,
        db: DynamoDBClient,
        table: str,
        key: str,
        state: QuotaState,
        events: dict[str, float],
        hz: int,
    ) -> bool:
        """Replace the key's events iff its version is still the one read; False when it moved."""
        pk = s(f"q#{key}")
        guard: dict[str, Any] = (
            {"ConditionExpression": "attribute_not_exists(pk)"}
            if state.ver == 0
            else {
                "ConditionExpression": "ver = :v",
                "ExpressionAttributeValues": {":v": n(state.ver)},
            }
        )
        try:
            if events:
                item = {
                    PK: pk,
                    "ev": {"M": {rid: n(at) for rid, at in events.items()}},
                    "ver": n(state.ver + 1),
                    "hz": n(hz),
                    **self._expiring(max(events.values()) + hz),
                }
                db.put_item(TableName=table, Item=item, **guard)
            elif state.ver:
                db.delete_item(TableName=table, Key={PK: pk}, **guard)
        except db.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def add_event(
        self, db: DynamoDBClient, table: str, check: Check, state: QuotaState, rid: str, now: float
    ) -> bool:
        hz = max(state.hz, check.horizon)
        events = {r: at for r, at in state.events.items() if at > now - hz}
        events[rid] = now
        return self._write_quota(db, table, check.key, state, events, hz)

    def _rewrite(
        self,
        db: DynamoDBClient,
        table: str,
        key: str,
        change: Callable[[dict[str, float]], dict[str, float]],
    ) -> int:
        """Apply ``change`` to a key's events until it sticks; return how many were dropped."""
        for _ in range(50):
            state = self.read_quota(db, table, key)
            events = change(dict(state.events))
            if events == state.events or self._write_quota(db, table, key, state, events, state.hz):
                return len(state.events) - len(events)
        raise RuntimeError("quota key kept changing")

    def remove_event(self, db: DynamoDBClient, table: str, key: str, rid: str) -> None:
        self._rewrite(db, table, key, lambda ev: {r: at for r, at in ev.items() if r != rid})

    def drop_quota(self, db: DynamoDBClient, table: str, key: str) -> int:
        return self._rewrite(db, table, key, lambda ev: {})

    # -- ledger ---------------------------------------------------------------------

    def put_ledger(
        self,
        db: DynamoDBClient,
        table: str,
        rid: str,
        checks: Sequence[Check],
        ledger: Mapping[str, Any],
        now: float,
    ) -> None:
        horizon = max(c.horizon for c in checks)
        item = {
            PK: s(f"l#{rid}"),
            "st": s("pending"),
            "at": n(now),
            "keys": {"L": [s(c.key) for c in checks]},
            "data": s(json.dumps(dict(ledger))),
            "gpk": s("pending"),
            "gsk": n(now),
            **self._expiring(now + horizon + LEDGER_GRACE),
        }
        db.put_item(TableName=table, Item=item)

    def _leave_pending(self, db: DynamoDBClient, table: str, rid: str, state: str) -> Item | None:
        try:
            done = db.update_item(
                TableName=table,
                Key={PK: s(f"l#{rid}")},
                UpdateExpression="SET st = :new REMOVE gpk, gsk",
                ConditionExpression="st = :pending",
                ExpressionAttributeValues={":new": s(state), ":pending": s("pending")},
                ReturnValues="ALL_NEW",
            )
        except db.exceptions.ConditionalCheckFailedException:
            return None
        return dict(done["Attributes"])

    def settle(self, db: DynamoDBClient, table: str, rid: str) -> None:
        self._leave_pending(db, table, rid, "started")

    def refund(self, db: DynamoDBClient, table: str, rid: str) -> list[str]:
        """Mark a pending reservation refunded; the keys whose event must go (after a crash too)."""
        item = self._leave_pending(db, table, rid, "refunded")
        if item is None:
            found = db.get_item(TableName=table, Key={PK: s(f"l#{rid}")}, ConsistentRead=True)
            item = found.get("Item")
            if not item or item["st"]["S"] != "refunded":
                return []
        return [k["S"] for k in item["keys"]["L"]]

    # -- records --------------------------------------------------------------------

    def record_item(self, record: Record) -> Item:
        item: Item = {PK: s(record_pk(record.kind, record.id)), "doc": s(json.dumps(record.doc))}
        at = record.doc.get("at")
        if isinstance(at, int | float):
            item |= {"gpk": s(f"r#{record.kind}"), "gsk": n(at)}
        if record.expires is not None:
            item |= {"exp": n(record.expires), **self._expiring(record.expires)}
        return item

    def put_new(self, db: DynamoDBClient, table: str, record: Record, now: float) -> bool:
        try:
            db.put_item(
                TableName=table,
                Item=self.record_item(record),
                ConditionExpression=_ABSENT_OR_EXPIRED,
                ExpressionAttributeValues={":now": n(now)},
            )
        except db.exceptions.ConditionalCheckFailedException:
            return False
        return True

    @staticmethod
    def _live_doc(item: Item, now: float) -> Doc | None:
        if "exp" in item and num(item["exp"]) <= now:
            return None
        doc: Doc = json.loads(item["doc"]["S"])
        return doc

    def get_record(
        self, db: DynamoDBClient, table: str, kind: str, id: str, now: float
    ) -> Doc | None:
        found = db.get_item(TableName=table, Key={PK: s(record_pk(kind, id))}, ConsistentRead=True)
        item = found.get("Item")
        return self._live_doc(dict(item), now) if item else None

    def query_index(
        self,
        db: DynamoDBClient,
        table: str,
        gpk: str,
        since: float | None,
        until: float | None,
        ascending: bool,
        limit: int,
        keep: Callable[[Item], bool] = lambda item: True,
    ) -> list[Item]:
        """Items of one ``by_kind`` partition, paginated, bounded by ``limit`` kept items."""
        values: dict[str, Any] = {":g": s(gpk)}
        cond = "gpk = :g"
        if since is not None and until is not None:
            cond += " AND gsk BETWEEN :lo AND :hi"
            values |= {":lo": n(since), ":hi": n(until)}
        elif until is not None:
            cond += " AND gsk <= :hi"
            values[":hi"] = n(until)
        args: dict[str, Any] = {
            "TableName": table,
            "IndexName": BY_KIND,
            "KeyConditionExpression": cond,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": ascending,
            "Limit": max(min(limit, 100), 1),
        }
        kept: list[Item] = []
        for _ in range(1000):  # pages; bounded so a huge partition cannot pin a thread forever
            page = db.query(**args)
            kept += [dict(i) for i in page.get("Items", []) if keep(dict(i))]
            if len(kept) >= limit or "LastEvaluatedKey" not in page:
                break
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return kept[:limit]

    def query_records(
        self,
        db: DynamoDBClient,
        table: str,
        kind: str,
        since: float,
        until: float,
        limit: int,
        now: float,
    ) -> list[Doc]:
        def keep(item: Item) -> bool:
            return num(item["gsk"]) < until and self._live_doc(item, now) is not None

        found = self.query_index(db, table, f"r#{kind}", since, until, False, limit, keep)
        return [json.loads(item["doc"]["S"]) for item in found]

    # -- outbox ---------------------------------------------------------------------

    @staticmethod
    def outbox_item(entry: OutboxItem, gpk: str, gsk: float) -> Item:
        return {
            PK: s(outbox_pk(entry.id)),
            "target": s(entry.target),
            "payload": s(json.dumps(entry.payload)),
            "attempts": n(entry.attempts),
            "due": n(entry.due),
            "error": s(entry.error),
            "gpk": s(gpk),
            "gsk": n(gsk),
        }

    def _move(
        self,
        db: DynamoDBClient,
        table: str,
        id: str,
        update: str,
        cond: str,
        values: dict[str, Any],
    ) -> Item | None:
        try:
            done = db.update_item(
                TableName=table,
                Key={PK: s(outbox_pk(id))},
                UpdateExpression=update,
                ConditionExpression=cond,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except db.exceptions.ConditionalCheckFailedException:
            return None
        return dict(done["Attributes"])

    def claim(
        self, db: DynamoDBClient, table: str, now: float, lease: float, limit: int
    ) -> list[OutboxItem]:
        taken: list[OutboxItem] = []
        # The index is eventually consistent; the condition on ``due`` makes a claim exclusive.
        for item in self.query_index(db, table, "outbox", None, now, True, max(limit * 4, 20)):
            if len(taken) >= limit:
                break
            moved = self._move(
                db,
                table,
                item[PK]["S"][2:],
                "SET due = :d, gsk = :d",
                "gpk = :outbox AND due = :old",
                {":d": n(now + lease), ":outbox": s("outbox"), ":old": item["gsk"]},
            )
            if moved is not None:
                taken.append(outbox_entry(moved))
        return taken

    def retry_later(self, db: DynamoDBClient, table: str, entry: OutboxItem) -> None:
        try:
            db.update_item(
                TableName=table,
                Key={PK: s(outbox_pk(entry.id))},
                UpdateExpression="SET attempts = :a, due = :d, gsk = :d, #e = :e",
                ConditionExpression="gpk = :outbox",
                ExpressionAttributeNames={"#e": "error"},
                ExpressionAttributeValues={
                    ":a": n(entry.attempts),
                    ":d": n(entry.due),
                    ":e": s(entry.error),
                    ":outbox": s("outbox"),
                },
            )
        except db.exceptions.ConditionalCheckFailedException:
            return

    def revive(self, db: DynamoDBClient, table: str, id: str | None) -> int:
        ids = (
            [id]
            if id is not None
            else [
                i[PK]["S"][2:]
                for i in self.query_index(db, table, "dead", None, None, True, 10_000)
            ]
        )
        values = {":outbox": s("outbox"), ":dead": s("dead"), ":zero": n(0)}
        return sum(
            self._move(
                db, table, i, "SET gpk = :outbox, gsk = :zero, due = :zero", "gpk = :dead", values
            )
            is not None
            for i in ids
        )

    # -- expiry ---------------------------------------------------------------------

    def sweep(self, db: DynamoDBClient, table: str, now: float, limit: int) -> int:
        """Delete up to ``limit`` items whose expiry passed, found through ``by_expiry``."""
        removed = 0
        args: dict[str, Any] = {
            "TableName": table,
            "IndexName": BY_EXPIRY,
            "KeyConditionExpression": _EXPIRED,
            "ExpressionAttributeValues": {":x": s("x"), ":now": n(now)},
            "Limit": 100,
        }
        while removed < limit:
            page = db.query(**args)
            for item in page.get("Items", [])[: limit - removed]:
                try:
                    # A quota key may have been written since the index was read.
                    db.delete_item(
                        TableName=table,
                        Key={PK: item[PK]},
                        ConditionExpression="xat <= :now",
                        ExpressionAttributeValues={":now": n(now)},
                    )
                    removed += 1
                except db.exceptions.ConditionalCheckFailedException:
                    continue
            if "LastEvaluatedKey" not in page:
                break
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return removed
